"""NumPy driver of the segment and scan families: the validated segments, the
``(m, w, r)`` segment states, the scan of the ``(m, s)`` state along rows and the
blocked log-space matrix product, on NumPy arrays via the kernels of
``_kernels/segments.py`` and ``_kernels/scan.py`` (loaded on first use).

Used by the public layer (:mod:`softmaxkit.segments`, :mod:`softmaxkit.scan`) for
NumPy input and by the Dask driver (:mod:`softmaxkit.drivers.dask.segments`) on
each block, so neither imports the other.  The maths: ``docs/segments.md``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.exceptions import AxisError

from .._core.blas import matmul

__all__ = [
    "MIN_BLOCK",
    "Segs",
    "check_ids",
    "finalize_lse",
    "finite_max",
    "lme_batched",
    "log_wr",
    "merge_states",
    "one_axis",
    "rows",
    "sample_span",
    "scan",
    "scan_last",
    "scatter_softmax32",
    "states",
]

# A long row is cut into blocks scanned on several threads when it has at least
# this many values per block (below, the extra state pass costs more than it saves).
MIN_BLOCK = 1 << 16


def _kss():
    from .._kernels import segments_scatter

    return segments_scatter


def _ks():
    from .._kernels import segments

    return segments


def _kc():
    from .._kernels import scan as k

    return k


def one_axis(axis, ndim: int, name: str = "axis") -> int:
    """``axis`` as a single non-negative int below ``ndim`` (TypeError / AxisError)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {axis!r}")
    a = int(axis)
    if not -ndim <= a < ndim:
        raise AxisError(a, ndim, msg_prefix=name)
    return a % ndim


def rows(a: np.ndarray, ax: int) -> np.ndarray:
    """``a`` with ``ax`` moved last as C-contiguous ``[R, n]`` rows (a view when it can)."""
    moved = np.moveaxis(a, ax, -1)
    n = moved.shape[-1]
    return np.ascontiguousarray(moved).reshape(math.prod(moved.shape[:-1]), n)


def check_ids(ids, n: int) -> None:
    """Raise unless ``ids`` (NumPy or Dask) is 1-D, of an integer dtype, of length ``n``."""
    if ids.dtype.kind not in "iu":
        raise TypeError(f"segment_ids must have an integer dtype; got {ids.dtype}")
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(
            f"segment_ids must be 1-D with the length of the segmented axis ({n}); "
            f"got shape {ids.shape}"
        )


def _check_range(lo, hi, num: int) -> None:
    if lo < 0:
        raise ValueError(f"segment_ids must be >= 0; got {lo}")
    if hi >= num:
        raise ValueError(f"segment_ids must be < num_segments = {num}; got {hi}")


