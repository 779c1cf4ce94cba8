"""Dask driver of the segment ops, logcumsumexp and logmatmulexp: equal to the NumPy
path on random chunkings (segments spanning chunks), lazy, and on a LocalCluster."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import softmaxkit as sk  # noqa: E402


def _close(got, want):
    got = np.asarray(got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-13, atol=1e-14)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 4)) * 8
    ids = rng.integers(0, 20, 300)
    ids[ids == 3] = 4  # an empty segment
    x[ids == 7] = -np.inf
    x[ids == 8, 1] = np.inf
    x[np.flatnonzero(ids == 9)[:1], 2] = np.nan
    return x, ids


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("op", ["segment_logsumexp", "segment_softmax", "segment_log_softmax"])
def test_segments_equal_numpy_on_random_chunkings(op, seed):
    x, ids = _data(seed)
    rng = np.random.default_rng(100 + seed)
    cuts = np.sort(rng.choice(np.arange(1, 300), size=rng.integers(1, 6), replace=False))
    chunks = tuple(np.diff(np.concatenate([[0], cuts, [300]])).tolist())
    xd = da.from_array(x, chunks=(chunks, 3))
    sorted_ids = np.sort(ids)
    for ii, lazy_ids in ((ids, da.from_array(ids, chunks=50)), (sorted_ids, sorted_ids)):
        got = getattr(sk, op)(xd, lazy_ids, num_segments=21, temperature=1.5)
        with np.errstate(invalid="ignore"):
            want = getattr(sk, op)(x, ii, num_segments=21, temperature=1.5)
        _close(got.compute(), want)
    # offsets, axis=1 and a mask
    xt = np.ascontiguousarray(x.T)
    off = np.searchsorted(sorted_ids, np.arange(22))
    w = rng.random(xt.shape) < 0.8
    got = getattr(sk, op)(da.from_array(xt, chunks=(2, 64)), offsets=off, axis=1, where=w)
    _close(got.compute(), getattr(sk, op)(xt, offsets=off, axis=1, where=w))


@pytest.mark.parametrize("reverse", [False, True])
def test_logcumsumexp_along_a_chunked_axis(reverse):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 500)) * 30
    x[0, :120] = -np.inf
    x[1, 300] = np.inf
    x[2, 250] = np.nan
    for chunks in ((2, 77), (3, 500), (1, 1)):
        xd = da.from_array(x, chunks=chunks)
        _close(sk.logcumsumexp(xd, reverse=reverse).compute(), sk.logcumsumexp(x, reverse=reverse))
    x32 = x.astype(np.float32)
    got = sk.logcumsumexp(da.from_array(x32, chunks=(2, 64)), axis=1, reverse=reverse)
    assert got.dtype == np.float32
    want = sk.logcumsumexp(x32, reverse=reverse)
    fin = np.isfinite(want)
    np.testing.assert_allclose(got.compute()[fin], want[fin], rtol=1e-6)
    got = sk.logcumsumexp(da.from_array(x, chunks=(1, 50)), axis=0, reverse=reverse)
    _close(got.compute(), sk.logcumsumexp(x, axis=0, reverse=reverse))
    w = rng.random(x.shape) < 0.7
    got = sk.logcumsumexp(da.from_array(x, chunks=(2, 90)), where=w, reverse=reverse)
    _close(got.compute(), sk.logcumsumexp(x, where=w, reverse=reverse))


def test_logmatmulexp_on_chunked_matrices():
    rng = np.random.default_rng(6)
    A = rng.standard_normal((2, 50, 70)) * 4
    B = rng.standard_normal((2, 70, 30)) * 4
    A[0, 3] = -np.inf
    got = sk.logmatmulexp(da.from_array(A, chunks=(1, 20, 25)), da.from_array(B, chunks=(2, 30, 7)))
    _close(got.compute(), sk.logmatmulexp(A, B))
    got2 = sk.logmatmulexp(da.from_array(A[0], chunks=(50, 9)), B[0])
    _close(got2.compute(), sk.logmatmulexp(A[0], B[0]))


def test_building_the_graphs_computes_nothing_and_errors():
    calls = []

    def spy(b):
        if b.size:  # map_blocks may call it on an empty meta array
            calls.append(1)
        return b

    x, ids = _data()
    xd = da.from_array(x, chunks=(64, 4)).map_blocks(spy, dtype=x.dtype)
    sk.segment_softmax(xd, ids, num_segments=21)
    sk.segment_logsumexp(xd, da.from_array(ids, chunks=64), num_segments=21)
    sk.logcumsumexp(xd, axis=0)
    sk.logmatmulexp(xd, xd.T)
    assert calls == []
    with pytest.raises(ValueError, match="num_segments is required"):
        sk.segment_logsumexp(xd, ids)
    with pytest.raises(TypeError, match="integer dtype"):
        sk.segment_logsumexp(xd, ids.astype(float), num_segments=21)
    with pytest.raises(ValueError, match="length of the segmented axis"):
        sk.segment_logsumexp(xd, ids[:10], num_segments=21)
    bad = ids.copy()
    bad[5] = 30  # out of range: found when the block is computed
    with pytest.raises(ValueError, match="segment_ids must be < num_segments"):
        sk.segment_logsumexp(xd, bad, num_segments=21).compute()


@pytest.mark.slow
def test_cluster_results_equal_numpy():
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("psutil")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    x, ids = _data(9)
    xd = da.from_array(x, chunks=(37, 2))
    idd = da.from_array(ids, chunks=41)
    A = np.random.default_rng(10).standard_normal((40, 60))
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        lazy = (
            sk.segment_logsumexp(xd, idd, num_segments=21),
            sk.segment_softmax(xd, idd, num_segments=21),
            sk.logcumsumexp(xd, axis=0, reverse=True),
            sk.logmatmulexp(da.from_array(A, chunks=(15, 25)), da.from_array(A.T, chunks=(25, 9))),
        )
        got = dask.compute(*lazy, scheduler=client)
    with np.errstate(invalid="ignore"):
        want = (
            sk.segment_logsumexp(x, ids, num_segments=21),
            sk.segment_softmax(x, ids, num_segments=21),
            sk.logcumsumexp(x, axis=0, reverse=True),
            sk.logmatmulexp(A, A.T),
        )
    for g, w in zip(got, want, strict=True):
        _close(g, w)
