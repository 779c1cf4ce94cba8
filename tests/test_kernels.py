"""The fused kernels (``_kernels/rows/``, ``cols.py``, ``exp.py``) against the float64
reference twin, across every kernel path: short-row tiles, regular rows, store-then-scale
rows, long rows split into parallel chunks, column kernels, the layout fallback copy."""

from __future__ import annotations

import tracemalloc

import numba
import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference as ref
from softmaxkit._core.buffers import HUGE_PAGE
from softmaxkit._core.state import chunk_state
from softmaxkit._kernels import _parallel, rows
from softmaxkit._kernels.exp import exp_array
from softmaxkit._kernels.logsum import log_sum_array
from softmaxkit.drivers import eager as _eager

RNG = np.random.default_rng(12345)
_RUN = _parallel.run

# One input per kernel path (shape, axis); sizes are chosen to cross the thresholds:
# PAR_MIN (threads), SHORT (tiles), L2_ROW, CHUNK_MIN (split rows), column kernels.
PATHS = {
    "tiny-rows": ((7, 5), -1),
    "short-tiles": ((3000, 40), -1),  # softmax: the row kernel (n >= SHORT_STORE)
    "short-tiles-10": ((20000, 10), -1),
    "rows": ((40, 3000), -1),
    "mid-rows": ((600, 128), -1),
    "long-rows-split": ((2, 600_000), -1),
    "long-rows-whole": ((16, 70_001), -1),  # longer than L2_ROW, enough rows: not split
    "huge-row-split": ((1, 1_100_000), -1),
    "cols-axis0": ((700, 300), 0),
    "cols-middle": ((3, 400, 90), 1),
    "cols-split": ((6000, 200), 0),
    "tuple-trailing": ((6, 7, 50), (1, 2)),
    "tuple-split-copy": ((6, 7, 50), (0, 2)),
    "all-axes": ((30, 40), None),
}


