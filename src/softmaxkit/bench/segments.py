"""Benchmark cases of the segment family: segment logsumexp / softmax, logcumsumexp,
logmatmulexp (``softmaxkit bench --family segments``).

Peers (each skipped when its package is missing): numbagg's ``group_nansum`` (a
grouped sum, the speed bound of a grouped reduction; for unsorted ids also with one
vectorised exp pass of the same values added: the floor of an exp-based grouped
reduction), ``np.bincount`` with weights,
PyTorch ``scatter_reduce`` code as in PyG's ``utils.softmax`` (amax, exp, scatter
add, gather), ``torch.logcumsumexp``, ``np.logaddexp.accumulate``, plain BLAS
``A @ B`` and the naive broadcast ``logsumexp(A[:, :, None] + B[None], 1)`` (formed
64 rows of ``A`` at a time: the whole [I, J, K] temporary would take 8 GiB).
"""

from __future__ import annotations

import numpy as np

from .timing import Case

__all__ = ["cases"]


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        return None
    return torch


def _torch_segment(torch, xt, it, num, which):
    """PyG-style scatter softmax / logsumexp (torch_geometric.utils.softmax's formula)."""
    m = torch.full((num,), -torch.inf, dtype=xt.dtype).scatter_reduce(
        0, it, xt, "amax", include_self=True
    )
    e = torch.exp(xt - m.gather(0, it))
    s = torch.zeros(num, dtype=xt.dtype).scatter_add(0, it, e)
    if which == "lse":
        return m + torch.log(s)
    return e / s.gather(0, it)


def _nansum_and_exp(group_nansum, xs, ids, groups, buf):
    """A floor for the unsorted logsumexp: one grouped scatter-add (numbagg) plus one
    vectorised exp of every value into ``buf`` (softmaxkit's exp kernel; ``buf`` is
    made with the case, so neither the timing nor the memory pass counts it)."""
    from .._kernels.exp import exp_array

    exp_array(xs, buf)
    return group_nansum(xs, ids, num_labels=groups)


def _segment_cases(n: int, groups: int) -> list[Case]:
    from ..reference import segment_logsumexp as ref_lse
    from ..segments import segment_logsumexp, segment_softmax

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    ids_sorted = np.sort(rng.integers(0, groups, n))
    perm = rng.permutation(n)
    out = []
    check_idx = np.arange(0, groups, max(1, groups // 50))
    for order in ("sorted", "unsorted"):
        ids = ids_sorted if order == "sorted" else ids_sorted[perm]
        xs = x if order == "sorted" else x[perm]
        sel = np.isin(ids, check_idx)
        sub_ids = np.searchsorted(check_idx, ids[sel])
        want = ref_lse(xs[sel].astype(np.float64), sub_ids, num_segments=check_idx.size)

        def check(res, want=want):
            r = np.asarray(res, dtype=np.float64)[check_idx]
            return float(np.max(np.abs(r - want) / (1 + np.abs(want))))

        impls = {
            "softmaxkit": lambda xs=xs, ids=ids: segment_logsumexp(xs, ids, num_segments=groups),
            "numpy bincount sum": lambda xs=xs, ids=ids: np.bincount(ids, xs, minlength=groups),
        }
        try:
            from numbagg import group_nansum

            impls["numbagg group_nansum"] = lambda xs=xs, ids=ids: group_nansum(
                xs, ids, num_labels=groups
            )
            if order == "unsorted":
                buf = np.empty_like(xs)
                impls["bound: numbagg group_nansum + one exp pass"] = (
                    lambda xs=xs, ids=ids, buf=buf: _nansum_and_exp(
                        group_nansum, xs, ids, groups, buf
                    )
                )
        except ImportError:
            pass
        torch = _torch()
        if torch is not None:
            xt = torch.from_numpy(xs)
            it = torch.from_numpy(ids)
            impls["torch scatter_reduce"] = lambda xt=xt, it=it, torch=torch: _torch_segment(
                torch, xt, it, groups, "lse"
            )
        out.append(
            Case(
                family="segments",
                op="segment_logsumexp",
                label=f"{n:.0e} float32, {groups:.0e} groups, {order}",
                impls=impls,
                check=check,
                nbytes=x.nbytes + ids.nbytes,
            )
        )
        sm_impls = {
            "softmaxkit": lambda xs=xs, ids=ids: segment_softmax(xs, ids, num_segments=groups)
        }
        if torch is not None:
            sm_impls["torch scatter_reduce (PyG formula)"] = lambda xt=xt, it=it, torch=torch: (
                _torch_segment(torch, xt, it, groups, "softmax")
            )
        out.append(
            Case(
                family="segments",
                op="segment_softmax",
                label=f"{n:.0e} float32, {groups:.0e} groups, {order}",
                impls=sm_impls,
                nbytes=2 * x.nbytes + ids.nbytes,
            )
        )
    return out


def _lcse_case(rows: int, n: int) -> Case:
    from ..scan import logcumsumexp

    x = np.random.default_rng(1).standard_normal((rows, n), dtype=np.float32) * 3
    want = logcumsumexp(x[:4].astype(np.float64))

    def check(res) -> float:
        r = np.asarray(res)[:4].astype(np.float64)
        return float(np.max(np.abs(r - want) / (1 + np.abs(want))))

    impls = {
        "softmaxkit": lambda: logcumsumexp(x),
        "numpy logaddexp.accumulate": lambda: np.logaddexp.accumulate(x, axis=1),
    }
    torch = _torch()
    if torch is not None:
        xt = torch.from_numpy(x)
        impls["torch logcumsumexp"] = lambda: torch.logcumsumexp(xt, 1)
    return Case(
        family="segments",
        op="logcumsumexp",
        label=f"[{rows}, {n}] float32",
        impls=impls,
        check=check,
        nbytes=2 * x.nbytes,
    )


def _lme_case(n: int) -> Case:
    from ..scan import logmatmulexp

    rng = np.random.default_rng(2)
    A = rng.standard_normal((n, n))
    B = rng.standard_normal((n, n))
    want = np.log(np.exp(A[:8]) @ np.exp(B))

    def check(res) -> float:
        r = np.asarray(res)
        if r.shape != (n, n):  # the BLAS peer: not the same quantity
            return float("nan")
        return float(np.max(np.abs(r[:8] - want) / np.abs(want)))

    def naive():
        out = np.empty((n, n))
        for i0 in range(0, n, 64):
            t = A[i0 : i0 + 64, :, None] + B[None]
            m = t.max(axis=1)
            out[i0 : i0 + 64] = m + np.log(np.exp(t - m[:, None, :]).sum(axis=1))
        return out

    impls = {
        "softmaxkit": lambda: logmatmulexp(A, B),
        "numpy A @ B (BLAS, not log space)": lambda: A @ B,
        "numpy naive broadcast (64 rows at a time)": naive,
    }
    return Case(
        family="segments",
        op="logmatmulexp",
        label=f"[{n}, {n}] x [{n}, {n}] float64",
        impls=impls,
        check=check,
        nbytes=3 * A.nbytes,
        extra={"input_bytes": A.nbytes},
    )


def cases(quick: bool) -> list[Case]:
    """The issue's sizes: 1e7 float32 values in 1e5 groups (sorted and unsorted),
    logcumsumexp [4096, 32000] float32, logmatmulexp 1024^2 float64 (smaller when
    ``quick``)."""
    if quick:
        return [*_segment_cases(10**6, 10**4), _lcse_case(256, 32000), _lme_case(256)]
    return [*_segment_cases(10**7, 10**5), _lcse_case(4096, 32000), _lme_case(1024)]
