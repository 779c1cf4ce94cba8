"""Per-call time of softmax and logsumexp on small float32 inputs, against NumPy's stable
formula, SciPy and PyTorch (when installed), one thread, in one process.

Run: ``PYTHONPATH=src python3 benchmarks/small_calls.py`` (about a minute; the first
run compiles the kernels).  Prints a Markdown table: the best of 2000 calls per
implementation, taken in three alternating rounds; ``peer / ours`` above 1 means we are
faster.  ``softmaxkit bench`` covers the large cases.
"""

from __future__ import annotations

import importlib.util
import time

import numba
import numpy as np
import scipy.special as sp

import softmaxkit as sk
from softmaxkit._core import coldstart

numba.set_num_threads(1)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
if HAVE_TORCH:
    import torch

    torch.set_num_threads(1)


def numpy_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_logsumexp(x):
    m = x.max(-1, keepdims=True)
    return np.log(np.exp(x - m).sum(-1)) + m[..., 0]


def impls(op, x):
    out = np.empty_like(x) if op == "softmax" else np.empty(x.shape[:-1], x.dtype)
    f = getattr(sk, op)
    d = {"softmaxkit": lambda: f(x), "softmaxkit out=": lambda: f(x, out=out)}
    d["numpy"] = (lambda: numpy_softmax(x)) if op == "softmax" else (lambda: numpy_logsumexp(x))
    g = getattr(sp, op)
    d["scipy"] = lambda: g(x, axis=-1)
    if HAVE_TORCH:
        t = torch.from_numpy(x)
        tf = torch.softmax if op == "softmax" else torch.logsumexp
        d["torch"] = lambda: tf(t, -1)
    return d


def best(fn, n=2000):
    for _ in range(50):
        fn()
    clock = time.perf_counter
    ts = []
    for _ in range(n):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return min(ts)


def main():
    rng = np.random.default_rng(0)
    rows = []
    with coldstart.foreground():  # compile here: time the kernels, not the fallback
        for shape in [(10,), (1, 128), (64, 128), (32, 1000)]:
            x = (rng.standard_normal(shape) * 4).astype(np.float32)
            for op in ("softmax", "logsumexp"):
                d = impls(op, x)
                t = {k: min(best(fn) for _ in range(1)) for k, fn in d.items()}
                for _ in range(2):
                    for k, fn in d.items():
                        t[k] = min(t[k], best(fn))
                rows.append((op, shape, t))
    names = list(rows[0][2])
    print("| op | shape | " + " | ".join(f"{k} (us)" for k in names) + " | peer / ours |")
    print("|---|---|" + "---:|" * (len(names) + 1))
    for op, shape, t in rows:
        ours = t["softmaxkit"]
        ratios = ", ".join(
            f"{k} {t[k] / ours:.1f}" for k in names if not k.startswith("softmaxkit")
        )
        cells = " | ".join(f"{t[k] * 1e6:.1f}" for k in names)
        print(f"| {op} | {list(shape)} | {cells} | {ratios} |")


if __name__ == "__main__":
    main()
