"""float32 segment softmax on unsorted ids with the exps stored in pass 1
(``_kernels/segments_scatter32.py``): the path is taken when the values' sample
spans few units; segments its stored terms cannot serve (a value far above the
shift, +inf, a whole segment far below it) are recomputed exactly.  Compared with
the float64 reference twin."""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit._kernels._parallel as par
import softmaxkit._segments_common as common
from softmaxkit import reference as ref
from softmaxkit import segment_softmax


@pytest.fixture
def taken(monkeypatch):
    """Records the return values of the stored-exps path (True: it ran)."""
    seen = []
    orig = common._scatter_softmax32

    def spy(*a):
        seen.append(orig(*a))
        return seen[-1]

    monkeypatch.setattr(common, "_scatter_softmax32", spy)
    return seen


def _data(seed, far=True):
    """50 000 values (N(0, 2)) over 40 segments, ids shuffled; the special segments'
    values sit off the sampled positions (every 12th), so the sample spans < 25."""
    rng = np.random.default_rng(seed)
    n = 50_000
    x = rng.standard_normal(n) * 2
    x = np.clip(x, -9, 9)
    ids = rng.integers(10, 40, n)  # 10..39 ordinary; 0..9 special; 38, 39 kept empty
    ids[ids >= 38] = 12
    free = np.flatnonzero(np.arange(n) % 12 != 0)
    pos = iter(rng.permutation(free)[:30_000])

    def put(g, vals):
        for v in vals:
            i = next(pos)
            x[i] = v
            ids[i] = g

    if far:
        put(0, rng.uniform(-120, -100, 50))  # all far below: flagged low, sum < e^-30
        put(1, [300.0, 1.0, 2.0])  # far above the shift: flagged high
        put(2, [np.inf, 3.0, np.inf])  # +inf (high)
        put(3, [-85.0, 1.0, 0.5])  # one value below the band, sum large: kept
    put(4, [-np.inf] * 4)  # all -inf: 0
    put(5, [1.0, np.nan])  # NaN
    put(6, [2.5])  # length 1
    put(7, rng.uniform(-62, -58, 20))  # unflagged, sum ~ e^-58
    put(8, [4.0, 4.0, -1.0])  # ties
    put(9, rng.standard_normal(20_000))  # a long segment
    return x.astype(np.float32), ids, 40


def _check(got, want):
    got = np.asarray(got, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    # the dense float32 contract: 2e-6 relative where p >= 1e-6, 1e-12 absolute below
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("far", [True, False])
@pytest.mark.parametrize("idtype", [np.int64, np.int32])
def test_stored_exps_path_matches_reference(threads, far, idtype, taken, monkeypatch):
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: threads)
    x, ids, num = _data(1, far)
    got = segment_softmax(x, ids.astype(idtype), num_segments=num)
    assert taken == [True]
    assert got.dtype == np.float32
    want = ref.segment_softmax(x.astype(np.float64), ids, num_segments=num)
    _check(got, want)
    assert (got[ids == 4] == 0.0).all()
    assert np.isnan(got[ids == 5]).all() and not np.isnan(got[ids != 5]).any()
    assert got[ids == 6][0] == 1.0
    if far:
        np.testing.assert_array_equal(got[(ids == 2) & (x == np.inf)], [0.5, 0.5])
        np.testing.assert_array_equal(got[(ids == 2) & (x != np.inf)], [0.0])
    for g in (0, 1, 3, 7, 8, 9, 12):
        if (ids == g).any():
            assert abs(float(got[ids == g].astype(np.float64).sum()) - 1.0) < 1e-5, g


def test_stored_exps_where_temperature(taken, monkeypatch):
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: 2)
    rng = np.random.default_rng(2)
    n, num = 30_000, 1001
    x = (rng.standard_normal(n) * 2).astype(np.float32)
    ids = rng.integers(0, num - 1, n)  # the last segment empty
    where = rng.random(n) < 0.7
    where[ids == 5] = False  # a fully masked segment
    got = segment_softmax(x, ids, num_segments=num, where=where, temperature=0.5)
    assert taken == [True]
    xt = (x.astype(np.float64) / 0.5).astype(np.float32).astype(np.float64)
    _check(got, ref.segment_softmax(xt, ids, num_segments=num, where=where))
    assert (got[~where] == 0.0).all()


def test_wide_sample_takes_the_table_path(taken):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(20_000) * 30).astype(np.float32)  # spans > 25 units
    ids = rng.integers(0, 50, x.size)
    got = segment_softmax(x, ids, num_segments=50)
    assert taken == [False]
    _check(got, ref.segment_softmax(x.astype(np.float64), ids, num_segments=50))


@pytest.mark.parametrize("bad", [-1, 40])
def test_stored_exps_path_ids_out_of_range_raise(bad, taken):
    x, ids, num = _data(4, far=False)
    ids = ids.copy()
    ids[12_345] = bad
    with pytest.raises(ValueError, match="segment_ids must be"):
        segment_softmax(x, ids, num_segments=num)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("far", [True, False])
def test_logsumexp_float32_exps_match_reference(threads, far, monkeypatch):
    # segment_logsumexp, float32 unsorted, sample spanning < 60 units: one scattered
    # pass of float32 exps (scatter_exp32 storing nothing) with float64 sums; the
    # flagged segments (far below with a tiny sum, far above, +inf) are recomputed
    from softmaxkit import segment_logsumexp
    from softmaxkit._kernels import segments_scatter32 as k32

    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: threads)
    stored = []
    orig = k32.scatter_exp32

    def spy(*a):
        stored.append(a[4].shape[0])
        return orig(*a)

    monkeypatch.setattr(k32, "scatter_exp32", spy)
    x, ids, num = _data(6, far)
    got = segment_logsumexp(x, ids, num_segments=num)
    assert stored and set(stored) == {0}
    assert got.dtype == np.float32
    want = ref.segment_logsumexp(x.astype(np.float64), ids, num_segments=num)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-6, atol=1e-6)
    assert got[4] == -np.inf and np.isnan(got[5]) and got[38] == got[39] == -np.inf
    if far:
        assert got[2] == np.inf
        assert -121 < got[0] < -95  # all 50 terms would be 0 or subnormal in float32
