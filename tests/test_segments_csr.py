"""The fused sorted-id (CSR) kernels of the segment ops (``_kernels/segments_csr.py``):
the one-pass ids check + offsets in parts, and the float32 in-cache softmax.  Compared
with ``np.searchsorted`` and the float64 reference twins (``softmaxkit.reference``)."""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit._kernels._parallel as par
from softmaxkit import reference as ref
from softmaxkit import segment_log_softmax, segment_logsumexp, segment_softmax
from softmaxkit._kernels.segments_csr import csr_offsets
from softmaxkit.drivers.eager_segments import Segs


def _ids_cases():
    rng = np.random.default_rng(7)
    yield "len1", np.arange(1000), 1000  # a change at every id: the linear scan
    yield "len1-gaps", np.arange(0, 3000, 3), 3001  # empty segments between
    yield "long", np.repeat(np.arange(5), [100_000, 1, 0, 50_000, 7]), 5
    yield "random", np.sort(rng.integers(0, 997, 200_000)), 1000  # tail empty
    yield "start>0", np.sort(rng.integers(40, 60, 5000)), 70
    yield "one-id", np.full(70_000, 3), 4
    yield "single", np.array([0]), 1
    yield "short-blocks", np.sort(rng.integers(0, 20, 130)), 20  # < one block / part
    yield (
        "mixed",
        np.sort(np.concatenate([rng.integers(0, 50_000, 30_000), np.full(40_000, 7)])),
        50_000,
    )


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("nparts", [1, 2, 3, 7, 64])
def test_csr_offsets_match_searchsorted(dtype, nparts):
    for name, ids, num in _ids_cases():
        ids = ids.astype(dtype)
        offs = np.full(num + 1, -99, np.int64)
        desc = np.zeros(nparts, np.int8)
        csr_offsets(ids, num, nparts, offs, desc, 0, nparts)
        assert not desc.any(), name
        want = np.searchsorted(ids, np.arange(num + 1), side="left")
        np.testing.assert_array_equal(offs, want, err_msg=name)


