"""softmaxkit.sample's fast route (``sampling._sample_fast`` ->
``_kernels.sampling.entry.sample_serial``): plain-int calls on C-contiguous
float32/float64 arrays along the last axis reach the serial kernel through a few
Python calls.  The tokens and the errors must be exactly those of the generic route
(``sampling.FAST_PATH = False``) for the same seed, on adversarial rows; and the
branch-free band compaction of the top-p threshold search (``top_p._band_compact``)
must be the masked selection, in order."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import sampling
from softmaxkit._kernels import sampling as kern
from softmaxkit._kernels.sampling import chunked, fast, top_p


def _routes(x, **kw):
    """(fast route, generic route) results of ``sample`` and how many calls were
    sampled by ``sample_serial`` (the package's name, which ``sampling`` calls)."""
    calls = []
    real = kern.sample_serial

    def counting(*a):
        res = real(*a)
        calls.append(res is not None)  # the call sampled there
        return res

    try:
        kern.sample_serial = counting
        sampling.FAST_PATH = True
        a = sk.sample(x, **kw)
        sampling.FAST_PATH = False
        b = sk.sample(x, **kw)
    finally:
        sampling.FAST_PATH = True
        kern.sample_serial = real
    return a, b, sum(calls)


def _rows(kind: str, rows: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)) * [0.5, 3.0, 8.0][seed % 3]
    if kind == "ties":
        x = np.round(x)  # exact ties at the top-p / top-k / min-p thresholds
    elif kind == "coarse":
        x = np.round(x / 4.0)  # a few distinct values: big tie groups
    elif kind == "-inf":
        x[rng.random(x.shape) < 0.3] = -np.inf
        x[:, 0] = 0.0  # every row keeps a finite entry
    elif kind == "+inf":
        x[:, rng.integers(0, n, 3)] = np.inf  # tie mode: uniform over the +inf
    elif kind == "one":
        x[:] = -np.inf
        x[:, n // 2] = 1.0  # a single candidate per row
    return x


KINDS = ["normal", "ties", "coarse", "-inf", "+inf", "one"]
SETTINGS = [
    {"top_p": 0.9},
    {"top_p": 1e-9},  # the maximum (and its ties) alone
    {"top_p": 0.999999},
    {"top_p": 1.0},
    {"top_p": 0.5, "temperature": 1e-6},
    {"top_p": 0.5, "temperature": 1e6},
    {"top_p": 0.7, "temperature": 0.37},
    {"temperature": 0.0},
    {},
    {"top_k": 5},
    {"top_k": 300},  # the large-K selection
    {"top_k": 40, "top_p": 0.8, "min_p": 0.05},
    {"min_p": 0.2},
    {"top_p": 0.9, "num_samples": 3, "row_offset": 17},
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_route_gives_the_generic_tokens(kind, dtype):
    for q, kw in enumerate(SETTINGS):
        for rows, n in ((3, 1000), (1, fast.FAST_MIN + 777)):
            x = _rows(kind, rows, n, 31 * q + rows).astype(dtype)
            a, b, calls = _routes(x, seed=12345 + q, **kw)
            assert calls == 1, (kind, kw)
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} {kw} {dtype} [{rows}, {n}]")
            assert a.dtype == np.int64 and a.shape == (rows, kw.get("num_samples", 1))


@pytest.mark.parametrize("mode", ["serial", "chunked"])
def test_fast_route_single_long_row_either_chooser_path(monkeypatch, mode):
    # one long top-p row: the chunked-or-serial choice is made in sample_serial
    monkeypatch.setattr(chunked.CHOOSER, "mode", mode)
    nt = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        for seed in range(4):
            x = _rows(["normal", "ties"][seed % 2], 1, 4 * chunked.CHUNK_MIN, seed)
            a, b, calls = _routes(x.astype(np.float32), top_p=0.9, seed=seed)
            assert calls == 1
            np.testing.assert_array_equal(a, b)
    finally:
        numba.set_num_threads(nt)


def test_fast_route_shapes():
    # 1-d, 3-d and axis=ndim-1 spelled out: the batch shape comes back
    x = _rows("normal", 6, 500, 4)
    for arr, kw in ((x[0], {}), (x.reshape(2, 3, 500), {}), (x.reshape(2, 3, 500), {"axis": 2})):
        a, b, calls = _routes(arr, top_p=0.8, seed=9, num_samples=2, **kw)
        assert calls == 1
        assert a.shape == (*arr.shape[:-1], 2)
        np.testing.assert_array_equal(a, b)


def test_fast_route_declines_other_calls():
    # each goes to the generic route (sample_serial not called), with its tokens
    x = _rows("normal", 4, 300, 5)
    cases = [
        (np.asfortranarray(x), {}),
        (x.astype(np.float16), {}),
        (np.round(x).astype(np.int64), {}),
        (x.T.copy(), {"axis": 0}),
        (x, {"seed": np.int64(7)}),
        (x, {"num_samples": np.int64(2)}),
        (x, {"row_offset": np.int64(2)}),
        (x[:0], {}),
    ]
    for arr, kw in cases:
        kw = {"seed": 7, **kw}
        a, b, calls = _routes(arr, top_p=0.9, **kw)
        assert calls == 0, kw
        np.testing.assert_array_equal(a, b)
    # the log-probs and a fresh seed skip it too
    a, b, calls = _routes(x, top_p=0.9, seed=3, return_logprobs=True)
    assert calls == 0
    np.testing.assert_array_equal(a[0], b[0])
    _, _, calls = _routes(x, top_p=0.9)
    assert calls == 0


@pytest.mark.parametrize("bad", ["nan", "-inf"])
def test_fast_route_names_the_bad_row(bad):
    x = _rows("normal", 5, 2000, 6).astype(np.float32)
    if bad == "nan":
        x[3, 17] = np.nan
    else:
        x[3] = -np.inf
    msgs = []
    for flag in (True, False):
        sampling.FAST_PATH = flag
        try:
            with pytest.raises(ValueError, match="row 3") as exc:
                sk.sample(x, top_p=0.9, seed=1)
            msgs.append(str(exc.value))
        finally:
            sampling.FAST_PATH = True
    assert msgs[0] == msgs[1]


def test_fast_route_bad_arguments_raise_as_before():
    x = _rows("normal", 2, 100, 7)
    for kw, err in (
        ({"top_p": 0.0}, ValueError),
        ({"top_p": 1.5}, ValueError),
        ({"top_k": 0}, ValueError),
        ({"min_p": -0.1}, ValueError),
        ({"temperature": -1.0}, ValueError),
        ({"temperature": float("nan")}, ValueError),
        ({"seed": -1}, ValueError),
        ({"seed": 1 << 64}, ValueError),
        ({"num_samples": 0}, ValueError),
        ({"row_offset": -1}, ValueError),
        ({"seed": True}, TypeError),
        ({"axis": 1.0}, TypeError),
        ({"top_k": 2.5}, TypeError),
    ):
        kw = {"seed": 1, **kw}
        with pytest.raises(err) as e1:
            sk.sample(x, **kw)
        sampling.FAST_PATH = False
        try:
            with pytest.raises(err) as e2:
                sk.sample(x, **kw)
        finally:
            sampling.FAST_PATH = True
        assert str(e1.value) == str(e2.value), kw


def test_band_compact_is_the_masked_selection():
    rng = np.random.default_rng(8)
    for trial in range(200):
        L = int(rng.integers(0, 600))
        wv = np.round(rng.standard_normal(L + 5) * 3)  # ties at both band ends
        ww = rng.random(L + 5)
        a, b = sorted(rng.choice(np.arange(-4.0, 5.0), 2, replace=False))
        if trial % 7 == 0:
            b = np.inf
        sel = (wv[:L] >= a) & (wv[:L] < b)
        nv, nw = top_p._band_compact(wv, ww, L, a, b, int(sel.sum()))
        assert nv.shape[0] == sel.sum() + 1
        np.testing.assert_array_equal(nv[:-1], wv[:L][sel])
        np.testing.assert_array_equal(nw[:-1], ww[:L][sel])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_nan_integer_keys_edge_values(dtype):
    """``scan._max_nan`` by integer keys (``_key_max``): NaN of either sign and with
    payloads (above +inf or below -inf as keys), +-0, subnormals, +-inf, all -inf or
    all +inf rows, at every position of a short row and in a long one."""
    from softmaxkit._kernels.sampling import scan

    ity = np.int32 if dtype == np.float32 else np.int64
    neg_nan = -np.array([np.nan], dtype=dtype)  # the sign bit set
    assert np.signbit(neg_nan[0])
    payload = np.array([np.nan], dtype=dtype)
    payload.view(ity)[0] |= 5
    tiny = np.finfo(dtype).smallest_subnormal
    specials = [neg_nan[0], payload[0], np.nan, -0.0, 0.0, tiny, -tiny, np.inf, -np.inf]
    rng = np.random.default_rng(11)
    rows = [np.full(37, -np.inf, dtype), np.full(37, np.inf, dtype), np.array([-0.0], dtype)]
    for n in (1, 5, 37, 1000):
        base = (rng.standard_normal(n) * 1e-30).astype(dtype)  # near 0: sign matters
        for v in specials:
            for p in {0, n // 2, n - 1}:
                x = base.copy()
                x[p] = v
                rows.append(x)
    for x in rows:
        mx, nan = scan._max_nan(x)
        assert nan == bool(np.isnan(x).any())
        want = np.max(x[~np.isnan(x)]) if not np.isnan(x).all() else -np.inf
        assert mx == want, (x, mx, want)


def test_warm_routes_skip_the_generic_route_only_once_run(monkeypatch):
    """A call skips the generic route (its cold-start handling) only for a route
    ``(dtype, aligned, chunked)`` that has run in this process: the first call of a key
    goes through ``sampling._sample`` and marks it.  A read-only input takes the route
    of a writable one: the kernel gets both as a read-only view (one compiled
    variant, ``_kernels.view.readonly``)."""
    from softmaxkit._kernels.sampling import entry

    monkeypatch.setattr(entry, "WARM", set())
    seen = []
    real = kern.sample_serial

    def spy(*a):
        res = real(*a)
        seen.append((a[-1], res is not None))  # (warm_only, sampled)
        return res

    monkeypatch.setattr(kern, "sample_serial", spy)
    x = _rows("normal", 2, 500, 12)
    ro = x.copy()
    ro.flags.writeable = False
    cold = [(True, False), (False, True)]  # the warm route declines, the generic samples
    warm = [(True, True)]
    want = sk.sample(x, top_p=0.9, seed=5, return_logprobs=True)[0]  # no sample_serial
    for arr, expect in ((x, cold), (x, warm), (ro, warm), (x, warm)):
        seen.clear()
        np.testing.assert_array_equal(sk.sample(arr, top_p=0.9, seed=5), want)
        assert seen == expect
    assert entry.WARM == {(x.dtype.char, True, False)}  # one route for both inputs
    xu = np.empty(x.size * 8 + 1, np.uint8)[1:].view(x.dtype).reshape(x.shape)  # unaligned
    xu[...] = x
    for expect in (cold, warm):
        seen.clear()
        np.testing.assert_array_equal(sk.sample(xu, top_p=0.9, seed=5), want)
        assert seen == expect


def test_forced_cold_calls_take_the_twin_even_when_warm():
    """``coldstart._FORCE`` (a cold cache, as the tests force it) must reach the
    generic route's fallback even for a warm route."""
    from softmaxkit._core import coldstart

    x = _rows("normal", 2, 500, 13)
    a = sk.sample(x, top_p=0.9, seed=5)  # warm now
    sk.softmax(np.ones(3))  # an unforced call: fell_back() False
    assert not coldstart.fell_back()
    coldstart._FORCE = True
    try:
        b = sk.sample(x, top_p=0.9, seed=5)
        assert coldstart.fell_back()
    finally:
        coldstart._FORCE = False
    np.testing.assert_array_equal(a, b)  # the twin's tokens are the kernel's


def test_inline_filters_are_what_filters_returns():
    """The fast route's inline reading of (temperature, top_p) for plain floats is
    ``sampleargs._filters``' result: compared through the tokens at knife-edge values."""
    x = _rows("ties", 3, 2000, 14)
    for t in (1, 1.0, 0.5, 3, 1e-300, 1e300, 5e-324):
        for p in (None, 1.0, 0.5, 1e-300, float(np.nextafter(1.0, 0.0))):
            a, b, calls = _routes(x, temperature=t, top_p=p, seed=8)
            assert calls == 1
            np.testing.assert_array_equal(a, b, err_msg=f"{t} {p}")


def test_estimate_is_at_or_above_the_bound():
    """``fast._estimate`` (mid-band weights) never gives a deeper depth than
    ``top_p._refine`` (floor weights) on the same counts: 500 random count tables."""
    rng = np.random.default_rng(15)
    nb = top_p._NB
    for _ in range(500):
        dup = -rng.uniform(1, 8)
        dlo = dup - rng.uniform(1.01, 6)
        t = dup - (dup - dlo) * np.arange(nb + 1) / nb
        cnt = np.sort(rng.integers(0, 5000, (int(rng.integers(1, 5)), nb + 1)), axis=1)
        mup = rng.uniform(0, 2)
        target = mup + rng.uniform(0, 3) * cnt.sum() * np.exp(dlo)
        assert fast._estimate(t, cnt, mup, target) >= top_p._refine(t, cnt, mup, target)


def _snapped(seed: int, P: float = 0.9) -> np.ndarray:
    """std-3 normal logits with every entry of the top-p bracket moved to just above
    the floor of its band: ``_estimate``'s mid-band weights then overstate the mass
    and its depth misses the threshold."""
    from softmaxkit._kernels.sampling.scan import _LEV

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(1 << 17) * 3).astype(np.float32)
    nb = top_p._NB
    for _ in range(3):  # the bracket moves with the mass; a few rounds settle it
        m = float(x.max())
        X = np.array([m + lv for lv in _LEV], dtype=np.float32)
        lev = np.empty(len(_LEV))
        s2 = fast._mass32(x, np.float32(m), np.empty_like(x), X, lev)
        _, dlo, dup, _ = top_p._bracket(x.size, m, s2, lev, P)
        d = x.astype(np.float64) - m
        inside = (d < dup) & (d > dlo)
        k = np.ceil((dup - d[inside]) / ((dup - dlo) / nb))
        x[inside] = (m + (dup - (dup - dlo) * k / nb) + 1e-4).astype(np.float32)
    return x


def test_a_missed_estimate_is_certified_with_the_bound():
    """Rows where the estimate is above the threshold: ``_top_p_spec`` still certifies
    the serial path's threshold (second try with the bound), and the tokens are the
    serial path's."""
    from softmaxkit._kernels.sampling import entry

    retried = 0
    for seed in range(5):
        x = _snapped(seed)
        n = x.size
        m = float(x.max())
        X = np.array([m + lv for lv in (-1.5, -3.0, -5.0, -8.0)], dtype=np.float32)
        lev = np.empty(4)
        s2 = fast._mass32(x, np.float32(m), np.empty_like(x), X, lev)
        _, xest = fast._lower_bounds(x, m, s2, lev, 0.9)
        ci, cv, cw = np.empty(n, np.int64), np.empty(n), np.empty(n)
        ok, theta, _ = fast._top_p_spec(x, m, 0.9, ci, cv, cw, np.empty_like(x))
        assert ok
        tokens = np.zeros((1, 5), dtype=np.int64)
        info = np.full((1, 4), np.nan)
        entry.FAST_TOP_P = False
        try:
            entry.sample_rows(
                x[None], 1.0, False, 0, 0.9, -np.inf, 5, np.uint64(seed), 0, False, tokens, info
            )
        finally:
            entry.FAST_TOP_P = True
        assert theta == info[0, 1]
        retried += bool(xest > theta)
        np.testing.assert_array_equal(sk.sample(x, top_p=0.9, seed=seed, num_samples=5), tokens[0])
    assert retried >= 2  # the second try was needed


def test_estimate_holds_on_smooth_rows():
    """On smooth logits (normal, several scales; Gumbel) the estimate is at or below
    the threshold, so the first try is certified: fewer candidates and no second try
    (a speed property, on fixed seeds)."""
    from softmaxkit._kernels.sampling.scan import _LEV

    rng = np.random.default_rng(16)
    rows = [rng.standard_normal(1 << 17) * s for s in (1.0, 2.0, 3.0, 5.0)]
    rows.append(rng.gumbel(size=1 << 17) * 3)
    for x in rows:
        x = x.astype(np.float32)
        m = float(x.max())
        X = np.array([m + lv for lv in _LEV], dtype=np.float32)
        lev = np.empty(len(_LEV))
        s2 = fast._mass32(x, np.float32(m), np.empty_like(x), X, lev)
        xlo, xest = fast._lower_bounds(x, m, s2, lev, 0.9)
        theta = x[sk.sampling_probs(x, top_p=0.9) > 0].min()
        assert xlo <= xest <= theta


def test_min_finite_is_the_minimum():
    """``top_p._min_finite`` (integer keys) = ``min`` of the first ``C`` values: random
    lengths and prefixes, negative and positive, +-0, subnormals, -inf, ``C = 0``."""
    rng = np.random.default_rng(17)
    tiny = np.finfo(np.float64).smallest_subnormal
    assert top_p._min_finite(np.empty(3), 0) == np.inf
    for _ in range(300):
        n = int(rng.integers(1, 300))
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300)
        k = int(rng.integers(0, 4))
        v[rng.integers(0, n, k)] = rng.choice([0.0, -0.0, tiny, -tiny, -np.inf, 1e308], k)
        C = int(rng.integers(1, n + 1))
        assert top_p._min_finite(v, C) == v[:C].min()
