"""Benchmark cases of the losses family (see ``softmaxkit.bench.timing``).

* ``cross_entropy`` loss + gradient at [8192, 32000] float32: softmaxkit (fused
  one-pass kernel, with and without ``out=logits``) vs PyTorch
  ``F.cross_entropy`` forward + backward and the stable NumPy formula.
  JAX (``jit(value_and_grad)`` of optax's mean loss) and ONNX Runtime's
  ``SoftmaxCrossEntropyLoss`` (loss only: its gradient op is not in inference builds)
  join when installed (``_bench_peers``).
* ``linear_cross_entropy`` loss + gradients at N = 4096, d = 1024, V = 32000 and
  128000 float32: softmaxkit (never materialises the logits) vs the materialised
  NumPy computation, ``torch.nn.functional.linear_cross_entropy`` (reference path,
  materialised) and its chunked path (``LinearCrossEntropyOptions()``).

Every implementation is wrapped so that the case records its peak extra memory
(resident set size sampled every 2 ms by a thread, minus the size just before
the call) in ``case.extra["peak_extra_MiB"]``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .timing import Case

__all__ = ["cases"]


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _loss_grad_error(loss, grad, r_loss, r_grad, rows) -> float:
    """Max of the loss's relative error and the gradient's (its first ``rows`` rows),
    relative to the largest reference gradient entry."""
    e1 = abs(float(loss) - r_loss) / abs(r_loss)
    e2 = float(np.max(np.abs(np.asarray(grad)[:rows] - r_grad)) / np.max(np.abs(r_grad)))
    return max(e1, e2)


def _with_peak(name: str, fn: Callable[[], Any], extra: dict) -> Callable[[], Any]:
    """Wrap ``fn`` so each call records its peak RSS growth (MiB) in ``extra``."""
    try:
        import psutil  # noqa: F401
    except ImportError:  # pragma: no cover - psutil is in the bench extra
        return fn

    def run():
        base = _rss()
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.002)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            res = fn()
        finally:
            stop.set()
            th.join()
        peak[0] = max(peak[0], _rss())
        mib = (peak[0] - base) / 2**20
        store = extra.setdefault("peak_extra_MiB", {})
        store[name] = max(store.get(name, 0.0), round(mib, 1))
        return res

    return run


def _numpy_ce(x, t):
    """The stable textbook formula (the notebook's version 3 and gradient 2)."""
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), t]))
    e /= s
    e[np.arange(n), t] -= 1
    e /= n
    return loss, e


def _ce_case(N: int, C: int) -> Case:
    from ..losses import cross_entropy
    from ..reference import cross_entropy as ref_ce

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C), dtype=np.float32) * 2
    t = rng.integers(0, C, N)
    scratch = np.empty_like(x)
    extra: dict[str, Any] = {}
    rows = min(N, 64)
    refs: dict[str, Any] = {}

    def reference():
        # float64 reference, computed on first use in 128-row blocks (the reference
        # twin makes several float64 temporaries of its input's size)
        if not refs:
            tot = 0.0
            for r0 in range(0, N, 128):
                xb = x[r0 : r0 + 128].astype(np.float64)
                tot += float(np.sum(ref_ce(xb, t[r0 : r0 + 128], reduction="none")))
            refs["loss"] = tot / N
            xs = x[:rows].astype(np.float64)
            refs["grad"] = ref_ce(xs, t[:rows], reduction="sum", return_grad=True)[1] / N
        return refs["loss"], refs["grad"]

    def ours():
        return cross_entropy(x, t, return_grad=True)

    np.copyto(scratch, x)  # touch the pages now, outside any timing
    state = {"first": True}

    def ours_out():
        # out=logits overwrites the logits.  The first call (the one checked) works
        # on a copy of x; later calls reuse the previous gradient as logits, which
        # is as costly (finite rows, same shape) and keeps a 1 GB copy out of the
        # timing.
        if state["first"]:
            np.copyto(scratch, x)
            state["first"] = False
        return cross_entropy(scratch, t, return_grad=True, out=scratch)

    impls: dict[str, Callable[[], Any]] = {
        "softmaxkit": ours,
        "softmaxkit out=logits": ours_out,
        "numpy": lambda: _numpy_ce(x, t),
    }
    try:
        import torch
        import torch.nn.functional as F

        xt_base = torch.from_numpy(x)
        tt = torch.from_numpy(t)

        def torch_ce():
            xt = xt_base.detach().requires_grad_()
            loss = F.cross_entropy(xt, tt)
            loss.backward()
            return float(loss.detach()), xt.grad.numpy()

        impls["torch"] = torch_ce
    except ImportError:  # pragma: no cover
        pass
    from . import peers as _bench_peers

    compile_s: dict[str, float] = {}
    notes: dict[str, str] = {}
    impls.update(_bench_peers.jax_cross_entropy(x, t, compile_s))
    impls.update(_bench_peers.ort_cross_entropy(x, t, notes))
    extra["compile_s"] = compile_s
    extra["note"] = notes

    def check(res) -> float:
        loss, grad = res
        if grad is None:  # a loss-only peer: the loss's relative error
            r_loss = reference()[0]
            return abs(float(loss) - r_loss) / abs(r_loss)
        return _loss_grad_error(loss, np.asarray(grad), *reference(), rows)

    wrapped = {k: _with_peak(k, f, extra) for k, f in impls.items()}
    return Case(
        family="losses",
        op="cross_entropy loss+grad",
        label=f"[{N}, {C}] float32",
        impls=wrapped,
        baseline="softmaxkit",
        check=check,
        nbytes=2 * x.nbytes,
        extra=extra,
    )


