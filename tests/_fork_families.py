"""Every kernel family on a small input (tests/test_fork.py runs it in pool children)."""

import numpy as np


def call_every_family(seed):
    import softmaxkit as sk
    from softmaxkit import quantized

    rng = np.random.default_rng(seed)
    # big enough that the row kernels take more than one thread where there are two
    x = rng.standard_normal((512, 1000))
    t = rng.integers(0, 1000, 512)
    h = rng.standard_normal((64, 16))
    W = rng.standard_normal((300, 16))
    xq = rng.integers(-128, 128, (512, 300), dtype=np.int8)
    out = [
        float(sk.softmax(x).sum()),
        float(sk.logsumexp(x).sum()),
        float(sk.cross_entropy(x, t, return_grad=True)[1].sum()),
        float(sk.linear_cross_entropy(h, W, t[:64] % 300)),
        float(sk.topk_softmax(x, 3)[0].sum()),
        float(sk.softmax_vjp(sk.softmax(x), x).sum()),
        int(quantized.softmax(xq, 0.1).astype(np.int64).sum()),
        int(quantized.softmax(xq, 0.1, kernel="optimized").astype(np.int64).sum()),
        float(sk.multiclass_hinge_loss(x, t)),
    ]
    return out
