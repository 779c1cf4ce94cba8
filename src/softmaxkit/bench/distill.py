"""Benchmark cases of the distillation family (see ``softmaxkit.bench.timing``).

* ``kl_divergence`` forward + gradient w.r.t. the student at [8192, 32000] float32
  student and teacher logits: softmaxkit (fused row kernel) vs PyTorch
  (``log_softmax`` of both, ``F.kl_div(log_target=True, reduction="batchmean")``,
  ``backward``) and the stable NumPy formula.
* ``linear_kl_divergence`` loss + student gradients at N = 2048, d = 1024,
  V = 32000 float32 vs the materialised NumPy / PyTorch computation.

Peak extra memory of each implementation is recorded as in ``_bench_losses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .losses import _loss_grad_error, _with_peak
from .timing import Case

__all__ = ["cases"]


def _numpy_kl(s, t):
    """Materialised stable formula: log_softmax of both, KL, p_s - p_t."""
    n = s.shape[0]
    ls = s - s.max(axis=1, keepdims=True)
    ls -= np.log(np.exp(ls).sum(axis=1, keepdims=True))
    lt = t - t.max(axis=1, keepdims=True)
    lt -= np.log(np.exp(lt).sum(axis=1, keepdims=True))
    pt = np.exp(lt)
    loss = float(np.sum(pt * (lt - ls)) / n)
    g = (np.exp(ls) - pt) / n
    return loss, g


def _kl_case(N: int, C: int) -> Case:
    from ..distill import kl_divergence
    from ..reference import kl_divergence as ref_kl

    rng = np.random.default_rng(0)
    s = rng.standard_normal((N, C), dtype=np.float32) * 2
    t = rng.standard_normal((N, C), dtype=np.float32) * 2
    extra: dict[str, Any] = {}
    rows = min(N, 64)
    refs: dict[str, Any] = {}

    def reference():
        if not refs:
            tot = 0.0
            for r0 in range(0, N, 256):
                sl = slice(r0, r0 + 256)
                tot += float(np.sum(ref_kl(s[sl], t[sl], reduction="none")))
            refs["loss"] = tot / N
            refs["grad"] = ref_kl(s[:rows], t[:rows], reduction="sum", return_grad=True)[1] / N
        return refs["loss"], refs["grad"]

    impls: dict[str, Callable[[], Any]] = {
        "softmaxkit": lambda: kl_divergence(s, t, return_grad=True),
        "numpy": lambda: _numpy_kl(s, t),
    }
    try:
        import torch
        import torch.nn.functional as F

        s_base = torch.from_numpy(s)
        t_base = torch.from_numpy(t)

        def torch_kl():
            xs = s_base.detach().requires_grad_()
            loss = F.kl_div(
                F.log_softmax(xs, dim=-1),
                F.log_softmax(t_base, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            loss.backward()
            return float(loss.detach()), xs.grad.numpy()

        impls["torch"] = torch_kl
    except ImportError:  # pragma: no cover
        pass

    def check(res) -> float:
        loss, grad = res
        return _loss_grad_error(loss, grad, *reference(), rows)

    return Case(
        family="distill",
        op="kl_divergence loss+grad",
        label=f"[{N}, {C}] float32",
        impls={k: _with_peak(k, f, extra) for k, f in impls.items()},
        baseline="softmaxkit",
        check=check,
        nbytes=3 * s.nbytes,
        extra=extra,
    )


def _linear_case(N: int, d: int, V: int) -> Case:
    from ..distill import linear_kl_divergence
    from ..reference import kl_divergence as ref_kl

    rng = np.random.default_rng(1)
    hs = rng.standard_normal((N, d), dtype=np.float32)
    Ws = rng.standard_normal((V, d), dtype=np.float32) * np.float32(d**-0.5)
    ht = rng.standard_normal((N, d), dtype=np.float32)
    Wt = rng.standard_normal((V, d), dtype=np.float32) * np.float32(d**-0.5)
    extra: dict[str, Any] = {"logits_MiB": round(N * V * 4 / 2**20, 1)}
    rows = min(N, 32)
    refs: dict[str, Any] = {}

    def reference():
        if not refs:
            tot = 0.0
            W64, U64 = Ws.astype(np.float64), Wt.astype(np.float64)
            for r0 in range(0, N, 128):
                zs = hs[r0 : r0 + 128].astype(np.float64) @ W64.T
                zt = ht[r0 : r0 + 128].astype(np.float64) @ U64.T
                tot += float(np.sum(ref_kl(zs, zt, reduction="none")))
            refs["loss"] = tot / N
            # d_h[i] = G[i] W_s is row-local: the first rows' logits suffice
            zs = hs[:rows].astype(np.float64) @ W64.T
            zt = ht[:rows].astype(np.float64) @ U64.T
            g = ref_kl(zs, zt, reduction="sum", return_grad=True)[1] / N
            refs["grad"] = g @ W64
        return refs["loss"], refs["grad"]

    def numpy_mat():
        loss, g = _numpy_kl(hs @ Ws.T, ht @ Wt.T)
        return loss, (g @ Ws, g.T @ hs)

    impls: dict[str, Callable[[], Any]] = {
        "softmaxkit": lambda: linear_kl_divergence(hs, Ws, ht, Wt, return_grad=True),
        "numpy materialised": numpy_mat,
    }
    try:
        import torch
        import torch.nn.functional as F

        th_s, tW_s = torch.from_numpy(hs), torch.from_numpy(Ws)
        th_t, tW_t = torch.from_numpy(ht), torch.from_numpy(Wt)

        def torch_mat():
            h = th_s.detach().requires_grad_()
            W = tW_s.detach().requires_grad_()
            with torch.no_grad():
                lt = F.log_softmax(th_t @ tW_t.T, dim=-1)
            loss = F.kl_div(
                F.log_softmax(h @ W.T, dim=-1), lt, log_target=True, reduction="batchmean"
            )
            loss.backward()
            return float(loss.detach()), (h.grad.numpy(), W.grad.numpy())

        impls["torch materialised"] = torch_mat
    except ImportError:  # pragma: no cover
        pass

    def check(res) -> float:
        loss, (dh, _dW) = res
        return _loss_grad_error(loss, dh, *reference(), rows)

    return Case(
        family="distill",
        op="linear_kl_divergence loss+grads",
        label=f"N={N} d={d} V={V} float32",
        impls={k: _with_peak(k, f, extra) for k, f in impls.items()},
        baseline="numpy materialised",
        check=check,
        nbytes=(hs.nbytes + Ws.nbytes) * 2 + ht.nbytes + Wt.nbytes,
        extra=extra,
    )


def cases(quick: bool) -> list[Case]:
    """The distillation cases; ``quick`` uses smaller shapes."""
    if quick:
        return [_kl_case(1024, 32000), _linear_case(256, 128, 16000)]
    return [_kl_case(8192, 32000), _linear_case(2048, 1024, 32000)]