def _numpy_linear_ce(h, W, t):
    """Materialised: logits = h W^T, stable softmax gradient in place, two matmuls."""
    n = h.shape[0]
    z = h @ W.T
    z -= z.max(axis=1, keepdims=True)
    zt = z[np.arange(n), t].copy()
    np.exp(z, out=z)
    s = z.sum(axis=1)
    loss = float(np.mean(np.log(s) - zt))
    z /= s[:, None]
    z[np.arange(n), t] -= 1
    z *= 1.0 / n
    return loss, (z @ W, z.T @ h, None)


def _linear_case(N: int, d: int, V: int) -> Case:
    from ..losses import linear_cross_entropy
    from ..reference import cross_entropy as ref_ce

    rng = np.random.default_rng(1)
    h = rng.standard_normal((N, d), dtype=np.float32)
    W = rng.standard_normal((V, d), dtype=np.float32) * np.float32(d**-0.5)
    t = rng.integers(0, V, N)
    extra: dict[str, Any] = {"logits_MiB": round(N * V * 4 / 2**20, 1)}
    rows = min(N, 32)
    refs: dict[str, Any] = {}

    def reference():
        # float64 reference loss on first use, in 32-row blocks of the logits
        if not refs:
            W64 = W.astype(np.float64)
            tot = 0.0
            for r0 in range(0, N, 32):
                z = h[r0 : r0 + 32].astype(np.float64) @ W64.T
                tot += float(np.sum(ref_ce(z, t[r0 : r0 + 32], reduction="none")))
            refs["loss"] = tot / N
            z = h[:rows].astype(np.float64) @ W64.T
            g = ref_ce(z, t[:rows], reduction="sum", return_grad=True)[1]
            refs["dh"] = (g / N) @ W64
        return refs["loss"], refs["dh"]

    impls: dict[str, Callable[[], Any]] = {
        "softmaxkit": lambda: linear_cross_entropy(h, W, t, return_grad=True),
        "numpy materialised": lambda: _numpy_linear_ce(h, W, t),
    }
    try:
        import torch
        import torch.nn.functional as F

        ht0, Wt0, tt = torch.from_numpy(h), torch.from_numpy(W), torch.from_numpy(t)

        def make(options):
            def run():
                ht = ht0.detach().requires_grad_()
                Wt = Wt0.detach().requires_grad_()
                if hasattr(F, "linear_cross_entropy"):
                    kw = {} if options is None else {"options": options}
                    loss = F.linear_cross_entropy(ht, Wt, tt, **kw)
                else:  # pragma: no cover - older torch
                    loss = F.cross_entropy(ht @ Wt.T, tt)
                loss.backward()
                return float(loss.detach()), (ht.grad.numpy(), Wt.grad.numpy(), None)

            return run

        impls["torch"] = make(None)
        if hasattr(torch.nn, "LinearCrossEntropyOptions"):
            impls["torch chunked"] = make(torch.nn.LinearCrossEntropyOptions())
    except ImportError:  # pragma: no cover
        pass

    def check(res) -> float:
        loss, (dh, _dW, _db) = res
        return _loss_grad_error(loss, dh, *reference(), rows)

    wrapped = {k: _with_peak(k, f, extra) for k, f in impls.items()}
    return Case(
        family="losses",
        op="linear_cross_entropy loss+grads",
        label=f"N={N} d={d} V={V} float32",
        impls=wrapped,
        baseline="numpy materialised",
        check=check,
        nbytes=(h.nbytes + W.nbytes) * 2,
        extra=extra,
    )


def cases(quick: bool) -> list[Case]:
    """The losses benchmark cases; ``quick`` uses smaller shapes (seconds, not minutes)."""
    if quick:
        # the whole `softmaxkit bench --quick` in under a minute: the linear case at
        # N=1024 d=256 V=32000 alone took 31 s of the 68 (0.5-2 s per call per peer)
        return [_ce_case(1024, 32000), _linear_case(512, 128, 16000)]
    return [
        _ce_case(8192, 32000),
        _linear_case(4096, 1024, 32000),
        _linear_case(4096, 1024, 128000),
    ]