def _sorted_offsets(ids, num: int):
    """CSR offsets [num + 1] of 1-D ``ids`` if they are sorted, else None: one pass
    over the ids in parts on several threads (``_kernels.segments_csr.csr_offsets``,
    which stops each part at its first descent; random ids cost a few blocks)."""
    from .._kernels import segments_csr
    from .._kernels._parallel import run, threads_for

    n = ids.shape[0]
    nt = threads_for(n)
    nparts = max(1, min(4 * nt, n // (1 << 16)))
    offs = np.empty(num + 1, np.int64)
    desc = np.zeros(nparts, np.int8)
    run(segments_csr.csr_offsets, nparts, nt, ids, num, nparts, offs, desc)
    return None if desc.any() else offs


class Segs:
    """Validated segments of an axis of length ``n``: ``offs`` (CSR) or ``ids``."""

    def __init__(self, n, segment_ids, offsets, num_segments, defer_range=False):
        """``defer_range``: unsorted ids with a given ``num_segments`` are not read
        here (sortedness is decided at the first descent); the scatter kernels of
        :func:`states` check every id against ``[0, num)`` in their first pass and
        :func:`states` raises the same errors (``range_checked`` is then False).
        Only for callers that go through :func:`states` before using ``ids``."""
        self.n = n
        self.range_checked = True
        if num_segments is not None:
            if isinstance(num_segments, bool) or not isinstance(num_segments, numbers.Integral):
                raise TypeError(f"num_segments must be an int; got {num_segments!r}")
            if num_segments < 0:
                raise ValueError(f"num_segments must be >= 0; got {num_segments}")
            num_segments = int(num_segments)
        if (segment_ids is None) == (offsets is None):
            raise TypeError("give exactly one of segment_ids and offsets")
        self.ids = None
        self.offs = None
        if offsets is not None:
            o = np.asarray(offsets)
            if o.dtype.kind not in "iu" or o.ndim != 1:
                raise TypeError(
                    f"offsets must be a 1-D integer array; got dtype {o.dtype}, shape {o.shape}"
                )
            if o.size == 0 or o[0] != 0 or o[-1] != n:
                raise ValueError(
                    f"offsets must start at 0 and end at the axis length {n}; "
                    f"got {o[:1].tolist()} ... {o[-1:].tolist()}"
                )
            d = np.diff(o)
            if d.size and d.min() < 0:
                i = int(np.argmax(d < 0))
                raise ValueError(
                    f"offsets must be non-decreasing; offsets[{i}] = {o[i]} > "
                    f"offsets[{i + 1}] = {o[i + 1]}"
                )
            if num_segments is not None and num_segments != o.size - 1:
                raise ValueError(
                    f"num_segments must equal len(offsets) - 1 = {o.size - 1}; got {num_segments}"
                )
            self.offs = o.astype(np.int64, copy=False)
            self.num = o.size - 1
            self.sorted = True
            return
        ids = np.asarray(segment_ids)
        check_ids(ids, n)
        if ids.dtype not in (np.int32, np.int64):
            ids = ids.astype(np.int64)
        n_ids = ids.shape[0]
        if n_ids:
            # one pass: sortedness and the CSR offsets together (``num`` guessed from
            # the last id when not given: right whenever the ids are sorted)
            num = max(int(ids[-1]) + 1, 0) if num_segments is None else num_segments
            offs = _sorted_offsets(ids, num)
            if offs is not None:
                _check_range(int(ids[0]), int(ids[-1]), num)
                self.num = num
                self.ids = ids
                self.sorted = True
                self.offs = offs
                return
            if defer_range and num_segments is not None:
                # unsorted: the scatter kernels check the range in their first pass
                self.num = num_segments
                self.ids = ids
                self.sorted = False
                self.range_checked = False
                return
        lo, hi, ok = _ks().ids_info(ids)
        num = int(hi) + 1 if num_segments is None else num_segments
        _check_range(lo, hi, num)
        self.num = num
        self.ids = ids
        self.sorted = bool(ok)
        if ok:
            self.offs = np.empty(num + 1, np.int64)
            _ks().offsets_from_sorted(ids, num, self.offs)

    def check_range(self) -> None:
        """Raise for ids outside ``[0, num)`` when ``__init__`` deferred that check."""
        if not self.range_checked:
            lo, hi, _ = _ks().ids_info(self.ids)
            _check_range(lo, hi, self.num)
            self.range_checked = True

    def ids_array(self):
        if self.ids is not None:
            return self.ids
        return np.repeat(np.arange(self.num, dtype=np.int64), np.diff(self.offs))


def states(x2, segs):
    """float64 ``(m, w, r)``, each [S, C]: every segment's max, ties at the max and
    the sum of the other terms (``_kernels/segments.py``)."""
    from .._kernels._parallel import run, threads_for

    k = _ks()
    N, C = x2.shape
    S = segs.num
    nt = threads_for(x2.size, x2.itemsize)
    m = np.empty((S, C), x2.dtype)
    w = np.empty((S, C))
    r = np.empty((S, C))
    if segs.offs is not None:
        if C == 1 and x2.dtype == np.float32:  # one pass per segment, one shift
            x1 = x2.reshape(-1)
            M, _ = sample_span(x1)
            m64 = np.empty((S, C))
            run(k.csr_shifted_1d, S, nt, x1, segs.offs, M, m64[:, 0], w[:, 0], r[:, 0])
            return m64, w, r
        if C == 1:
            run(k.csr_state_1d, S, nt, x2.reshape(-1), segs.offs, m[:, 0], w[:, 0], r[:, 0])
        else:
            run(k.csr_state_2d, S, nt, x2, segs.offs, m, w, r)
        return m.astype(np.float64), w, r
    if C == 1 and x2.dtype == np.float32:
        return _shifted_states(x2.reshape(-1), segs, nt)
    nparts = max(1, min(nt, N // 4096))
    pm = np.full((nparts, S, C), -np.inf, dtype=x2.dtype)
    pw = np.zeros((nparts, S, C))
    pr = np.zeros((nparts, S, C))
    bad = np.zeros(nparts, np.int8)
    run(_kss().scatter_state, nparts, nparts, x2, segs.ids, nparts, pm, pw, pr, bad)
    if bad.any():  # an id outside [0, S): the message needs its min / max
        segs.check_range()
    segs.range_checked = True
    m, w, r = pm[0].astype(np.float64), pw[0], pr[0]
    for p in range(1, nparts):
        m, w, r = merge_states(m, w, r, pm[p].astype(np.float64), pw[p], pr[p])
    return m, w, r


def sample_span(x1):
    """``(M, span)`` of the finite values among <= 4097 evenly spaced ones of ``x1``:
    their max and max - min; ``(0.0, inf)`` when none is finite.  ``M`` is the one
    shift of the shifted kernels: any finite value is correct (values far from it
    are flagged and recomputed); near the max, none are."""
    smp = x1[:: max(1, x1.shape[0] // 4096)]
    fin = smp[np.isfinite(smp)]
    if fin.size == 0:
        return 0.0, math.inf
    M = float(fin.max())
    return M, M - float(fin.min())


def _shifted_states(x1, segs, nt):
    """float32 values, one column, unsorted ids: ``(m, w, r)`` [S, 1] from ONE
    scattered pass, ``r = sum exp(v - M)`` in float64 for a single shift ``M``: no
    per-segment max pass.  When the sample of ``sample_span`` spans less than
    ``segments_scatter32._SPAN`` units the exps are float32 (``scatter_exp32`` with no
    output: 8 lanes, not 4, blocks of 16384; 10^7 values in 10^5 groups, one thread
    26.5 -> 19 ms against numbagg's ``group_nansum`` 14-15 ms) and a
    value outside ``[M - 80, M + 80]`` flags its segment; otherwise they are float64
    (``_kernels.segments.shifted_sums``) and the band is 650
    units.  ``m = M`` and ``w = 0`` (the ties are inside ``r``, as in the dense float32
    kernels) except for the flagged segments whose terms cannot give their sum (a
    value above the band, or one below it in a segment whose sum is below ``e^-30``
    (float32 exps) / ``e^-600``), recomputed exactly by ``fix_segments`` (two more
    serial passes, only when some segment is flagged).

    Extra memory: ``parts x S x 9`` bytes (float64 sums, int8 flags), a 64 KiB block
    of exps per part and a few [S] float64 arrays; ``parts`` is the thread count (at
    most one per 4096 values).
    """
    from .._kernels import segments_scatter32 as k32
    from .._kernels._parallel import run

    N = x1.shape[0]
    S = segs.num
    M, span = sample_span(x1)
    nparts = max(1, min(nt, N // 4096))
    pr = np.zeros((nparts, S))
    pf = np.zeros((nparts, S), np.int8)
    bad = np.zeros(nparts, np.int8)
    if span <= k32._SPAN:
        none = np.empty(0, np.float32)
        run(k32.scatter_exp32, nparts, nparts, x1, segs.ids, M, nparts, none, pr, pf, bad)
        keep = k32._KEEP32
    else:
        run(_kss().shifted_sums, nparts, nparts, x1, segs.ids, M, nparts, pr, pf, bad)
        keep = _ks()._KEEP
    if bad.any():  # an id outside [0, S): the message needs its min / max
        segs.check_range()
    segs.range_checked = True
    r = pr.sum(axis=0) if nparts > 1 else pr[0]
    f = np.bitwise_or.reduce(pf, axis=0) if nparts > 1 else pf[0]
    m = np.full(S, M)
    fix = ((f & 2) != 0) | (((f & 1) != 0) & (r < math.exp(keep)))
    if fix.any():
        m[fix] = -np.inf
        r[fix] = 0.0
        _kss().fix_segments(x1, segs.ids, fix, m, r)
    return m[:, None], np.zeros((S, 1)), r[:, None]


def scatter_softmax32(x1, segs, out1, nt) -> bool:
    """float32 softmax of 1-D ``x1`` over unsorted ids into ``out1`` without a second
    exp (``_kernels/segments_scatter32.py``): pass 1 stores ``exp(v - M)`` and
    scatters the sums, pass 2 scales by ``1 / s``; segments whose stored terms
    cannot give their softmax are recomputed exactly (``fix_segments``, then
    ``refix``).  False (nothing done) when the values' sample (<= 4097 evenly
    spaced, finite ones) spans more than ``_SPAN`` units or has no finite value:
    the caller then takes the table path, whose band of one shift is 650 units.

    Extra memory: ``parts x S x 9`` bytes and a few [S] arrays, as ``_shifted_states``.
    """
    from .._kernels import segments_scatter32 as k32
    from .._kernels._parallel import run

    N = x1.shape[0]
    S = segs.num
    M, span = sample_span(x1)
    if span > k32._SPAN:
        return False
    nparts = max(1, min(nt, N // 4096))
    pr = np.zeros((nparts, S))
    pf = np.zeros((nparts, S), np.int8)
    bad = np.zeros(nparts, np.int8)
    run(k32.scatter_exp32, nparts, nparts, x1, segs.ids, M, nparts, out1, pr, pf, bad)
    if bad.any():  # an id outside [0, S): the message needs its min / max
        segs.check_range()
    segs.range_checked = True
    r = pr.sum(axis=0) if nparts > 1 else pr[0]
    f = np.bitwise_or.reduce(pf, axis=0) if nparts > 1 else pf[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        # r == 0: every value -inf (or masked), softmax 0; r >= e^-81 otherwise
        # unless flagged; kept below 1e37 in float32
        fix = ((f & 2) != 0) | (((f & 1) != 0) & (r < math.exp(k32._KEEP32))) | (r > 1e37)
        scale = np.where((r == 0.0) | fix, 0.0, 1.0 / r)
    run(k32.scale_gather, N, nt, segs.ids, scale, out1)
    if fix.any():
        m = np.full(S, M)
        m[fix] = -np.inf
        r = r.copy()
        r[fix] = 0.0
        _kss().fix_segments(x1, segs.ids, fix, m, r)
        tab = np.empty((S, 2), np.float32)
        _kss().gather_table(m, np.zeros(S), r, False, True, tab)
        run(k32.refix, N, nt, x1, segs.ids, fix, tab, out1)
    return True


def merge_states(m1, w1, r1, m2, w2, r2):
    """Combine two ``(m, w, r)`` states (associative; identity ``(-inf, 0, 0)``)."""
    m = np.maximum(m1, m2)
    with np.errstate(invalid="ignore", over="ignore"):
        e1 = m1 == m
        e2 = m2 == m
        w = np.where(e1, w1, 0.0) + np.where(e2, w2, 0.0)
        r = np.where(e1, r1, (w1 + r1) * np.exp(np.where(e1, 0.0, m1 - m))) + np.where(
            e2, r2, (w2 + r2) * np.exp(np.where(e2, 0.0, m2 - m))
        )
    return m, w, r


def log_wr(w, r):
    """``log(w + r)``, vectorised ``_kernels.segments.log_wr``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.log1p(r)
        many = np.log(np.maximum(w, 1.0)) + np.log1p(r / np.maximum(w, 1.0))
        return np.where(w == 1.0, one, np.where(w == 0.0, np.log(r), many))


def finalize_lse(m, w, r):
    with np.errstate(invalid="ignore", divide="ignore"):
        # no ties kept apart (the shifted states): one log, not four
        lse = m + (np.log(r) if not w.any() else log_wr(w, r))
    # m = -inf is empty unless a NaN (skipped by the max) made r NaN
    return np.where((m == -np.inf) & ~np.isnan(r), -np.inf, lse)


def _carries(bm: np.ndarray, bs: np.ndarray, m: np.ndarray, s: np.ndarray):
    """Exclusive scan of block states along axis 1 (the state entering each block),
    starting from the state ``(m, s)`` entering the row."""
    from .._core.state import merge

    cm = np.empty_like(bm)
    cs = np.empty_like(bs)
    for k in range(bm.shape[1]):
        cm[:, k] = m
        cs[:, k] = s
        m, s = merge(m, s, bm[:, k], bs[:, k])
    return cm, cs


_NO_MASK = np.lib.stride_tricks.as_strided(np.ones(1, bool), (2, 1), (0, 1), writeable=False)


def scan(
    x2: np.ndarray,
    m2: np.ndarray | None,
    reverse: bool,
    res2: np.ndarray,
    carry=None,
    min_block: int = MIN_BLOCK,
):
    """Run the scan kernels over C rows ``x2`` into ``res2`` (both [R, n]).

    ``carry``: optional [R] log-sum-exp of what comes before each row in scan order
    (the Dask driver's blocks); it enters as the state ``(carry, 1)`` (``(-inf, 0)``
    for ``-inf``): the scan only ever uses ``m + log(s)`` of a state.  Rows are cut
    into blocks of at least ``min_block`` values when there are few of them.
    """
    from .._kernels._parallel import run, threads_for
    from .._kernels.view import any_layout, readonly, unit_last

    k = _kc()
    R, n = x2.shape
    if R == 0 or n == 0:
        return
    use_mask = m2 is not None
    # the mask reaches the kernels as a strided read-only array with a unit last
    # stride, whatever its layout, and "no mask" as one of the same type: one compiled
    # variant (_kernels/view.py::any_layout)
    mrows = readonly(unit_last(m2)) if m2 is not None else _NO_MASK
    nt = threads_for(x2.size, x2.itemsize)
    nblk = 1
    if nt > 1 and R < 2 * nt:
        nblk = max(1, min(-(-4 * nt // R), n // min_block))
    if carry is None:
        m0 = np.full(R, -np.inf)
        s0 = np.zeros(R)
    else:
        m0 = np.asarray(carry, dtype=np.float64).reshape(R)
        s0 = np.where(m0 == -np.inf, 0.0, 1.0)
    if nblk > 1:
        bm = np.empty((R, nblk))
        bs = np.empty((R, nblk))
        args = (x2, mrows, use_mask, reverse, nblk, bm, bs)
        run(any_layout(k.block_states, args, (1,)), R * nblk, nt, *args)
        cm, cs = _carries(bm, bs, m0, s0)
    else:
        cm = m0.reshape(R, 1).copy()
        cs = s0.reshape(R, 1).copy()
    args = (x2, mrows, use_mask, res2, reverse, nblk, cm, cs)
    run(any_layout(k.scan_rows, args, (1,)), R * nblk, nt, *args)


def scan_last(a: np.ndarray, reverse: bool, out_dtype, carry=None) -> np.ndarray:
    """Running log-sum-exp of ``a`` along its last axis (no mask), as ``out_dtype``.

    ``carry``: optional log-sum-exp entering each row (shape ``a.shape[:-1]`` or
    size-1 last axis).  float16 is scanned in float32 and rounded once.
    """
    x2 = rows(a, a.ndim - 1)
    out_dtype = np.dtype(out_dtype)
    res2 = np.empty(x2.shape, np.float32 if out_dtype == np.float16 else out_dtype)
    scan(x2, None, bool(reverse), res2, carry=None if carry is None else carry.reshape(-1))
    return res2.reshape(a.shape).astype(out_dtype, copy=False)


_BI = 256  # rows of A per tile
# products of at most this many terms (batch x I x J x K) are computed entry by
# entry (``_kernels.lme.direct_batched``: one exp per term, float64) instead of by
# tiles through BLAS
_DIRECT_MAX = 1 << 15
_BJ = 256  # the contracted axis per block
# An accumulated sum below this (relative to the shifts a_i + b_k) may have lost its
# dominant terms to underflow: those entries are recomputed directly (see
# logmatmulexp's Notes; guarded by test_scan.py::test_logmatmulexp_underflow_fallback).
_LOST = {np.dtype(np.float64): 1e-260, np.dtype(np.float32): 1e-25}


def finite_max(a: np.ndarray, axis: int) -> np.ndarray:
    """Max over ``axis`` of the finite entries; 0 where there is none.

    A plain max first (no temporary of ``a``'s size); only the rows / columns whose
    max is not finite are reduced again over their finite entries."""
    m = np.max(a, axis=axis, initial=-np.inf)
    bad = np.flatnonzero(~np.isfinite(m))
    for i in bad:
        line = a[i] if axis == 1 else a[:, i]
        fin = line[np.isfinite(line)]
        m[i] = fin.max() if fin.size else 0.0
    return m.astype(a.dtype, copy=False)


def _lme_2d(A, B, out):
    """logmatmulexp of 2-D C-contiguous ``A`` [I, J], ``B`` [J, K] into ``out`` [I, K]."""
    from .._kernels._parallel import run, threads_for

    k = _kc()
    I, J = A.shape
    K = B.shape[1]
    if I == 0 or K == 0:
        return
    if J == 0:
        out[...] = -np.inf
        return
    a = finite_max(A, 1)
    b = finite_max(B, 0)
    bj = min(_BJ, J)
    bi = min(_BI, I)
    eB = np.empty((bj, K), A.dtype)
    eA = np.empty((bi, bj), A.dtype)
    P = np.empty((bi, K), A.dtype)
    # inf * 0 in the products is the NaN of +inf + -inf in the naive form
    with np.errstate(invalid="ignore"):
        _lme_tiles(A, B, a, b, eA, eB, P, out)
    with np.errstate(invalid="ignore"):
        lost = np.nonzero(out < _LOST[A.dtype])
    run(k.log_finish, I, threads_for(out.size), out, a, b)
    if lost[0].size:
        ii = lost[0].astype(np.int64)
        kk = lost[1].astype(np.int64)
        res = np.empty(ii.size)
        run(k.direct_entries, ii.size, threads_for(ii.size * J), A, B, ii, kk, res)
        out[ii, kk] = res


def _lme_tiles(A, B, a, b, eA, eB, P, out):
    """``out = exp(A - a) @ exp(B - b)``, block by block of the contracted axis."""
    from .._kernels._parallel import run, threads_for

    k = _kc()
    I, J = A.shape
    bj, bi = eB.shape[0], eA.shape[0]
    for j0 in range(0, J, bj):
        j1 = min(J, j0 + bj)
        eBj = eB[: j1 - j0]
        run(k.exp_shift_cols, j1 - j0, threads_for(eBj.size), B[j0:j1], b, eBj)
        for i0 in range(0, I, bi):
            i1 = min(I, i0 + bi)
            eAi = eA[: i1 - i0, : j1 - j0]
            Ai = np.ascontiguousarray(A[i0:i1, j0:j1])
            run(k.exp_shift_rows, i1 - i0, threads_for(Ai.size), Ai, a[i0:i1], eAi)
            if j0 == 0:
                matmul(eAi, eBj, out=out[i0:i1])
            else:
                Pi = P[: i1 - i0]
                matmul(eAi, eBj, out=Pi)
                out[i0:i1] += Pi


def lme_batched(a: np.ndarray, b: np.ndarray, batch: tuple, compute, res: np.ndarray) -> None:
    """logmatmulexp of ``a`` [..., I, J] and ``b`` [..., J, K] into ``res`` [*batch, I, K].

    The batch axes of ``a`` and ``b`` broadcast to ``batch``; one matrix at a time,
    each as a C-contiguous ``compute`` copy when it is not one.
    """
    ab = np.broadcast_to(a, batch + a.shape[-2:])
    bb = np.broadcast_to(b, batch + b.shape[-2:])
    I, J = a.shape[-2:]
    K = b.shape[-1]
    nb = math.prod(batch)
    if nb * I * J * K <= _DIRECT_MAX and res.flags.c_contiguous:
        # small products (an HMM step, a CRF transition): every entry directly, one
        # kernel call, no tiles, BLAS or per-matrix Python ([1, 4] x [4, 4] at load 6:
        # 139 -> 45 us a call)
        a3 = np.ascontiguousarray(ab, dtype=compute).reshape(nb, I, J)
        b3 = np.ascontiguousarray(bb, dtype=compute).reshape(nb, J, K)
        _kc().direct_batched(a3, b3, res.reshape(nb, I, K))
        return
    for idx in np.ndindex(*batch):
        _lme_2d(
            np.ascontiguousarray(ab[idx], dtype=compute),
            np.ascontiguousarray(bb[idx], dtype=compute),
            res[idx],
        )