@pytest.mark.parametrize("nparts", [1, 2, 5])
def test_csr_offsets_find_any_single_descent(nparts):
    # one descent anywhere -- the first pair, a block edge, a part edge, the last
    # pair -- is found (by the part holding it), with equal neighbours around it
    n = 10_000
    base = np.repeat(np.arange(100), 100)
    for pos in [1, 63, 64, 65, n * 1 // 5, n // 2, n * 4 // 5 + 1, n - 1]:
        ids = base.copy()
        ids[pos] = ids[pos - 1] - 1 if ids[pos - 1] > 0 else 0
        if ids[pos] >= ids[pos - 1]:  # at the start: make the descent the other way
            ids[pos - 1] = ids[pos] + 1
        offs = np.empty(101, np.int64)
        desc = np.zeros(nparts, np.int8)
        csr_offsets(ids, 100, nparts, offs, desc, 0, nparts)
        assert desc.any(), pos
        segs = Segs(n, ids, None, 100, defer_range=True)
        assert not segs.sorted and segs.offs is None


def test_segs_sorted_range_errors_and_guessed_num():
    ids = np.array([0, 0, 2, 5])
    s = Segs(4, ids, None, None)
    assert s.sorted and s.num == 6
    np.testing.assert_array_equal(s.offs, [0, 2, 2, 3, 3, 3, 4])
    with pytest.raises(ValueError, match="< num_segments = 5; got 5"):
        Segs(4, ids, None, 5)
    with pytest.raises(ValueError, match=">= 0; got -1"):
        Segs(4, np.array([-1, 0, 2, 5]), None, None)
    with pytest.raises(ValueError, match=">= 0; got -3"):
        Segs(3, np.array([-3, -2, -2]), None, None)
    # unsorted without num_segments: the max, not the last id
    u = Segs(4, np.array([3, 0, 9, 1]), None, None)
    assert not u.sorted and u.num == 10


def _adversarial_sorted(seed):
    """Sorted ids over 12 segments: 10^5 values spread over 700 units, length 1,
    empty (4 and 11), all -inf (5), +inf with finite values (6), NaN (7), -inf next
    to finite values (8), ties at the max (9), values near float32's max (10)."""
    rng = np.random.default_rng(seed)
    parts = [
        (0, rng.uniform(-700, 0, 100_000)),
        (1, [3.5]),
        (2, [-650.25]),
        (3, rng.standard_normal(37) * 30),
        (5, [-np.inf, -np.inf, -np.inf]),
        (6, [np.inf, 1.0, np.inf, -2.0]),
        (7, [1.0, np.nan, 2.0]),
        (8, [-np.inf, 0.5, 2.5, -1.0]),
        (9, [4.0, 4.0, 4.0, 1.0]),
        (10, [3.0e38, 3.0e38, -3.0e38, 1.0]),
    ]
    x = np.concatenate([np.asarray(v, float) for _, v in parts])
    ids = np.concatenate([np.full(len(v), g) for g, v in parts])
    return x.astype(np.float32), ids, 12


def _check_softmax32(got, want):
    got = np.asarray(got, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    # the dense float32 contract: 2e-6 relative where p >= 1e-6, 1e-12 absolute below
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("form", ["ids", "offsets", "int32"])
def test_csr_softmax32_adversarial(threads, form, monkeypatch):
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: threads)
    x, ids, num = _adversarial_sorted(3)
    want = ref.segment_softmax(x.astype(np.float64), ids, num_segments=num)
    if form == "offsets":
        offs = np.searchsorted(ids, np.arange(num + 1))
        got = segment_softmax(x, offsets=offs)
    else:
        got = segment_softmax(
            x, ids.astype(np.int32 if form == "int32" else np.int64), num_segments=num
        )
    assert got.dtype == np.float32
    _check_softmax32(got, want)
    np.testing.assert_array_equal(got[(ids == 6) & (x == np.inf)], [0.5, 0.5])
    np.testing.assert_array_equal(got[(ids == 6) & (x != np.inf)], [0.0, 0.0])
    assert (got[ids == 5] == 0.0).all()
    assert np.isnan(got[ids == 7]).all() and not np.isnan(got[ids != 7]).any()
    assert got[ids == 1][0] == 1.0 and got[ids == 2][0] == 1.0
    # each finite segment sums to 1 within float32 rounding
    for g in (0, 3, 8, 9, 10):
        assert abs(float(got[ids == g].astype(np.float64).sum()) - 1.0) < 1e-5


def test_csr_softmax32_where_temperature_and_many_groups(monkeypatch):
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: 2)
    rng = np.random.default_rng(11)
    n, num = 300_000, 100_001  # 10^5 groups of ~3 values, some empty, the last empty
    x = (rng.standard_normal(n) * 20).astype(np.float32)
    ids = np.sort(rng.integers(0, num - 1, n))
    where = rng.random(n) < 0.8
    where[ids == 17] = False  # a fully masked segment
    got = segment_softmax(x, ids, num_segments=num, where=where, temperature=0.7)
    xt = (x.astype(np.float64) / 0.7).astype(np.float32).astype(np.float64)
    # the reference twin loops over segments (40 s here): a vectorised float64 form
    xm = np.where(where, xt, -np.inf)
    m = np.full(num, -np.inf)
    np.maximum.at(m, ids, xm)
    with np.errstate(invalid="ignore"):
        e = np.where(where, np.exp(xm - m[ids]), 0.0)
    s = np.bincount(ids, e, minlength=num)
    with np.errstate(invalid="ignore"):
        want = np.where(where, e / s[ids], 0.0)
    _check_softmax32(got, want)
    small = ids < 3000  # the twin itself on the first 3000 segments
    got_s = segment_softmax(x[small], ids[small], where=where[small], temperature=0.7)
    _check_softmax32(got_s, ref.segment_softmax(xt[small], ids[small], where=where[small]))
    assert (got[~where] == 0.0).all()


def test_csr_float32_log_ops_unchanged_by_softmax_path(monkeypatch):
    # log_softmax and logsumexp keep their sorted paths; same segments as above
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: 2)
    x, ids, num = _adversarial_sorted(5)
    x64 = x.astype(np.float64)
    for op, rop in (
        (segment_log_softmax, ref.segment_log_softmax),
        (segment_logsumexp, ref.segment_logsumexp),
    ):
        got = np.asarray(op(x, ids, num_segments=num), np.float64)
        with np.errstate(over="ignore"):  # -3e38 - lse (6e38) is -inf in float32
            want = rop(x64, ids, num_segments=num).astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        fin = np.isfinite(want)
        np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
        assert np.all(np.abs(got[fin] - want[fin]) <= 1e-6 * (1 + np.abs(want[fin])))
