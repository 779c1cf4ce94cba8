"""The float-sum runtimes (torch, float-route, onnxruntime, tflite-x86) on many rows
at once give each row's own result: the kernels tabulate ``exp`` per row maximum
(shared by the rows of a call) and sum four rows interleaved (``_kernels/quant_rt.py``,
``quant.py``), so a row's output must not depend on its neighbours, on the other
maxima of the call, on its position in a block of four or on the thread ranges."""

from __future__ import annotations

import numpy as np
import pytest

from softmaxkit import quantized as Q


def _rows(dtype, nrows, n, seed):
    """Rows whose maxima repeat (a few values, two of them 128 apart) and whose
    ranges ``max - min`` grow and shrink from row to row (0 to 255)."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    maxes = [info.min, info.min + 128, info.max, info.max - 128, info.min + 60]
    x = np.empty((nrows, n), dtype=np.int64)
    for i in range(nrows):
        m = maxes[int(rng.integers(len(maxes)))]
        span = int(rng.choice([0, 1, 3, 20, 90, 255]))
        x[i] = rng.integers(max(info.min, m - span), m + 1, size=n)
        x[i, rng.integers(n)] = m
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize(
    ("runtime", "kw"),
    [
        ("torch", {}),
        ("torch", {"input_zero_point": 17, "output_scale": 0.01, "output_zero_point": 3}),
        ("float-route", {}),
        ("float-route", {"rounding": "half-away", "input_zero_point": -5}),
        ("onnxruntime", {}),
        ("tflite-x86", {}),
    ],
)
def test_rows_of_a_call_are_independent(runtime, kw, dtype):
    # 259 rows (not a multiple of 4) of 600: above the threading threshold, so the
    # thread ranges cut blocks of four too
    x = _rows(dtype, 259, 600, seed=len(kw) + 2 * (dtype is np.uint8))
    if dtype is np.uint8 and "input_zero_point" in kw:
        kw = {**kw, "input_zero_point": abs(kw["input_zero_point"])}
    if dtype is np.uint8 and "output_zero_point" in kw:
        kw = {**kw, "output_zero_point": abs(kw["output_zero_point"])}
    one = np.concatenate([Q.softmax(x[i : i + 1], 0.3, runtime=runtime, **kw) for i in range(259)])
    np.testing.assert_array_equal(Q.softmax(x, 0.3, runtime=runtime, **kw), one)
    # reversed row order: every row meets other neighbours and another table state
    rev = Q.softmax(x[::-1].copy(), 0.3, runtime=runtime, **kw)[::-1]
    np.testing.assert_array_equal(rev, one)
    # one thread, 2, 3, 5, 6 and 7 rows: blocks of four with 1, 2 and 3 rows left
    for k in (2, 3, 5, 6, 7):
        np.testing.assert_array_equal(Q.softmax(x[:k], 0.3, runtime=runtime, **kw), one[:k])


@pytest.mark.parametrize("fma_deq", [False, True])
@pytest.mark.parametrize(("lo", "zp"), [(-128, 0), (-128, -7), (0, 200)])
def test_exp_table_per_max(fma_deq, lo, zp):
    """``_fill_exp`` keys its rows by the max and extends them: after any sequence of
    (max, range) requests every tabulated entry is the one a fresh table computes
    (maxima 128 apart share no row; a longer range extends, a shorter one keeps).
    The maxima of one call are of one dtype: int8 (``lo = -128``) or uint8 (0)."""
    from softmaxkit._kernels import quant_rt as K

    s, zp = np.float32(0.37), np.int64(zp)
    premul = np.float32(-np.float32(zp) * s)
    rng = np.random.default_rng(abs(int(zp)) + fma_deq)
    etab = np.zeros((256, 256), dtype=np.float32)
    filled = np.full(256, -1, dtype=np.int64)
    for _ in range(300):
        m = lo + int(rng.choice([0, 128, 255, 127, 40]))
        dmax = int(rng.integers(0, m - lo + 1))
        K._fill_exp(etab, filled, m, dmax, s, zp, premul, fma_deq)
        fresh = np.zeros((256, 256), dtype=np.float32)
        K._fill_exp(fresh, np.full(256, -1, dtype=np.int64), m, dmax, s, zp, premul, fma_deq)
        assert filled[m & 255] >= dmax
        np.testing.assert_array_equal(etab[m & 255, : dmax + 1], fresh[m & 255, : dmax + 1])
