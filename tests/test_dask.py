"""The Dask driver: lazy graphs, equality with the NumPy path, a real distributed cluster.

The NumPy path (itself tested against the float64 reference and mpmath) is the
oracle here: the Dask driver runs the same per-block kernel and must agree with it
on any chunking, up to the rounding of the merges.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from strategies import lse_cancellation  # noqa: E402

import softmaxkit as sk  # noqa: E402
from softmaxkit import reference as ref  # noqa: E402
from softmaxkit.drivers import dask as _dask  # noqa: E402

OPS = {"softmax": sk.softmax, "log_softmax": sk.log_softmax, "logsumexp": sk.logsumexp}


def _fail_scheduler(dsk, keys, **kwargs):
    raise AssertionError("a dask computation ran while only a graph was being built")


def _close(actual, expected, op, scale=1.0):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    # Special values must agree exactly (contract cells); finite ones within the
    # rounding of a different merge order.  log_softmax's dominant entry: the
    # state (m, s) keeps s = 1 + r, so -log1p(r) becomes -log(s) (absolute error
    # ~eps instead of relative; docs/scaling.md).
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(
        np.isinf(actual) & (actual > 0), np.isinf(expected) & (expected > 0)
    )
    np.testing.assert_array_equal(
        np.isinf(actual) & (actual < 0), np.isinf(expected) & (expected < 0)
    )
    eps = np.finfo(expected.dtype).eps
    rtol = 1e-12 if expected.dtype == np.float64 else 4 * eps
    # softmax: probabilities below the smallest normal number may be flushed to 0 by
    # one path and kept subnormal by the other (float32 kernels flush; docs/dense.md).
    # log_softmax: (x/T - m) - log(s) carries the rounding of x/T, i.e. an absolute
    # error ~eps * max|x/T| (``scale``), like the dense contract's eps * (1 + |v|).
    # softmax: the dense float32/float16 contract is relative only for p >= 1e-6 and
    # 1e-12 absolute below (docs/dense.md); float64 keeps the smallest normal number.
    # logsumexp: log|S| is known to ~eps * (1 + |v|) absolutely, times the cancellation
    # sum|b e^v| / |S| of signed weights (``scale`` carries both); relative alone failed
    # on a float32 value near 0 (below).
    tiny_p = np.finfo(expected.dtype).tiny if expected.dtype == np.float64 else 1e-12
    atol = 4 * eps * scale if op in ("log_softmax", "logsumexp") else tiny_p
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- laziness


def test_import_softmaxkit_does_not_import_dask():
    code = (
        "import sys, numpy as np, softmaxkit as sk; sk.softmax(np.ones(3)); "
        "sk.logsumexp(np.ones(3)); assert 'dask' not in sys.modules, 'dask imported'"
    )
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(sk.__file__), os.pardir)
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_building_the_graph_computes_nothing():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 10, 8))
    x = da.from_array(a, chunks=(4, 3, 5))
    mask_np = rng.random((10, 8)) > 0.5
    mask_da = da.from_array(rng.random((6, 10, 8)) > 0.5, chunks=(2, 5, 4))
    b_da = da.from_array(rng.random((8,)), chunks=3)
    with dask.config.set(scheduler=_fail_scheduler):
        y = sk.softmax(x, axis=(0, 2), where=mask_np, temperature=2.0, dtype=np.float32)
        assert isinstance(y, da.Array)
        assert y.shape == a.shape and y.dtype == np.float32 and y.chunks == x.chunks
        y = sk.log_softmax(x, axis=None, where=mask_da)
        assert y.shape == a.shape and y.dtype == np.float64 and y.chunks == x.chunks
        lse, sign = sk.logsumexp(x, axis=1, b=b_da, return_sign=True, keepdims=True)
        assert isinstance(lse, da.Array) and isinstance(sign, da.Array)
        assert lse.shape == (6, 1, 8) and lse.chunks == ((4, 2), (1,), (5, 3))
        s = sk.logsumexp(x, axis=None)
        assert s.shape == () and s.dtype == np.float64
        h = sk.logsumexp(x.astype(np.float16), axis=-1)
        assert h.dtype == np.float16 and h.chunks == ((4, 2), (3, 3, 3, 1))
        with pytest.raises(AssertionError, match="computation ran"):
            s.compute()


def test_errors_match_numpy_path():
    x = da.ones((3, 4), chunks=2)
    with pytest.raises(np.exceptions.AxisError):
        sk.softmax(x, axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        sk.logsumexp(x, axis=(1, -1))
    with pytest.raises(ValueError, match="temperature"):
        sk.log_softmax(x, temperature=0.0)
    with pytest.raises(TypeError, match="boolean"):
        sk.softmax(x, where=np.ones(4))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        sk.softmax(x, where=np.ones(3, bool))
    with pytest.raises(ValueError, match="b with shape"):
        sk.logsumexp(x, b=np.ones(5))
    with pytest.raises(TypeError, match="dtype"):
        sk.softmax(x.astype(np.complex128))
    with pytest.raises(TypeError, match="out is not supported"):
        sk.softmax(x, out=np.empty((3, 4)))


# ----------------------------------------------------------------- equality with NumPy


def test_contract_cells():
    """Every cell of the edge-case contract, with the special row split across chunks."""
    a = np.array(
        [
            [0.5, -1.0, 2.0, 3.0, -0.25, 1.0],  # regular
            [-np.inf] * 6,  # all -inf
            [1.0, np.inf, 0.0, -np.inf, np.inf, 2.0],  # two +inf in different chunks
            [1.0, 2.0, 3.0, 4.0, 5.0, np.nan],  # NaN in the last chunk
            [np.nan, np.inf, -np.inf, 1.0, 2.0, 3.0],  # NaN wins over inf
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # fully masked below
        ]
    )
    where = np.ones(a.shape, bool)
    where[5] = False
    where[0, 3] = False
    x = da.from_array(a, chunks=(2, 2))
    with dask.config.set(scheduler="sync"):
        for name, f in OPS.items():
            for w in (None, where):
                _close(f(x, where=w).compute(), f(a, where=w), name)
            _close(f(x[:, :0]).compute(), f(a[:, :0]), name)  # size-0 reduction
            for v in (2.0, np.inf, -np.inf, np.nan):  # 0-d input, axis=None
                _close(f(da.asarray(np.float64(v)), axis=None).compute(), f(v, axis=None), name)
        got = sk.softmax(x, where=where).compute()
        np.testing.assert_array_equal(got[1], 0.0)
        np.testing.assert_array_equal(got[2], [0, 0.5, 0, 0, 0.5, 0])
        assert np.isnan(got[3]).all() and np.isnan(got[4]).all()
        np.testing.assert_array_equal(got[5], 0.0)
        lse, sign = sk.logsumexp(x, b=np.array([1.0, -1, 1, -1, 1, -1]), return_sign=True)
        e_lse, e_sign = sk.logsumexp(a, b=np.array([1.0, -1, 1, -1, 1, -1]), return_sign=True)
        _close(lse.compute(), e_lse, "logsumexp")
        np.testing.assert_array_equal(sign.compute(), e_sign)


def _chunking(draw, n):
    if n == 0:
        return (0,)
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
    edges = [0, *cuts, n]
    return tuple(edges[i + 1] - edges[i] for i in range(len(edges) - 1))


@st.composite
def _cases(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=ndim, max_size=ndim)))
    chunks = tuple(_chunking(draw, n) for n in shape)
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16, np.int16]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * draw(st.sampled_from([1.0, 30.0]))).astype(dtype)
    if dtype != np.int16 and a.size and draw(st.booleans()):
        for v in (np.inf, -np.inf, np.nan):
            if draw(st.booleans()):
                a.flat[rng.integers(a.size)] = v
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.sets(st.integers(0, ndim - 1), min_size=1).map(tuple),
        )
    )
    op = draw(st.sampled_from(sorted(OPS)))
    kw = {"axis": axis, "temperature": draw(st.sampled_from([1.0, 0.5, 3.0]))}
    out_dtype = draw(st.sampled_from([None, None, np.float32, np.float64]))
    if out_dtype is not None:
        kw["dtype"] = out_dtype
    if draw(st.booleans()):
        wshape = shape[draw(st.integers(0, ndim)) :]
        mask = rng.random(wshape) > 0.3
        kw["where"] = mask if draw(st.booleans()) else da.from_array(mask, chunks=2)
    if op == "logsumexp":
        kw["keepdims"] = draw(st.booleans())
        if draw(st.booleans()) and ndim:
            kw["b"] = rng.standard_normal(shape[-1:]) * (rng.random(shape[-1:]) > 0.2)
            kw["return_sign"] = True
    split_every = draw(st.sampled_from([None, 2, 3]))
    return op, a, chunks, kw, split_every


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
# found by hypothesis: the Dask blocks divided float32 x by T in float32, so the
# maximum's argument x/T - m (m: the float64 state) was 1e-6 instead of 0
@example(
    (
        "softmax",
        np.array([-19.553734, -5.241519, 49.91172], dtype=np.float32),
        ((3,),),
        {"axis": None, "temperature": 3.0},
        None,
    )
)
# found by hypothesis: float32 logsumexp of signed weights whose sum cancels to 1.04
# (|log S| = 0.044): the two paths differ by 6e-8, 16 ulp of the result, within the
# absolute contract but not within 4 eps relative
@example(
    (
        "logsumexp",
        np.array([0.34558418, 0.82161814, 0.33043706, -1.3031572, 0.9053559], np.float32),
        ((5,),),
        {
            "axis": None,
            "temperature": 1.0,
            "keepdims": False,
            "b": np.array([0.44637457, -0.53695324, 0.5811181, 0.3645724, 0.2941325]),
            "return_sign": True,
        },
        None,
    )
)
def test_equals_numpy_path_on_random_chunkings(case):
    op, a, chunks, kw, split_every = case
    x = da.from_array(a, chunks=chunks)
    np_kw = {k: (np.asarray(v) if k == "where" else v) for k, v in kw.items()}
    expected = OPS[op](a, **np_kw)
    with dask.config.set(scheduler="sync"):
        got = getattr(_dask, op)(x, split_every=split_every, **kw)
        got = dask.compute(got)[0]
    finite = np.abs(a[np.isfinite(a)]) / kw.get("temperature", 1.0)
    scale = 1.0 + (float(finite.max()) if finite.size else 0.0)
    if "b" in kw:
        # cancellation sum|b e^v| / |S| of the signed weights
        ref_kw = {k: v for k, v in np_kw.items() if k not in ("b", "axis", "return_sign")}
        cond = lse_cancellation(a, kw["b"], kw["axis"], **ref_kw)
        cond = cond[np.isfinite(cond)]
        scale *= max(1.0, float(cond.max()) if cond.size else 1.0)
    if kw.get("return_sign"):
        _close(got[0], expected[0], op, scale)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(expected[1]))
    else:
        _close(got, expected, op, scale)


def test_split_every_config_is_honoured():
    x = da.ones((4, 64), chunks=(4, 1))
    narrow = sk.logsumexp(x, axis=-1)
    with dask.config.set(split_every=2):
        deep = sk.logsumexp(x, axis=-1)
    layers = lambda y: sum("softmaxkit-state" in k for k in y.dask.layers)  # noqa: E731
    assert layers(deep) > layers(narrow)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_allclose(deep.compute(), np.log(64.0) + 1.0, rtol=1e-15)
        np.testing.assert_allclose(narrow.compute(), np.log(64.0) + 1.0, rtol=1e-15)


# ------------------------------------------------------------ a real distributed cluster

MEMORY_LIMIT = 400 * 2**20


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("psutil")
    with warnings.catch_warnings():
        # The scheduler's small HTTP server (health routes) listens on a port of its
        # own choosing: with the dashboard "off" (None) it tried port 8787, and when
        # the other xdist worker's cluster held it, distributed left the failed socket
        # unclosed; its ResourceWarning surfaced in whichever test collected it.
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=MEMORY_LIMIT,
        )
    with cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.mark.slow
def test_cluster_results_equal_numpy(client):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((40, 30, 50)) * 20
    a[3, 4, :] = -np.inf
    a[5, :, 7] = np.inf
    a[6, 2, 9] = np.nan
    mask = rng.random((30, 50)) > 0.2
    b = rng.standard_normal(50)
    x = da.from_array(a, chunks=(16, 7, 9))
    cases = [
        ("softmax", {"axis": (1, 2), "where": mask, "temperature": 2.5}),
        ("log_softmax", {"axis": 0}),
        ("logsumexp", {"axis": None}),
        ("logsumexp", {"axis": (0, 2), "b": b, "keepdims": True, "return_sign": True}),
        ("softmax", {"axis": -1, "dtype": np.float32}),
    ]
    lazy = [OPS[op](x, **kw) for op, kw in cases]
    results = dask.compute(*lazy, scheduler=client)
    for (op, kw), got in zip(cases, results, strict=True):
        expected = OPS[op](a, **kw)
        if kw.get("return_sign"):
            _close(got[0], expected[0], op)
            np.testing.assert_array_equal(got[1], expected[1])
        else:
            _close(got, expected, op)


def _slow_identity(block):
    time.sleep(0.05)
    return block


@pytest.mark.slow
def test_worker_killed_midway_result_still_correct(client):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 4000))
    x = da.from_array(a, chunks=(8, 250)).map_blocks(_slow_identity)  # 128 tasks of 50 ms
    fut = client.compute(sk.softmax(x, axis=-1).sum(axis=-1) + sk.logsumexp(x, axis=-1))
    pids = client.run(os.getpid)
    victim = pids[sorted(pids)[0]]
    # Wait until the victim holds finished results, then kill it without warning.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        held = client.has_what().get(sorted(pids)[0], ())
        if len(held) >= 10 or fut.done():
            break
        time.sleep(0.05)
    assert not fut.done(), "computation finished before the worker could be killed"
    os.kill(victim, signal.SIGKILL)
    got = fut.result(timeout=60)
    np.testing.assert_allclose(got, 1.0 + sk.logsumexp(a, axis=-1), rtol=1e-13)
    assert victim not in client.run(os.getpid).values()  # the nanny started a new process


@pytest.mark.slow
def test_logsumexp_larger_than_cluster_memory(client):
    from softmaxkit.bench.dask import peak_rss, start_peak_sampler

    total_limit = 2 * MEMORY_LIMIT
    rng = da.random.default_rng(20261122)
    x = rng.standard_normal((16384, 16384), chunks=(512, 2048))  # 2 GiB, 8 MiB blocks
    assert x.nbytes > 2 * total_limit
    client.run(start_peak_sampler)
    lse = client.compute(sk.logsumexp(x, axis=-1)).result()
    peaks = client.run(peak_rss)
    assert len(peaks) == 2
    for addr, peak in peaks.items():
        assert 0 < peak < MEMORY_LIMIT, (addr, peak / 2**20)
    head = x[:4].compute(scheduler="sync")  # the same seed regenerates the same rows
    np.testing.assert_allclose(lse[:4], sk.logsumexp(head, axis=-1), rtol=1e-14)
    assert lse.shape == (16384,) and np.all(np.isfinite(lse))


# ------------------------------------------------------------------------------ top-k


def _topk_reference(a, k, axis, temperature=1.0, where=None):
    """Dense softmax, then a stable ranking: NaN first, decreasing x/T, ties by index."""
    p = sk.softmax(a, axis=axis, temperature=temperature, where=where)
    v = a / temperature
    mask = np.ones(a.shape, bool) if where is None else np.broadcast_to(where, a.shape)
    isnan = np.isnan(v) & mask
    key = np.where(isnan, 0.0, np.where(mask, v, -np.inf))
    ax = axis % a.ndim
    idx = np.broadcast_to(
        np.expand_dims(np.arange(a.shape[ax]), tuple(i for i in range(a.ndim) if i != ax)),
        a.shape,
    )

    def mv(t):
        return np.moveaxis(t, ax, -1)

    order = np.lexsort((mv(idx), -mv(key), ~mv(isnan)), axis=-1)[..., :k]
    probs = np.take_along_axis(mv(p), order, -1)
    return np.moveaxis(probs, -1, ax), np.moveaxis(order, -1, ax)


@pytest.mark.parametrize("chunks", [(4, 3), (6, 13), (1, 5)])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("masked", [False, True])
def test_topk_softmax_matches_dense(chunks, axis, masked):
    rng = np.random.default_rng(11)
    a = np.round(rng.standard_normal((6, 13)) * 2, 1)  # rounding makes ties
    a[0, [3, 7]] = 5.0
    a[1] = -np.inf
    a[2, [2, 9]] = np.inf
    a[3, 4] = np.nan
    where = rng.random(a.shape) > 0.3 if masked else None
    if masked:
        where[4] = False
    x = da.from_array(a, chunks=chunks)
    with dask.config.set(scheduler="sync"):
        for k in (0, 1, 3, a.shape[axis]):
            for split_every in (None, 2):
                p, i = _dask.topk_softmax(
                    x, k, axis=axis, where=where, temperature=0.5, split_every=split_every
                )
                ep, ei = _topk_reference(a, k, axis, temperature=0.5, where=where)
                assert p.shape == ep.shape and i.dtype == np.int64 and p.dtype == np.float64
                p, i = dask.compute(p, i)
                np.testing.assert_array_equal(i, ei)
                np.testing.assert_allclose(p, ep, rtol=1e-13, atol=0)


def test_float32_temperature_not_float32():
    # the blocks' state takes T itself, not float32(T) (which shifted m by |m| * 2**-24:
    # 2.8e-5 relative in every probability at |x| ~ 1000, T = 1.3)
    rng = np.random.default_rng(6)
    a = (rng.standard_normal((4, 50)) + 1000).astype(np.float32)
    x = da.from_array(a, chunks=(2, 10))
    with dask.config.set(scheduler="sync"):
        for op in ("softmax", "log_softmax"):
            got = getattr(_dask, op)(x, temperature=1.3).compute()
            _close(got, getattr(sk, op)(a, temperature=1.3), op, scale=1000 / 1.3)


@pytest.mark.parametrize("temperature", [0.7, 1.3, 3.0])
def test_topk_softmax_float32_temperature(temperature):
    # float32 input with T != 1: the candidates' x / T must be rounded like the state's
    # maximum (float64), or the top probability is off by ~|x / T| * 2**-24 relative
    # (1.4e-6 at T = 1.3, and 1.000001 at T = 0.7, before the fix)
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((7, 40)) * 20).astype(np.float32)
    a[0, :3] = [-19.553734, -5.241519, 49.91172]
    x = da.from_array(a, chunks=(3, 9))
    with dask.config.set(scheduler="sync"):
        p, i = dask.compute(*_dask.topk_softmax(x, 3, temperature=temperature))
    ep, ei = sk.topk_softmax(a, 3, temperature=temperature)
    np.testing.assert_array_equal(i, ei)
    _close(p, ep, "softmax")
    assert np.all(p <= 1.0)


def test_topk_softmax_lazy_and_errors():
    x = da.ones((5, 20), chunks=(2, 6), dtype=np.float32)
    with dask.config.set(scheduler=_fail_scheduler):
        p, i = _dask.topk_softmax(x, 4)
        assert p.shape == (5, 4) and p.chunks == ((2, 2, 1), (4,)) and p.dtype == np.float32
        assert i.shape == (5, 4) and i.dtype == np.int64
    with pytest.raises(ValueError, match="k must satisfy"):
        _dask.topk_softmax(x, 21)
    with pytest.raises(ValueError, match="k must satisfy"):
        _dask.topk_softmax(x, -1)
    with pytest.raises(TypeError, match="axis must be an int"):
        _dask.topk_softmax(x, 2, axis=(0, 1))


# ----------------------------------------------------------------------- cross-entropy


def _ce_formula(x, t, *, weight=None, eps=0.0, reduction="mean", z=0.0, T=1.0, where=None):
    """Explicit float64 formula for index targets (rows on axis 0, classes on axis 1).

    loss_i = w_{t_i} sum_c q_ic (-log_softmax(x_i / T)_c) + z lse_i^2 over the counted
    rows (not ignored (t = -100), not empty), q = (1 - eps) onehot(t) + eps / n_included;
    "mean" divides the first sum by sum w_t and the z-term by the count.
    """
    R, C = x.shape
    inc = np.ones(x.shape, bool) if where is None else np.broadcast_to(where, x.shape)
    lp = ref.log_softmax(x, temperature=T, where=inc)
    lse = ref.logsumexp(x, temperature=T, where=inc)
    w = np.ones(C) if weight is None else weight
    parts, zparts, ws = [], [], []
    for i in range(R):
        if t[i] == -100 or lse[i] == -np.inf:
            continue
        q = (1 - eps) * (np.arange(C) == t[i]) + eps * inc[i] / max(inc[i].sum(), 1)
        with np.errstate(invalid="ignore"):
            ce = np.sum(np.where(q != 0, q * -lp[i], 0.0))
        parts.append(w[t[i]] * ce)
        zparts.append(z * lse[i] ** 2)
        ws.append(w[t[i]])
    if reduction == "sum":
        return sum(parts) + sum(zparts)
    return (sum(parts) / sum(ws) if ws else 0.0) + (sum(zparts) / len(ws) if ws else 0.0)


def _ce_case():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 13)) * 3
    x[1] = -np.inf  # empty row: not counted
    t = rng.integers(0, 13, 9)
    t[4] = -100  # ignored
    where = rng.random(x.shape) > 0.25
    where[np.arange(9), np.where(t < 0, 0, t)] = True  # target classes included: finite loss
    return x, t, where, rng.random(13) + 0.5


@pytest.mark.parametrize("chunks", [(4, 5), (9, 13), (2, 1)])
def test_cross_entropy_matches_formula(chunks):
    x, t, where, w = _ce_case()
    xd = da.from_array(x, chunks=chunks)
    with dask.config.set(scheduler="sync"):
        for kw in (
            {},
            {"weight": w, "reduction": "sum"},
            {"eps": 0.2, "z": 1e-2, "T": 2.0},
            {"where": where, "eps": 0.1, "weight": w},
            {"where": where, "z": 0.5, "reduction": "sum"},
        ):
            got = _dask.cross_entropy(
                xd,
                t,
                ignore_index=-100,
                weight=kw.get("weight"),
                label_smoothing=kw.get("eps", 0.0),
                reduction=kw.get("reduction", "mean"),
                z_loss=kw.get("z", 0.0),
                temperature=kw.get("T", 1.0),
                where=kw.get("where"),
                split_every=2,
            )
            assert got.shape == () and got.dtype == np.float64
            np.testing.assert_allclose(got.compute(), _ce_formula(x, t, **kw), rtol=1e-12)


def test_cross_entropy_gradient_central_differences():
    x, t, where, w = _ce_case()
    x = x[[0, 2, 3, 4, 5]]
    t = t[[0, 2, 3, 4, 5]]
    where = where[[0, 2, 3, 4, 5]]
    kw = {"weight": w, "eps": 0.1, "z": 0.05, "T": 1.5, "where": where}
    with dask.config.set(scheduler="sync"):
        loss, grad = _dask.cross_entropy(
            da.from_array(x, chunks=(2, 4)),
            t,
            ignore_index=-100,
            weight=w,
            label_smoothing=0.1,
            z_loss=0.05,
            temperature=1.5,
            where=where,
            return_grad=True,
        )
        loss, grad = dask.compute(loss, grad)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        if not where[idx]:
            continue
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        fd[idx] = (_ce_formula(xp, t, **kw) - _ce_formula(xm, t, **kw)) / (2 * h)
    np.testing.assert_allclose(loss, _ce_formula(x, t, **kw), rtol=1e-12)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert np.all(grad[3] == 0.0)  # the ignored row


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 6, 5)) * 2  # classes on axis 1 (PyTorch's layout)
    t = rng.integers(0, 6, (8, 5))
    t[0, :2] = -100
    y = rng.random((8, 6, 5))
    y /= y.sum(axis=1, keepdims=True)
    w = rng.random(6) + 0.5
    xd = da.from_array(x, chunks=(3, 4, 2))
    with dask.config.set(scheduler="sync"):
        for target, weight, eps, red in (
            (t, w, 0.0, "mean"),
            (t, None, 0.15, "mean"),
            (t, w, 0.0, "none"),
            (y, w, 0.1, "mean"),
            (y, None, 0.0, "sum"),
        ):
            tt = torch.tensor(x, requires_grad=True)
            expected = F.cross_entropy(
                tt,
                torch.tensor(target),
                weight=None if weight is None else torch.tensor(weight),
                ignore_index=-100,
                label_smoothing=eps,
                reduction=red,
            )
            expected.sum().backward()
            loss, grad = _dask.cross_entropy(
                xd,
                target,
                axis=1,
                weight=weight,
                ignore_index=-100,
                label_smoothing=eps,
                reduction=red,
                return_grad=True,
            )
            loss, grad = dask.compute(loss, grad)
            np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-12)
            np.testing.assert_allclose(grad, tt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_cross_entropy_edge_cases_and_errors():
    x = da.from_array(np.arange(12.0).reshape(3, 4), chunks=(2, 3))
    with dask.config.set(scheduler="sync"):
        loss, grad = _dask.cross_entropy(x, [-1, -1, -1], ignore_index=-1, return_grad=True)
        assert loss.compute() == 0.0  # every target ignored: 0, not NaN
        np.testing.assert_array_equal(grad.compute(), 0.0)
        bad = _dask.cross_entropy(x, np.array([0, 1, 7]))  # lazy: raises when computed
        with pytest.raises(ValueError, match=r"target\[2\] = 7 is not a class index in \[0, 4\)"):
            bad.compute()
        with pytest.raises(ValueError, match=r"target\[1\] = 1.5"):
            _dask.cross_entropy(x, np.array([0.0, 1.5, 2.0])).compute()
    with pytest.raises(ValueError, match="target has shape"):
        _dask.cross_entropy(x, np.zeros(4, int))
    with pytest.raises(TypeError, match="integer dtype"):
        _dask.cross_entropy(x, np.zeros(3, bool))
    with pytest.raises(ValueError, match="reduction must be one of"):
        _dask.cross_entropy(x, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        _dask.cross_entropy(x, [0, 1, 2], label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight must have shape"):
        _dask.cross_entropy(x, [0, 1, 2], weight=np.ones(3))
    with pytest.raises(TypeError, match="single int"):
        _dask.cross_entropy(x, [0, 1, 2], axis=(0, 1))
    with dask.config.set(scheduler=_fail_scheduler):
        loss, grad = _dask.cross_entropy(
            x, da.from_array(np.array([0, 1, 2]), chunks=1), reduction="none", return_grad=True
        )
        assert loss.shape == (3,) and grad.shape == (3, 4) and grad.chunks == x.chunks


# ------------------------------------------------------------------------------- VJPs


def _vjp_case():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((6, 9)) * 3
    x[1] = -np.inf
    x[2, 3] = np.inf
    x[3, 4] = np.nan
    where = rng.random(x.shape) > 0.3
    where[5] = False
    g = rng.standard_normal(x.shape)
    g[1, 2] = np.inf  # on an empty row: the VJP is still 0
    return x, where, g


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_softmax_vjps_match_formula(log, masked):
    x, where, g = _vjp_case()
    where = where if masked else None
    fwd = ref.log_softmax if log else ref.softmax
    fn = _dask.log_softmax_vjp if log else _dask.softmax_vjp
    for axis, T in ((-1, 1.0), (0, 2.0), (None, 0.5)):
        y = fwd(x, axis=axis, temperature=T, where=where)
        inc = np.ones(x.shape, bool) if where is None else where
        ax = tuple(range(2)) if axis is None else axis
        with np.errstate(invalid="ignore", over="ignore"):
            if log:
                acc = np.sum(np.where(inc, g, 0.0), axis=ax, keepdims=True)
                e = np.where(inc & np.any(inc & (y != -np.inf), ax, keepdims=True),
                             (g - np.exp(y) * acc) / T, 0.0)  # fmt: skip
            else:
                acc = np.sum(np.where(inc & (y != 0), g * y, 0.0), axis=ax, keepdims=True)
                e = np.where(inc & (y != 0), y * (g - acc) / T, 0.0)
        with dask.config.set(scheduler="sync"):
            got = fn(da.from_array(y, chunks=(2, 4)), g, axis=axis, temperature=T, where=where)
            got = got.compute()
        np.testing.assert_allclose(got, e, rtol=1e-13, atol=1e-15)
        if axis == -1:
            assert np.all(got[1] == 0.0)  # empty row, even where g is inf


def test_vjps_match_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7, 3)) * 2
    g = rng.standard_normal(x.shape)
    gl = rng.standard_normal((5, 3))
    b = rng.random((7, 1)) + 0.1  # broadcasts along the class axis 1
    xd = da.from_array(x, chunks=(2, 3, 2))
    for fwd, vjp in (
        (torch.softmax, _dask.softmax_vjp),
        (torch.log_softmax, _dask.log_softmax_vjp),
    ):
        tx = torch.tensor(x, requires_grad=True)
        y = fwd(tx / 1.5, dim=1)
        y.backward(torch.tensor(g))
        with dask.config.set(scheduler="sync"):
            got = vjp(da.from_array(y.detach().numpy(), chunks=(2, 3, 2)), g, axis=1,
                      temperature=1.5).compute()  # fmt: skip
        np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
    for weights in (None, b):
        tx = torch.tensor(x, requires_grad=True)
        bt = 1.0 if weights is None else torch.tensor(weights)[None]
        lse = torch.log(torch.sum(bt * torch.exp(tx / 0.7), dim=1))
        lse.backward(torch.tensor(gl))
        with dask.config.set(scheduler="sync"):
            got = _dask.logsumexp_vjp(xd, gl, axis=1, b=weights, temperature=0.7).compute()
        np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ public dispatch


def test_public_functions_dispatch_dask_arrays():
    """Every public function with a Dask path returns a lazy result equal to NumPy's."""
    import softmaxkit as sk

    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 10))
    d = da.from_array(x, chunks=(3, 4))
    t = np.arange(6) % 10
    y = sk.softmax(x)
    g = rng.standard_normal((6, 10))
    cases = [
        (sk.topk_softmax(d, 3)[0], sk.topk_softmax(x, 3)[0]),
        (sk.cross_entropy(d, t), sk.cross_entropy(x, t)),
        (sk.softmax_vjp(da.from_array(y, chunks=(3, 4)), g), sk.softmax_vjp(y, g)),
        (
            sk.log_softmax_vjp(da.from_array(np.log(y), chunks=(3, 4)), g),
            sk.log_softmax_vjp(np.log(y), g),
        ),
        (sk.logsumexp_vjp(d, np.ones(6)), sk.logsumexp_vjp(x, np.ones(6))),
    ]
    for lazy, eager in cases:
        assert isinstance(lazy, da.Array)
        np.testing.assert_allclose(lazy.compute(scheduler="sync"), eager, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_logsumexp_log1p_split(chunk):
    # the Dask state carries the eager kernels' log1p split: a dominant maximum plus
    # tiny terms keeps its relative accuracy (logsumexp([0, -40]) = 4.25e-18, not 0)
    rows = np.array(
        [
            [0.0, -40.0, -50.0, -38.0, -60.0],
            [-45.0, 0.0, -40.0, -np.inf, -39.0],
            [0.0, 0.0, -40.0, -45.0, -np.inf],
            [1e300, -1.0, 0.0, 3.0, 1e300],
            [-np.inf] * 5,
            [2.0, 1.0, np.nan, 0.0, -1.0],
            [np.inf, 0.0, -40.0, 1.0, 2.0],
        ]
    )
    x = da.from_array(rows, chunks=(3, chunk))
    for kw in ({}, {"temperature": 3.0}, {"b": np.array([1.0, 2.0, 0.5, 1.0, 3.0])}):
        got = sk.logsumexp(x, axis=-1, **kw).compute()
        want = sk.logsumexp(rows, axis=-1, **kw)
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(float).eps, atol=0)
    assert sk.logsumexp(da.from_array(np.array([0.0, -40.0]), chunks=1)).compute() == (
        4.248354255291589e-18
    )


def test_unknown_chunk_sizes_are_named():
    x = da.from_array(np.arange(24.0).reshape(6, 4), chunks=(3, 4))
    y = x[x[:, 0] > -1]  # boolean indexing: chunk sizes (nan, nan)
    calls = [
        (lambda: sk.cross_entropy(y, np.zeros(6, int)), "logits"),
        (lambda: sk.logsumexp(x, b=y), "b"),
        (lambda: sk.softmax(x, where=y > 0), "where"),
        (lambda: sk.logsumexp_vjp(y, 1.0, axis=None), "x"),
    ]
    for call, name in calls:
        with pytest.raises(
            ValueError, match=rf"{name} has unknown chunk sizes.*compute_chunk_sizes"
        ):
            call()