def _x(shape, dtype, scale=5.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def _check(ours, want, dtype, op):
    ours = np.asarray(ours, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert ours.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(ours), nan)
    inf = np.isinf(want)
    np.testing.assert_array_equal(ours[inf], want[inf])
    ok = ~(nan | inf)
    o, w = ours[ok], want[ok]
    if op == "softmax":
        # the contract: relative where p >= 1e-6 (float16: 1e-3), absolute below
        rtol, floor = {
            np.float64: (1e-13, 1e-300),
            np.float32: (2e-6, 1e-6),
            np.float16: (2e-3, 1e-3),
        }[dtype]
        big = w >= floor
        assert np.all(np.abs(o[big] - w[big]) <= rtol * w[big])
        assert np.all(np.abs(o[~big] - w[~big]) <= (1e-12 if dtype != np.float16 else 1e-3))
    else:
        tol = {np.float64: 1e-13, np.float32: 1e-6, np.float16: 2e-3}[dtype]
        assert np.all(np.abs(o - w) <= tol * (1 + np.abs(w)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("path", list(PATHS))
def test_paths_match_reference(path, dtype):
    shape, axis = PATHS[path]
    x = _x(shape, dtype)
    for op in ("softmax", "log_softmax", "logsumexp"):
        _check(getattr(sk, op)(x, axis=axis), getattr(ref, op)(x, axis=axis), dtype, op)


@pytest.mark.parametrize(
    "path", ["short-tiles", "mid-rows", "rows", "long-rows-split", "cols-axis0"]
)
def test_temperature_mask_and_weights(path):
    shape, axis = PATHS[path]
    for dtype in (np.float32, np.float64):
        x = _x(shape, dtype)
        where = RNG.random(shape) > 0.3
        bshape = list(shape)
        bshape[0] = 1  # broadcast weights
        # weights >= 0 here: with mixed signs the sum cancels and no float32 bound
        # holds (see test_negative_weights)
        b = RNG.random(bshape) + 0.1
        b[..., ::3] = 0.0
        for T in (1.0, 0.37, 25.0):
            kw = {"axis": axis, "temperature": T, "where": where}
            for op in ("softmax", "log_softmax"):
                _check(getattr(sk, op)(x, **kw), getattr(ref, op)(x, **kw), dtype, op)
                # and unmasked (the store / small-row paths take no mask)
                kw0 = {"axis": axis, "temperature": T}
                _check(getattr(sk, op)(x, **kw0), getattr(ref, op)(x, **kw0), dtype, op)
            got, gs = sk.logsumexp(x, b=b, return_sign=True, **kw)
            want, ws = ref.logsumexp(x, b=b, return_sign=True, **kw)
            _check(got, want, dtype, "logsumexp")
            np.testing.assert_array_equal(gs, ws)


def test_negative_weights():
    for shape, axis in (PATHS["rows"], PATHS["cols-axis0"], PATHS["long-rows-split"]):
        x = _x(shape, np.float64)
        b = RNG.standard_normal(shape)
        got, gs = sk.logsumexp(x, axis=axis, b=b, return_sign=True)
        want, ws = ref.logsumexp(x, axis=axis, b=b, return_sign=True)
        np.testing.assert_array_equal(gs, ws)
        np.testing.assert_allclose(got, want, rtol=1e-10)
        assert np.all(np.isnan(sk.logsumexp(x, axis=axis, b=b)[ws < 0]))


def _special_rows(n, dtype):
    x = _x((9, n), dtype)
    x[0, n // 3] = np.nan  # NaN row
    x[1] = -np.inf  # all -inf
    x[2, 1] = np.inf  # one +inf
    x[3, [0, n - 1]] = np.inf  # two +inf
    x[4, 0] = np.nan  # NaN and +inf: NaN wins
    x[4, 1] = np.inf
    x[5] = 3.0  # all ties
    x[6, n - 1] = 200.0  # one dominant value (log1p path)
    x[7, :] = -np.inf  # -inf row then a finite one (max grows from -inf)
    x[7, n - 1] = 1.0
    return x


@pytest.mark.parametrize("n", [5, 200, 5000, 100_000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_rows(n, dtype):
    """The edge-case contract in every row-kernel path (tiles, rows, store, split)."""
    x = _special_rows(n, dtype)
    with np.errstate(all="raise"):  # no floating-point warning escapes
        for op in ("softmax", "log_softmax", "logsumexp"):
            _check(getattr(sk, op)(x), getattr(ref, op)(x), dtype, op)
            # the same rows as columns (axis 0 of the transposed C copy)
            xt = np.ascontiguousarray(x.T)
            _check(getattr(sk, op)(xt, axis=0), getattr(ref, op)(xt, axis=0), dtype, op)


@pytest.mark.parametrize(
    "dtype, n",
    [(np.float32, n) for n in (23, 24, 40, 48, 49, 128, 256, 257)]
    + [(np.float64, n) for n in (31, 32, 100, 128, 129)],
)
def test_log_softmax_rows_one_at_a_time(monkeypatch, dtype, n):
    """log_softmax of rows of ``LOG_ROWS_N`` values runs one row at a time
    (``log_softmax_rows_range``, the write of row i - 1 after the sum of row i):
    special rows among finite ones, temperatures, in place, ``out=``; and the same
    rows through the groups / tiles it replaced (``LOG_ROWS`` off).  float32
    logsumexp of rows of 24-48 takes the row kernel instead of the tiles."""
    lo, hi = rows.entry.LOG_ROWS_N[np.dtype(dtype).itemsize]
    used = []

    def spy(kernel, *args, **kw):
        used.append(kernel.py_func.__name__ if hasattr(kernel, "py_func") else "")
        return _RUN(kernel, *args, **kw)

    monkeypatch.setattr(_parallel, "run", spy)
    x = np.concatenate([_special_rows(n, dtype), _x((40, n), dtype)])
    for T in (1.0, 0.37, 25.0, 1e-3):
        want = ref.log_softmax(x, temperature=T)
        with np.errstate(all="raise"):
            for flag in (True, False):
                monkeypatch.setattr(rows.entry, "LOG_ROWS", flag)
                used.clear()
                _check(sk.log_softmax(x, temperature=T), want, dtype, "log_softmax")
                assert ("log_softmax_rows_range" in used) == (flag and lo <= n <= hi), used
                out = np.full_like(x, 7.0)
                assert sk.log_softmax(x, temperature=T, out=out) is out
                _check(out, want, dtype, "log_softmax")
                y = x.copy()
                sk.log_softmax(y, temperature=T, out=y)
                _check(y, want, dtype, "log_softmax")
                # float32 logsumexp of rows of 24-48: the row kernel, not the tiles
                used.clear()
                got = sk.logsumexp(x, axis=-1, temperature=T)
                _check(got, ref.logsumexp(x, axis=-1, temperature=T), dtype, "logsumexp")
                rows32 = flag and dtype == np.float32 and 24 <= n
                tiles = n <= rows.tiles.SHORT and not rows32
                assert ("logsumexp_short_range" in used) == tiles, used


@pytest.mark.parametrize("n", [10, 128, 3000, 70_000])
def test_masked_logsumexp_copy(monkeypatch, n):
    """float32 logsumexp with a mask (no weights) folds the mask into a scratch copy of
    each group of rows (``where(m, x, -inf)``) and runs the unmasked group code: masked
    NaN / +inf excluded, fully masked rows -inf, unmasked specials kept, signs, every
    mask layout; against the masked two-pass code (``MASK_COPY`` off) and the
    reference.  Rows longer than ``L2_ROW`` keep the two-pass code."""
    used = []
    run_masked = rows.entry._run  # the runner of the kernels that take a mask

    def spy(kernel, *args, **kw):
        used.append(kernel.py_func.__name__)
        return run_masked(kernel, *args, **kw)

    monkeypatch.setattr(rows.entry, "_run", spy)
    x = np.concatenate([_special_rows(n, np.float32), _x((30, n), np.float32)])
    m = RNG.random(x.shape) < 0.7
    m[0, n // 3] = False  # the NaN masked: a finite row
    m[2, 1] = False  # the one +inf masked
    m[9] = False  # a fully masked row
    m[5, :] = True
    masks = {"full": m, "rows": np.broadcast_to(m[10:11], x.shape), "F": np.asfortranarray(m)}
    for name, mk in masks.items():
        for T in (1.0, 0.37, 25.0):
            want, ws = ref.logsumexp(x, axis=-1, where=mk, temperature=T, return_sign=True)
            for flag in (True, False):
                monkeypatch.setattr(rows.entry, "MASK_COPY", flag)
                used.clear()
                got, gs = sk.logsumexp(x, axis=-1, where=mk, temperature=T, return_sign=True)
                _check(got, want, np.float32, "logsumexp")
                np.testing.assert_array_equal(gs, ws)
                copied = "logsumexp_masked_range" in used
                assert copied == (flag and n <= rows.store.L2_ROW), (name, used)


def test_special_rows_split_chunks():
    """A +inf / NaN / dominant value in a later chunk of a split row."""
    n = 1_100_000
    for pos, val in [(n - 5, np.inf), (n - 5, np.nan), (n - 5, 1e4), (10, 1e4)]:
        x = _x((1, n), np.float32)
        x[0, pos] = val
        for op in ("softmax", "log_softmax", "logsumexp"):
            _check(getattr(sk, op)(x), getattr(ref, op)(x), np.float32, op)


def test_log1p_dominant():
    """log S = log1p(r) when one maximum dominates: exp(-40) survives next to 1."""
    # every row path: the tiny path (3), short-row tiles (20), rows of one block (100,
    # 2000), of several blocks (5000), split rows (600_000)
    for dtype, n in [(np.float64, k) for k in (3, 20, 100, 2000, 5000, 600_000)]:
        x = np.full((1, n), -40.0, dtype=dtype)
        x[0, 0] = 0.0
        want = np.log1p((n - 1) * np.exp(-40.0))
        got = sk.logsumexp(x)[0]
        assert got == pytest.approx(want, rel=1e-13, abs=0)
        assert sk.log_softmax(x)[0, 0] == pytest.approx(-want, rel=1e-13, abs=0)


@pytest.mark.parametrize("layout", ["F", "strided", "negative", "readonly", "transposed-3d"])
def test_layouts(layout):
    base = _x((64, 3000), np.float32)
    if layout == "F":
        x = np.asfortranarray(base)
    elif layout == "strided":
        x = base[::2, ::3]
    elif layout == "negative":
        x = base[::-1, ::-1]
    elif layout == "readonly":
        x = base.copy()
        x.flags.writeable = False
    else:
        x = _x((20, 30, 40), np.float32).transpose(2, 0, 1)
    for axis in (-1, 0, (0, 1) if x.ndim == 2 else (0, 2)):
        for op in ("softmax", "log_softmax", "logsumexp"):
            _check(getattr(sk, op)(x, axis=axis), getattr(ref, op)(x, axis=axis), np.float32, op)


def test_out_layouts_and_inplace():
    x = _x((300, 700), np.float64)
    want = ref.softmax(x, axis=0)
    for out in (np.empty_like(x), np.empty_like(x, order="F"), np.empty((700, 300)).T):
        res = sk.softmax(x, axis=0, out=out)
        assert res is out
        _check(out, want, np.float64, "softmax")
    y = x.copy()
    sk.log_softmax(y, axis=1, out=y)
    _check(y, ref.log_softmax(x, axis=1), np.float64, "log_softmax")
    z = x.copy()
    sk.softmax(z, out=z.T.T)  # same memory, same view
    _check(z, ref.softmax(x), np.float64, "softmax")


def test_float16_in_kernel_and_output_dtypes():
    x = _x((50, 3000), np.float16, scale=3.0)
    _check(sk.softmax(x), ref.softmax(x), np.float16, "softmax")
    assert sk.softmax(x).dtype == np.float16
    _check(sk.softmax(x, dtype=np.float32), ref.softmax(x), np.float32, "softmax")
    x64 = _x((50, 3000), np.float64)
    got = sk.log_softmax(x64, dtype=np.float16)
    assert got.dtype == np.float16
    # one rounding of the float64 result (NumPy's cast), so at most 1 float16 ulp apart
    want = ref.log_softmax(x64).astype(np.float16)
    assert np.all(np.abs(got.astype(np.float64) - want) <= np.spacing(want))


def test_thread_count_follows_numba():
    x = _x((3, 400_000), np.float32)
    assert (
        rows.n_chunks(3, 400_000, _parallel.threads_for(x.size)) > 1 or numba.get_num_threads() == 1
    )
    want = sk.softmax(x)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert rows.n_chunks(3, 400_000, 1) == 1
        # small probabilities may differ by more than 1e-6 relative (within the
        # contract's 1e-12 absolute below p = 1e-6): at T = 1 each path stores
        # exp(fl(x - m_b)) against its own block maxima m_b (one rounding of the
        # argument, up to |d| 2^-24 relative)
        np.testing.assert_allclose(sk.softmax(x), want, rtol=1e-6, atol=1e-12)
    finally:
        numba.set_num_threads(old)


def test_threads_for_weighs_the_dtype():
    """One thread up to PAR_MIN units of work (a float32 value 1, a float64 value 2),
    numba.get_num_threads() above."""
    nt = numba.get_num_threads()
    P = _parallel.PAR_MIN
    assert _parallel.threads_for(P, 4) == 1
    assert _parallel.threads_for(P + 1, 4) == nt
    assert _parallel.threads_for(P // 2, 8) == 1
    assert _parallel.threads_for(P // 2 + 1, 8) == nt
    assert _parallel.threads_for(P, 2) == 1  # float16 bits: computed in float32


def test_state_rows_matches_logsumexp():
    x = _x((5, 70_000), np.float32)
    x[1, 3] = np.inf
    x[2] = -np.inf
    x[3, 9] = np.nan
    m, s = chunk_state(x, (1,), temperature=0.5)
    want = ref.logsumexp(x, axis=1, temperature=0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        got = np.where(s == 0, -np.inf, m + np.log(s))
    _check(got, want, np.float32, "logsumexp")
    assert (m[1], s[1]) == (np.inf, 1.0)
    assert (m[2], s[2]) == (-np.inf, 0.0)
    assert np.isnan(m[3]) and np.isnan(s[3])


# logsumexp's final float64 -> float32 cast of -2e40 warns in this branch; the tests2
# branch silences that cast in softmax.py (the correctly rounded -inf).
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_tiny_temperature_fallback():
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    for T in (1e-40, 1e-310):
        for op in ("softmax", "log_softmax", "logsumexp"):
            with np.errstate(divide="raise", invalid="raise"):
                got = getattr(sk, op)(x, temperature=T)
            with np.errstate(over="ignore"):  # the reference's float64 -2e40 is -inf here
                want = np.asarray(getattr(ref, op)(x, temperature=T)).astype(np.float32)
            _check(got, want, np.float32, op)


def test_plan_is_copy_free():
    c = np.zeros((4, 5, 6))
    assert _eager.plan(c, (2,))[:3] == (20, 6, 1)
    assert _eager.plan(c, (0,))[:3] == (1, 4, 30)
    assert _eager.plan(c, (1,))[:3] == (4, 5, 6)
    assert _eager.plan(np.asfortranarray(c), (0,))[:3] == (30, 4, 1)
    assert _eager.plan(c, (0, 2)) is None  # two separate runs: the copy path
    assert _eager.plan(c[:, ::2], (2,)) is None


def test_peak_memory():
    """out= on a C float32 input allocates nothing input-sized; plain: only the output."""
    x = _x((256, 8192), np.float32)
    out = np.empty_like(x)
    for op, o in (("softmax", out), ("log_softmax", out)):
        getattr(sk, op)(x, out=o)
        tracemalloc.start()
        getattr(sk, op)(x, out=o)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < x.nbytes / 50
    old = sk.set_output_cache(0)  # every output fresh memory
    try:
        for axis in (-1, 0):
            sk.softmax(x, axis=axis)
            tracemalloc.start()
            res = sk.softmax(x, axis=axis)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            # the output, in a buffer 2 MiB larger so that it starts on a huge page
            # (softmaxkit._core.buffers; the unused 2 MiB is address space, never touched)
            assert x.nbytes <= peak < 1.05 * x.nbytes + HUGE_PAGE
            del res
        sk.set_output_cache(1 << 30)
        for axis in (-1, 0):
            sk.softmax(x, axis=axis)  # released at once: its buffer is cached
            tracemalloc.start()
            res = sk.softmax(x, axis=axis)  # takes it back: nothing input-sized
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < x.nbytes / 16  # axis 0: a few float64 states per column
            del res
    finally:
        sk.set_output_cache(old)
    sk.logsumexp(x, axis=0)  # warm: a first call's compile (or cache load) allocates
    tracemalloc.start()
    sk.logsumexp(x, axis=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 12 * 8 * x.shape[1]  # a few float64 per output, nothing input-sized


def _ulp32(got, want64):
    sp = np.spacing(want64.astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want64) / sp


def test_exp32_dense_sweep():
    """Every 61st float32 in [ln FLT_MIN, 0] (exhaustive run: docs/performance.md)."""
    lo = np.float32(np.log(np.finfo(np.float32).tiny))
    bits = np.arange(np.float32(-0.0).view(np.uint32), lo.view(np.uint32), 61, dtype=np.uint32)
    x = bits.view(np.float32)
    got = np.empty_like(x)
    exp_array(x, got)
    assert _ulp32(got, np.exp(x.astype(np.float64))).max() <= 1.0


def test_exp64_sweep():
    x = np.linspace(-708.0, 0.0, 2_000_001)
    got = np.empty_like(x)
    exp_array(x, got)
    want = np.exp(x)
    assert (np.abs(got - want) / np.spacing(want)).max() <= 1.5


def test_exp_special_values():
    for dtype in (np.float32, np.float64):
        x = np.array([-np.inf, np.nan, 0.0, -0.0, -1e-30, -1e4], dtype=dtype)
        got = np.empty_like(x)
        exp_array(x, got)
        np.testing.assert_array_equal(got, np.array([0.0, np.nan, 1.0, 1.0, 1.0, 0.0], dtype))


@pytest.mark.parametrize("T", [1.0, 2.0 / 3.0])
def test_expd32_argument_is_exact(T):
    # Adversarial float32 rows: a non-dyadic max and x - m in [-13.7, -5] (p down to
    # ~1e-6) whose differences are not representable in float32.  A plain float32
    # argument (v - m) * invT carries up to |d| * 2**-23 relative error into p (measured
    # here: 5.9e-7 at T = 1, 1.1e-6 at T = 2/3); the kernels' exp carries the argument
    # exactly (TwoSum + FMA product error): measured 1.5e-7 and 1.7e-7 (the former
    # float64 reduction: 1.9e-7 and 1.7e-7), except at T = 1 in softmax's row
    # kernels (below).
    # invT = 1.5 is exact in float32 for T = 2/3, so only the kernel's rounding counts.
    rng = np.random.default_rng(2024)
    worst = 0.0
    for shape, axis in (((4, 4096), -1), ((1, 150_000), -1), ((4096, 4), 0), ((200, 40), -1)):
        for m0 in (0.3, 37.1, -101.7, 1000.37):
            x = (m0 + rng.uniform(-13.7 * T, -5.0 * T, shape)).astype(np.float32)
            if axis == 0:
                x[0] = np.float32(m0)
            else:
                x[:, 0] = np.float32(m0)
            got = sk.softmax(x, axis=axis, temperature=T).astype(np.float64)
            want = ref.softmax(x, axis=axis, temperature=T)
            big = want >= 1e-6
            assert big.sum() > x.size // 3
            worst = max(worst, float(np.max(np.abs(got[big] - want[big]) / want[big])))
            # log_softmax / logsumexp: the float32 row sums hold the max's term 1, so each
            # add in its lane and the lane reduction round near 1 (a few times 2^-24 in
            # log S: 2.5-2.9e-7 measured on rows of 40-256; the short rows' tiles split
            # the max's term off), and at T = 1 the summed terms take the plain
            # argument (exp.expsum_unit: up to 2^-24 log n more, by design)
            n = x.shape[axis]
            bound = 4e-7 + (2.0**-24 * np.log(n) if T == 1.0 else 0.0)
            for op in ("log_softmax", "logsumexp"):
                g = np.asarray(getattr(sk, op)(x, axis=axis, temperature=T), np.float64)
                w = getattr(ref, op)(x, axis=axis, temperature=T)
                assert np.max(np.abs(g - w) / (1 + np.abs(w))) < bound
    # At T = 1 softmax's row kernels store exp(fl(x - m)), the plain argument: one
    # rounding, at most half an ulp of |d| < 16, 2^-21 = 4.8e-7 (measured 6.4e-7 with
    # the exp's and the scaling's own roundings, against 5.9e-7 for the formula above,
    # which rounds (v - m) * invT twice); with a temperature the argument is exact.
    assert worst < (8e-7 if T == 1.0 else 4e-7)


def test_log_sum_array():
    """The vectorised log(w + r) of the row kernels against 80-digit mpmath."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(7)
    n = 400
    w = np.concatenate([np.ones(n), rng.integers(1, 5000, n).astype(float), np.ones(n)])
    r = np.concatenate(
        [10 ** rng.uniform(-40, 0, n), rng.uniform(0, 1e6, n), rng.uniform(0, 3e-16, n)]
    )
    w = np.concatenate([w, [1.0, 1.0, 2.0, 1e300, 3.0]])
    r = np.concatenate([r, [0.0, 1.0, 0.0, 1e300, 1e-300]])
    got = np.empty_like(w)
    log_sum_array(w, r, got)
    worst = 0.0
    with mpmath.workdps(80):
        for wi, ri, gi in zip(w, r, got, strict=True):
            want = mpmath.log(mpmath.mpf(float(wi)) + mpmath.mpf(float(ri)))
            if want == 0:
                assert gi == 0
                continue
            worst = max(worst, float(abs((mpmath.mpf(float(gi)) - want) / want)))
    assert worst <= 4 * 2.0**-53, worst  # ~3 ulp measured: 1.6 ulp
    # log1p accuracy when r is far below the ulp of w = 1
    np.testing.assert_allclose(got[2 * n : 3 * n], np.log1p(r[2 * n : 3 * n]), rtol=4e-16)
    # outside the positive normal range: libm
    w = np.array([0.0, np.inf, np.nan, 1e-310, 0.0])
    r = np.array([0.0, 0.0, 0.0, 0.0, np.nan])
    got = np.empty_like(w)
    with np.errstate(divide="ignore"):
        want = np.log(w + r)
    log_sum_array(w, r, got)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [10, 128])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_logsumexp_special_rows_and_dtypes(n, dtype):
    """Grouped rows (one vectorised log per group) with special rows mixed in, the
    result written by the kernel in the output dtype, with and without the sign."""
    x = _x((700, n), dtype)
    x[3] = -np.inf
    x[5, 2] = np.inf
    x[8, 1] = np.nan
    x[13, :] = 7.0  # n ties
    x[21, 0] = 1e4  # one dominant entry: log1p(r), r ~ 0
    for op in ("log_softmax", "logsumexp"):
        with np.errstate(invalid="ignore"):
            _check(getattr(sk, op)(x), getattr(ref, op)(x), dtype, op)
    lse = sk.logsumexp(x)
    assert lse.dtype == dtype
    lse64 = sk.logsumexp(x, dtype=np.float64)  # float64 output: the buffered path
    assert lse64.dtype == np.float64
    _check(lse64, ref.logsumexp(x), np.float64 if dtype == np.float64 else dtype, "logsumexp")
    lse2, sgn = sk.logsumexp(x, return_sign=True)
    np.testing.assert_array_equal(lse2, lse)
    want = np.ones(700, dtype)
    want[3] = 0.0
    want[8] = np.nan
    np.testing.assert_array_equal(sgn, want)
    # float32 rounding of a float64 result to inf is the correct rounding, silently
    big = np.full((3, n), 3e38, np.float32)
    assert np.all(np.isinf(sk.logsumexp(big, temperature=0.5)))


@pytest.mark.parametrize("T", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_switches_between_fast_and_tie_sums(monkeypatch, T, dtype):
    """Blocks with a finite max sum every exp as (S, 0) -- float32 always, float64 for
    softmax (which uses only S); blocks whose running max is +-inf keep the tie count.
    Rows that switch between the two, block by block (blocks of 2048 values), must give
    the reference results (T = 1 has its own exp), in the row kernels (whole, split and
    store-then-scale rows) and the column kernels (the same rows as columns)."""
    n = 5000
    x = _x((6, n), dtype)
    x[0, 4500] = np.inf  # +inf in the last block, after finite blocks
    x[1, :2048] = -np.inf  # an all -inf first block, then finite values
    x[2, 3000] = np.nan  # NaN in a middle block
    x[3, 100] = np.inf  # +inf first, then more +inf (two ties) in a later block
    x[3, 4000] = np.inf
    x[4, :] = -np.inf
    x[4, 4999] = 3.0  # the only finite value at the very end
    x[5, 10:20] = 50.0  # ten tied maxima in the first block
    with np.errstate(invalid="ignore"):
        for op in ("softmax", "log_softmax", "logsumexp"):
            got = getattr(sk, op)(x, temperature=T)
            want = getattr(ref, op)(x, temperature=T)
            _check(got, want, dtype, op)
            xc = np.ascontiguousarray(x.T)  # columns: tiles of 32 rows switch likewise
            got = getattr(sk, op)(xc, axis=0, temperature=T)
            _check(got, want.T if op != "logsumexp" else want, dtype, op)
            # the split-row (chunked) and store paths see the same rows; then softmax
            # without store-then-scale (_chunk_state: rows whole, and split)
            big = np.repeat(x[[0, 1, 2, 5]], 60, axis=1)  # 4 rows of 300000: split
            for nostore in (False, True) if op == "softmax" else (False,):
                if nostore:
                    monkeypatch.setattr(rows.entry, "STORE", False)
                    _check(getattr(sk, op)(x, temperature=T), want, dtype, op)
                _check(
                    getattr(sk, op)(big, temperature=T),
                    getattr(ref, op)(big, temperature=T),
                    dtype,
                    op,
                )
            monkeypatch.undo()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming_store_paths(monkeypatch, dtype):
    """Write passes with non-temporal stores (``nt.nt_copy``), normally only for outputs
    of 32 MiB and more, forced here on small arrays: split rows, unsplit rows longer
    than L2_ROW, an output whose start is not 64-byte aligned, in place."""
    monkeypatch.setattr(rows.entry, "NT_MIN_BYTES", 0)
    monkeypatch.setattr(rows.entry, "STORE", False)  # softmax streams where it does not store
    for shape in ((2, 600_000), (1, 1_100_000), (8, 70_001)):
        x = _x(shape, dtype)
        x[0, 5] = np.inf if shape[0] > 1 else x[0, 5]  # a special row among them
        for op in ("softmax", "log_softmax"):
            want = getattr(ref, op)(x)
            with np.errstate(invalid="ignore"):
                _check(getattr(sk, op)(x), want, dtype, op)
                buf = np.empty(x.size + 3, dtype)
                out = buf[3:].reshape(shape)  # 12 or 24 bytes past the allocation
                assert getattr(sk, op)(x, out=out) is out
                _check(out, want, dtype, op)
                y = x.copy()
                getattr(sk, op)(y, out=y)
                _check(y, want, dtype, op)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", list(PATHS))
def test_in_place_special_rows(path, dtype):
    """``out=x`` with +inf / NaN / -inf entries on every kernel path.  The store paths
    (exps written over x in pass 1), short-row tiles and column kernels used to rebuild
    a +inf row from x after x had been overwritten (softmax gave 0 instead of 1)."""
    shape, axis = PATHS[path]
    x = _x(shape, dtype)
    # special values at positions that fall into different reduced slices
    idx = [(0,) * x.ndim, tuple(min(1, s - 1) for s in shape), tuple(s - 1 for s in shape)]
    x[idx[0]] = np.inf
    x[idx[1]] = np.nan
    x[idx[2]] = -np.inf
    for op in ("softmax", "log_softmax"):
        want = getattr(ref, op)(x, axis=axis)
        y = x.copy()
        with np.errstate(invalid="ignore"):
            assert getattr(sk, op)(y, axis=axis, out=y) is y
        _check(y, want, dtype, op)


@pytest.mark.parametrize("path", list(PATHS))
def test_in_place_temperature_overflow(path):
    """``out=x`` with a temperature < 1 that overflows finite ``x / T`` to +inf at
    several entries of one reduced slice: the write pass counts those entries over the
    whole slice, so a split row must not have been partly overwritten by then (the
    answer was 1/2 and 1 instead of 1/3 each on the split-row paths)."""
    shape, axis = PATHS[path]
    x = _x(shape, np.float64)
    flat = x.reshape(-1)
    at = [0, x.size // 4, x.size // 2, 3 * x.size // 4, x.size - 1]
    flat[at] = [1.5e308, 1.6e308, 1.7e308, 1.2e308, 1.0e308]
    for op in ("softmax", "log_softmax"):
        with np.errstate(over="ignore"):
            want = getattr(ref, op)(x, axis=axis, temperature=0.5)
            y = x.copy()
            assert getattr(sk, op)(y, axis=axis, temperature=0.5, out=y) is y
        _check(y, want, np.float64, op)


@pytest.mark.parametrize("ntask", [1, 2, 3, 7, 8, 9, 1000])
@pytest.mark.parametrize("nt", [1, 2, 3])
def test_parallel_run_covers_every_task_once(ntask, nt):
    """_parallel.run: the ranges taken from the shared counter tile [0, ntask) exactly,
    whichever thread takes them."""
    import threading

    from softmaxkit._kernels._parallel import run

    seen = np.zeros(ntask, dtype=int)
    threads = set()
    lock = threading.Lock()

    def kernel(scale, t0, t1):
        assert scale == 2 and 0 <= t0 < t1 <= ntask
        with lock:
            seen[t0:t1] += 1
            threads.add(threading.get_ident())

    run(kernel, ntask, nt, 2)
    np.testing.assert_array_equal(seen, 1)
    # (which thread took which range is up to the scheduler: a fast worker may take all)
    assert 1 <= len(threads) <= nt
    run(kernel, 0, nt, 2)  # no task: no call
    np.testing.assert_array_equal(seen, 1)


def test_parallel_run_raises_a_worker_error():
    from softmaxkit._kernels._parallel import run

    def kernel(t0, t1):
        if t0 > 0:
            raise ValueError(f"task {t0}")

    with pytest.raises(ValueError, match="task"):
        run(kernel, 8, 2)


def test_parallel_run_does_not_wait_for_a_busy_pool():
    """With every pool worker busy (another caller's work), the calling thread takes all
    ranges and run() returns without waiting for a worker to come free."""
    import threading

    from softmaxkit._kernels._parallel import _pool, run

    pool = _pool()
    release = threading.Event()
    blockers = [pool.submit(release.wait, 30) for _ in range(pool._max_workers)]
    try:
        seen = np.zeros(8, dtype=int)

        def kernel(t0, t1):
            seen[t0:t1] += 1

        done = threading.Event()
        caller = threading.Thread(target=lambda: (run(kernel, 8, 2), done.set()))
        caller.start()
        assert done.wait(10), "run() waited for the busy pool"
        np.testing.assert_array_equal(seen, 1)
    finally:
        release.set()
        for b in blockers:
            b.result()


def test_row_view_reads_and_writes_each_row():
    """``view.row`` (the reference-free row view of the row kernels) on C, strided,
    broadcast (zero-stride) and read-only arrays: the right elements, writes land in
    the array, and the parent's reference count is untouched."""
    import sys

    from numba import njit

    from softmaxkit._kernels.view import row

    @njit
    def copy_rows(a, out):
        for i in range(a.shape[0]):
            ra = row(a, i)
            ro = row(out, i)
            for j in range(ra.shape[0]):
                ro[j] = ra[j] + i

    base = np.arange(7 * 12, dtype=np.float64).reshape(7, 12)
    cases = [
        base,  # C
        base[::2, 1::3],  # strided both ways ('A')
        np.asfortranarray(base),  # F
        np.broadcast_to(np.arange(5.0), (4, 5)),  # zero stride, read-only
    ]
    for a in cases:
        out = np.full(a.shape, np.nan)
        before = sys.getrefcount(a)
        copy_rows(a, out)
        assert sys.getrefcount(a) == before
        np.testing.assert_array_equal(out, a + np.arange(a.shape[0])[:, None])
    # a strided output: the writes land in the right elements only
    big = np.zeros((6, 10))
    copy_rows(base[:3, :5], big[::2, ::2])
    np.testing.assert_array_equal(big[::2, ::2], base[:3, :5] + np.arange(3)[:, None])
    assert not big[1::2].any() and not big[:, 1::2].any()


def test_row_view_in_a_parfor():
    """A store through ``row(a, i)`` as the last statement of a ``prange`` body is kept:
    parfor dead-code elimination must know the view aliases ``a``."""
    from numba import njit, prange

    from softmaxkit._kernels.view import row

    @njit
    def scale(g, f):
        for j in range(g.shape[0]):
            g[j] = g[j] * f

    @njit(parallel=True)
    def kernel(grad, tgt):
        for i in prange(grad.shape[0]):
            gr = row(grad, i)
            scale(gr, 2.0)
            gr[tgt[i]] -= 1.0

    g = np.ones((3, 4))
    kernel(g, np.array([0, 1, 3]))
    want = np.full((3, 4), 2.0)
    want[[0, 1, 2], [0, 1, 3]] = 1.0
    np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [3, 100, 5000, 600000])
def test_signed_weights_below_minus_one(dtype, n):
    # one maximum of weight 1 and the other terms summing below -1: S < 0, so
    # log|S| with sign -1 (the w0 == 1 shortcut used to take log1p(r) = NaN); every
    # row path (one block, several blocks, split rows) and the column path
    x = np.full(n, -0.25, dtype=dtype)
    x[n // 2] = 0.0
    b = np.full(n, -2.0 / n)
    b[n // 2] = 1.0
    b[0] = -1.0
    S = 1.0 + np.sum(b * np.exp(x.astype(np.float64)), where=np.arange(n) != n // 2)
    assert S < 0
    want = np.log(abs(S))
    for xx, bb, axis in ((x, b, -1), (x[None], b[None], 1), (x[:, None], b[:, None], 0)):
        got, sign = sk.logsumexp(xx, axis=axis, b=bb, return_sign=True)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)
        assert np.all(sign == -1.0)
        assert np.isnan(sk.logsumexp(xx, axis=axis, b=bb)).all()


def test_cache_dirs_cover_every_kernel_module():
    # Numba keeps a kernel's cache in a directory derived from its source file's
    # directory, so each _kernels subpackage (rows/, losses/, sampling/) has its own;
    # `softmaxkit warmup --clear` deletes only what _hooks.cache_dirs() lists
    import pathlib

    from softmaxkit._kernels import _hooks

    dirs = set(_hooks.cache_dirs())
    sources = sorted(pathlib.Path(_hooks.__file__).parent.rglob("*.py"))
    assert any(p.parent.name == "rows" for p in sources)
    for p in sources:
        d = _hooks.cache_dir(str(p))
        assert d is None or d in dirs, (p, d)


def test_kernel_modules_stay_small_and_acyclic():
    # issue 19's layout rule: no kernel module over ~500 lines, and no import cycle
    # among the kernel modules (relative imports, read from the sources)
    import ast
    import pathlib

    root = pathlib.Path(_parallel.__file__).parent

    def is_module(parts):
        return (root.joinpath(*parts).with_suffix(".py")).is_file() or (
            root.joinpath(*parts, "__init__.py")
        ).is_file()

    graph = {}
    for p in root.rglob("*.py"):
        assert len(p.read_text().splitlines()) <= 500, p
        parts = p.relative_to(root).with_suffix("").parts
        mod = parts[:-1] if parts[-1] == "__init__" else parts
        pkg = mod if parts[-1] == "__init__" else parts[:-1]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = (*base, *(node.module.split(".") if node.module else ()))
                for a in node.names:
                    deps.add((*target, a.name) if is_module((*target, a.name)) else target)
        graph[mod] = deps - {()}

    state = {}

    def visit(n, path):
        if state.get(n) == 1:
            raise AssertionError("import cycle: " + " -> ".join(".".join(m) for m in [*path, n]))
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            visit(d, [*path, n])
        state[n] = 2

    assert ("rows", "pieces") in graph[("rows", "store")]
    assert ("topk",) in graph[("online",)]
    for n in sorted(graph):
        visit(n, [])


def test_exp32_sum_sweep():
    """``expsum_unit`` (terms that are only summed): the one-step reduction is off by
    ``n (ln 2 - ln2_f32)``, |n| * 1.9e-9 relative, on top of _exp32's 1 ulp.  Every
    31st float32 in [ln FLT_MIN, 0], and the special values."""
    from softmaxkit._kernels.exp import expsum_array

    lo = np.float32(np.log(np.finfo(np.float32).tiny))
    bits = np.arange(np.float32(-0.0).view(np.uint32), lo.view(np.uint32), 31, dtype=np.uint32)
    x = bits.view(np.float32)
    got = np.empty_like(x)
    expsum_array(x, np.float32(0.0), got)
    want = np.exp(x.astype(np.float64))
    n = np.rint(x.astype(np.float64) / np.log(2.0))
    rel = np.abs(got - want) / want
    # 1 ulp of the result (2^-23 relative at most) plus the reduction's share
    assert (rel <= 2.0**-23 + np.abs(n) * 2.0e-9).all(), rel.max()
    assert rel.max() > 1.2e-7  # the share is there: a bound that cannot fail is no test
    sp = np.array([-np.inf, np.nan, 0.0, -0.0, -1e-30, -1e4, -87.9, -88.5], np.float32)
    out = np.empty_like(sp)
    expsum_array(sp, np.float32(0.0), out)
    np.testing.assert_array_equal(out[:6], np.array([0.0, np.nan, 1.0, 1.0, 1.0, 0.0], np.float32))
    assert 0.0 <= out[6] < 1e-38 and out[7] < 1e-38
    # v - m with v = m exactly 1 (the max's own term)
    m = np.float32(37.1)
    one = np.empty(1, np.float32)
    expsum_array(np.array([m]), m, one)
    assert one[0] == 1.0
