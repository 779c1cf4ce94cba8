"""The unsorted-ids (scatter) path of the segment ops, one column: the float32
pass without the tie split, the blocked softmax gather, the ids range check fused
into the scatter's first pass, and the path's peak extra memory.  Compared with
the float64 reference twins (``softmaxkit.reference``)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import softmaxkit._kernels._parallel as par
from softmaxkit import reference as ref
from softmaxkit import segment_log_softmax, segment_logsumexp, segment_softmax

OPS = [
    (segment_logsumexp, ref.segment_logsumexp),
    (segment_softmax, ref.segment_softmax),
    (segment_log_softmax, ref.segment_log_softmax),
]


def _adversarial(seed):
    """Unsorted ids over 9 segments: a 10^5-long one spread over 700 units, length-1
    ones, an empty one (4), all -inf (5), two +inf and finite values (6), a NaN (7),
    a -inf next to finite values (8); shuffled."""
    rng = np.random.default_rng(seed)
    big = rng.uniform(-700, 0, 100_000)
    parts = [
        (0, big),
        (1, [3.5]),
        (2, [-650.25]),
        (3, rng.standard_normal(37) * 30),
        (5, [-np.inf, -np.inf, -np.inf]),
        (6, [np.inf, 1.0, np.inf, -2.0]),
        (7, [1.0, np.nan, 2.0]),
        (8, [-np.inf, 0.5, 2.5, -1.0]),
    ]
    x = np.concatenate([np.asarray(v, float) for _, v in parts])
    ids = np.concatenate([np.full(len(v), g) for g, v in parts])
    perm = rng.permutation(x.size)
    return x[perm], ids[perm], 9


def _check32(got, want, op):
    got = np.asarray(got, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    if op is segment_softmax:  # 2e-6 relative where p >= 1e-6, 1e-12 absolute below
        np.testing.assert_allclose(got[fin], want[fin], rtol=2e-6, atol=1e-12)
    else:  # 1e-6 (1 + |value|)
        assert np.all(np.abs(got[fin] - want[fin]) <= 1e-6 * (1 + np.abs(want[fin])))


def _order(x, ids, order):
    if order == "sorted":  # the CSR path (float32 logsumexp: one shifted pass per segment)
        p = np.argsort(ids, kind="stable")
        return x[p], ids[p]
    return x, ids


@pytest.mark.parametrize(("op", "rop"), OPS, ids=["lse", "softmax", "log_softmax"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("order", ["unsorted", "sorted"])
def test_scatter_float32_adversarial_groups(op, rop, threads, order, monkeypatch):
    # float32: the ties' exact 1s go into r (w = 0); the +inf segment, the all -inf
    # one and the NaN one must come out as the dense contract says, in one part or
    # in several merged ones (a part may hold only -inf or only the +inf of a segment)
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: threads)
    x, ids, num = _adversarial(0)
    x, ids = _order(x, ids, order)
    x32 = x.astype(np.float32)
    want = rop(x32.astype(np.float64), ids, num_segments=num)
    got = op(x32, ids, num_segments=num)
    assert got.dtype == np.float32
    _check32(got, want, op)
    if op is segment_logsumexp:
        assert got[4] == -np.inf and got[5] == -np.inf and got[6] == np.inf
        assert np.isnan(got[7]) and not np.isnan(np.delete(got, 7)).any()
    else:
        pos_inf = (ids == 6) & (x == np.inf)
        np.testing.assert_array_equal(
            got[pos_inf], np.full(2, -np.log(np.float32(2)) if op is segment_log_softmax else 0.5)
        )
        assert (got[ids == 5] == (-np.inf if op is segment_log_softmax else 0.0)).all()
        assert np.isnan(got[ids == 7]).all() and not np.isnan(got[ids != 7]).any()
    # float64 keeps the tie split: 1e-13 of the reference
    got64 = op(x, ids, num_segments=num)
    want64 = rop(x, ids, num_segments=num)
    np.testing.assert_allclose(got64, want64, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(("op", "rop"), OPS, ids=["lse", "softmax", "log_softmax"])
def test_scatter_float32_where_and_temperature(op, rop, monkeypatch):
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: 2)
    rng = np.random.default_rng(1)
    n, num = 20_000, 301
    x = (rng.standard_normal(n) * 8).astype(np.float32)
    ids = rng.integers(0, num - 1, n)  # segment num - 1 empty
    where = rng.random(n) < 0.7
    where[ids == 3] = False  # fully masked segment
    got = op(x, ids, num_segments=num, where=where, temperature=0.7)
    # x / T is rounded to float32 before the op (as the dense float32 path does)
    xt = (x.astype(np.float64) / 0.7).astype(np.float32).astype(np.float64)
    want = rop(xt, ids, num_segments=num, where=where)
    _check32(got, want, op)
    if op is segment_logsumexp:
        assert got[3] == -np.inf and got[num - 1] == -np.inf


@pytest.mark.parametrize("op", [o for o, _ in OPS], ids=["lse", "softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [(), (2,), (0,)])
def test_scatter_ids_out_of_range_raise(op, dtype, cols):
    # unsorted ids with num_segments are range-checked inside the scatter's first
    # pass: a bad id far from the start (after a descent) must still raise, with
    # the same messages as the eager check, and never index out of bounds
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 50, 30_000)
    x = np.ones((ids.size, *cols), dtype)
    for bad, msg in ((-1, ">= 0; got -1"), (50, "< num_segments = 50; got 50"), (10**9, "10000")):
        ii = ids.copy()
        ii[25_000] = bad
        with pytest.raises(ValueError, match=msg.replace("10000", "got 1000000000")):
            op(x, ii, num_segments=50)
    with pytest.raises(ValueError, match=">= 0; got -3"):  # negative and too large
        ii = ids.copy()
        ii[[7, 20_000]] = [60, -3]
        op(x, ii, num_segments=50)


def test_scatter_peak_extra_memory():
    # no temporary of the input's size: per-thread [S] states and the merge only
    # (logsumexp), plus the output and an [S, 2] table (softmax)
    rng = np.random.default_rng(3)
    n, num = 1_000_000, 1000
    x = rng.standard_normal(n).astype(np.float32)
    ids = rng.integers(0, num, n)
    segment_logsumexp(x, ids, num_segments=num)
    segment_softmax(x, ids, num_segments=num)  # compile first
    for op, allowed in ((segment_logsumexp, 0), (segment_softmax, x.nbytes)):
        tracemalloc.start()
        try:
            op(x, ids, num_segments=num)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # states: threads x num x 20 bytes, a few [num] float64 merge temporaries
        assert peak <= allowed + 64 * num * 8 + 65536, (op.__name__, peak)


@pytest.mark.parametrize(("op", "rop"), OPS, ids=["lse", "softmax", "log_softmax"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("order", ["unsorted", "sorted"])
def test_shifted_pass_recomputes_far_segments(op, rop, threads, order, monkeypatch):
    # float32 unsorted: one shift M for every segment; segments far from it must be
    # flagged and recomputed exactly: values near +-1e30 (above: exp overflows;
    # below: every term underflows), a segment 800 below the rest (its sum e^-800
    # would be 0 in float64), near float32's max (the sum of two overflows float32,
    # not float64), and a segment flagged low whose own sum is large (kept)
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: threads)
    rng = np.random.default_rng(5)
    base = rng.standard_normal(20_000) * 3
    parts = [
        (0, base),
        (1, [1e30, 1e30 - 1e24, 3.0]),
        (2, [-1e30, -1e30]),
        (3, [-800.0, -801.5, -800.25]),
        (4, [3e38, 3e38]),
        (5, [0.5, -700.0, -660.0]),
        (6, [-1e4, -1e4 - 2]),
    ]
    x = np.concatenate([np.asarray(v, float) for _, v in parts]).astype(np.float32)
    ids = np.concatenate([np.full(len(v), g) for g, v in parts])
    perm = rng.permutation(x.size)
    x, ids = _order(x[perm], ids[perm], order)
    got = op(x, ids, num_segments=8)
    want = rop(x.astype(np.float64), ids, num_segments=8)
    if op is segment_logsumexp:
        # float32 result: within 1e-6 relative of the value, float32-rounded
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)
        assert got[7] == -np.inf
    else:
        _check32(got, want, op)


def test_shift_sample_not_finite():
    # the sampled values are all -inf or NaN: M falls back to 0, and values far
    # from 0 are still exact (flagged high, recomputed)
    n = 50_000
    x = np.full(n, -np.inf, np.float32)
    x[1::2] = np.nan
    ids = np.arange(n) % 7
    keep = np.arange(3, n, 1000)  # not on the sample's stride, not NaN
    x[keep] = 1000.0
    ids[keep] = 8
    np.random.default_rng(0).shuffle(ids[: n // 2])
    got = segment_logsumexp(x, ids, num_segments=9)
    want = ref.segment_logsumexp(x.astype(np.float64), ids, num_segments=9)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[8], want[8], rtol=1e-6)
