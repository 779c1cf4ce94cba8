# ruff: noqa: B023  (the lambdas are called within their loop iteration)
"""The NumPy twins of the integer softmax kernels (``quantized/_twin.py``): the
cold-start path of ``softmaxkit.quantized`` must give the kernels' integers, bit for
bit, and the runtime's (the recorded LiteRT vectors), with the same errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_quantized import _CASES, DATA, _expected, _run

from softmaxkit import quantized as Q
from softmaxkit._core import coldstart
from softmaxkit._kernels import fixedpoint as fp
from softmaxkit._kernels import quant
from softmaxkit.quantized import _twin


def _forced(f):
    coldstart._FORCE = True
    try:
        return f()
    finally:
        coldstart._FORCE = False


@pytest.fixture(scope="module")
def vectors():

    with np.load(DATA / "vectors.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("case", _CASES, ids=[f"{c['id']}-{c['op']}" for c in _CASES])
def test_twins_reproduce_the_recorded_litert_vectors(case, vectors):
    x = vectors[f"{case['id']}_x"]
    ref, opt = _expected(vectors, case["id"])
    for kernel, want in (("reference", ref), ("optimized", opt)):
        if want is None:
            with pytest.raises(ValueError, match="abort"):
                _forced(lambda: _run(case, x, kernel))
        else:
            got = _forced(lambda: _run(case, x, kernel))
            assert coldstart.fell_back()
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_fixed_point_primitives_match_the_kernels_on_edge_values():
    edge = [-(1 << 31), -(1 << 31) + 1, -(1 << 30), -12345, -2, -1, 0, 1, 2, 3, 12345,
            (1 << 30), (1 << 31) - 2, (1 << 31) - 1]  # fmt: skip
    rng = np.random.default_rng(3)
    vals = np.array(edge + list(rng.integers(-(1 << 31), 1 << 31, 300)), dtype=np.int64)
    for a in vals[::7]:
        np.testing.assert_array_equal(_twin._srdhm(a, vals), [fp._srdhm(a, b) for b in vals])
    for e in range(0, 32):
        np.testing.assert_array_equal(_twin._rdbpot(vals, e), [fp._rdbpot(v, e) for v in vals])
        np.testing.assert_array_equal(_twin._sat_shl(vals, e), [fp._sat_shl(v, e) for v in vals])
    np.testing.assert_array_equal(_twin._clz32(vals), [fp.clz32(v) for v in vals])
    neg = -np.abs(vals)
    neg[neg == -(1 << 31)] = -(1 << 31) + 1
    np.testing.assert_array_equal(
        _twin._exp_neg_q5(neg), [fp.exp_on_negative_values_q5(v) for v in neg]
    )
    q = np.abs(vals)
    np.testing.assert_array_equal(
        _twin._one_over_one_plus_x(q), [fp.one_over_one_plus_x(v) for v in q]
    )
    pos = np.unique(np.concatenate([[1 << 19, (1 << 19) + 1, (1 << 31) - 1], q[q >= 1 << 19]]))
    np.testing.assert_array_equal(
        _twin._log_q5_from_q12(pos), [fp.log_x_ge_1_q5_from_q12(v) for v in pos]
    )
    for m, s in ((1 << 30, 3), (1518500250, -5), (2147483647, 0), (1073741824, -31)):
        np.testing.assert_array_equal(
            _twin._mul_by_qm(vals, m, s), [fp.mul_by_quantized_multiplier(v, m, s) for v in vals]
        )


def test_tables_match_the_kernels():
    rng = np.random.default_rng(4)
    for scale in np.concatenate([[1e-6, 1 / 16, 1.0, 10.0, 100.0], rng.uniform(1e-3, 3, 20)]):
        p = Q.softmax_params(float(scale))
        for a, b in zip(
            _twin.fixed_exp_table(p.multiplier, p.shift, p.diff_min, 256),
            quant.fixed_exp_table(p.multiplier, p.shift, p.diff_min, 256),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(
            _twin.fixed_diff_q5_table(p.multiplier, p.shift, 256),
            quant.fixed_diff_q5_table(p.multiplier, p.shift, 256),
        )
        neg = np.float32(-np.float32(scale))
        np.testing.assert_array_equal(
            _twin.float_exp_table(neg, 256).view(np.int32),
            quant.float_exp_table(neg, 256).view(np.int32),
        )


def _inputs(rng, dtype):
    info = np.iinfo(dtype)
    R, n = int(rng.integers(1, 6)), int(rng.integers(1, 700))
    x = rng.integers(info.min, info.max + 1, size=(R, n), dtype=dtype)
    mode = rng.integers(0, 4)
    if mode == 1:  # a narrow band near the max: large sums (RANGE / OVERFLOW rows)
        x = np.clip(rng.integers(info.max - 3, info.max + 1, size=(R, n)), info.min, info.max)
        x = x.astype(dtype)
    elif mode == 2:
        x[0] = info.min
    return x


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_twins_match_the_kernels_on_random_rows(dtype):
    rng = np.random.default_rng(5)
    for trial in range(150):
        x = _inputs(rng, dtype)
        s = float(np.exp(rng.uniform(np.log(1e-3), np.log(20.0))))
        odt = [None, np.int16][trial % 3 == 0]
        calls = [
            lambda: Q.softmax(x, s, output_dtype=odt),
            lambda: Q.softmax(x, s, output_dtype=odt, kernel="optimized"),
            lambda: Q.log_softmax(x, s),
            lambda: Q.log_softmax(x, s, kernel="optimized"),
        ]
        for f in calls:
            try:
                want = f()
            except ValueError as e:
                with pytest.raises(ValueError, match=str(e)[:40].replace("(", r"\(")):
                    _forced(f)
                continue
            got = _forced(f)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_int16_and_cmsis_twins_match_the_kernels():
    rng = np.random.default_rng(6)
    for trial in range(40):
        n = int(rng.integers(1, 400))
        x = rng.integers(-32768, 32768, size=(3, n), dtype=np.int16)
        if trial % 4 == 0:
            x[:, : n // 2] = 32767
        s = float(np.exp(rng.uniform(np.log(1e-5), np.log(1e-2))))
        f = lambda: Q.softmax(x, s)  # noqa: E731
        np.testing.assert_array_equal(_forced(f), f())
        x8 = rng.integers(-128, 128, size=(3, n), dtype=np.int8)
        p = Q.softmax_params(float(rng.uniform(0.01, 1.0)))
        for g in (
            lambda: Q.softmax_s8(x8, 3, n, *p),
            lambda: Q.softmax_u8((x8.astype(np.int16) + 128).astype(np.uint8), 3, n, *p),
            lambda: Q.softmax_s8_s16(x8, 3, n, *p),
        ):
            try:
                want = g()
            except ValueError:
                with pytest.raises(ValueError):
                    _forced(g)
                continue
            np.testing.assert_array_equal(_forced(g), want)


def test_large_inputs_take_the_kernels():
    x = np.zeros((2, coldstart.SMALL), np.int8)
    _forced(lambda: Q.softmax(x, 0.1, kernel="optimized"))
    assert not coldstart.fell_back()
