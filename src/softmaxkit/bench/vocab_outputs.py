"""Benchmark cases of the per-token vocabulary outputs (issue 21; family "vocab_outputs").

* ``linear_cross_entropy`` returning loss + lse + entropy + target log-prob + top-5
  (one read of each logits block for all of them) against the loss alone, at
  N = 2048, d = 1024, V = 32000 float32 (quick: N = 512, d = 256, V = 16000).
  Target: at most 1.2x the loss alone's time, the same peak memory.  A materialised
  PyTorch computation of the same outputs is the peer (when torch is installed).

Peak extra memory (resident set size growth during a call, sampled every 2 ms) is
recorded in ``case.extra["peak_extra_MiB"]`` as in the losses family.
"""

from __future__ import annotations

import numpy as np

from .losses import _with_peak
from .timing import Case

__all__ = ["cases"]


def _outputs_case(N: int, d: int, V: int) -> Case:
    import softmaxkit as sk

    rng = np.random.default_rng(0)
    h = rng.normal(size=(N, d)).astype(np.float32)
    W = (rng.normal(size=(V, d)) / np.sqrt(d)).astype(np.float32)
    t = rng.integers(0, V, N)
    flags = dict(return_lse=True, return_entropy=True, return_logprob=True, topk=5)
    impls = {
        "softmaxkit loss": lambda: sk.linear_cross_entropy(h, W, t),
        "softmaxkit loss+lse+entropy+logprob+top5": lambda: sk.linear_cross_entropy(
            h, W, t, **flags
        ),
    }
    try:
        import torch

        ht, Wt, tt = torch.from_numpy(h), torch.from_numpy(W), torch.from_numpy(t)

        def torch_all():
            with torch.no_grad():
                z = ht @ Wt.T
                lse = torch.logsumexp(z, -1)
                lp = torch.log_softmax(z, -1)
                loss = -lp.gather(-1, tt[:, None]).mean()
                ent = -(lp.exp() * lp).sum(-1)
                top = torch.topk(lp, 5, -1)
                return loss, lse, ent, top

        impls["torch materialised (all outputs)"] = torch_all
    except ImportError:  # pragma: no cover - torch is optional
        pass
    extra: dict = {}
    wrapped = {k: _with_peak(k, f, extra) for k, f in impls.items()}

    ref = {}

    def check(res):
        # against float64 materialised logits on the first 64 rows (once, untimed)
        from ..reference._vocab import vocab_outputs

        if not ref:
            z = h[:64].astype(np.float64) @ W.T.astype(np.float64)
            ref.update(vocab_outputs(z, t[:64], topk=5))
        if isinstance(res, tuple) and hasattr(res, "entropy") and res.entropy is not None:
            return float(np.max(np.abs(res.entropy[:64] - ref["entropy"])))
        return None

    return Case(
        family="vocab_outputs",
        op="linear_cross_entropy loss + lse + entropy + logprob + top-5",
        label=f"N={N} d={d} V={V} float32",
        impls=wrapped,
        baseline="softmaxkit loss",
        check=check,
        nbytes=h.nbytes + W.nbytes,
        extra=extra,
    )


def cases(quick: bool) -> list[Case]:
    """The vocab-outputs cases; ``quick`` uses a smaller shape (seconds)."""
    if quick:
        return [_outputs_case(512, 256, 16000)]
    return [_outputs_case(2048, 1024, 32000)]
