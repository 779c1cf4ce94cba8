"""Tests for softmaxkit.quantized: bit-exactness against recorded LiteRT outputs,
the seed case, parameter derivation, accuracy bounds, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

from softmaxkit import quantized as Q

DATA = Path(__file__).parent / "data" / "tflite"
_INFO = json.loads((DATA / "cases.json").read_text())
_CASES = _INFO["cases"]


@pytest.fixture(scope="module")
def vectors():
    with np.load(DATA / "vectors.npz") as f:
        return {k: f[k] for k in f.files}


def _expected(vec, key):
    ref = vec.get(f"{key}_ref")
    if ref is None:
        return None, vec.get(f"{key}_opt")
    diff = vec.get(f"{key}_opt_minus_ref")
    opt = None if diff is None else (ref.astype(np.int32) + diff).astype(ref.dtype)
    return ref, opt


def _run(case, x, kernel):
    if case["op"] == "softmax":
        return Q.softmax(
            x,
            case["input_scale"],
            beta=case["beta"],
            output_dtype=case["output_dtype"],
            kernel=kernel,
        )
    return Q.log_softmax(x, case["input_scale"], kernel=kernel)


# ---------------------------------------------------------------- real runtime


@pytest.mark.parametrize("case", _CASES, ids=[f"{c['id']}-{c['op']}" for c in _CASES])
def test_tflite_vectors(case, vectors):
    """Bit-exact with LiteRT's reference and optimized kernels; errors where it aborts."""
    x = vectors[f"{case['id']}_x"]
    ref, opt = _expected(vectors, case["id"])
    for kernel, want in (("reference", ref), ("optimized", opt)):
        assert case["status"][kernel] == ("ok" if want is not None else "abort")
        if want is None:
            with pytest.raises(ValueError, match="abort"):
                _run(case, x, kernel)
        else:
            got = _run(case, x, kernel)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_vectors_cover_the_issue():
    kinds = {(c["op"], c["input_dtype"], c["output_dtype"]) for c in _CASES}
    assert {
        ("softmax", "int8", "int8"),
        ("softmax", "uint8", "uint8"),
        ("softmax", "int8", "int16"),
        ("softmax", "int16", "int16"),
        ("log_softmax", "int8", "int8"),
    } <= kinds
    assert any(c["beta"] != 1.0 for c in _CASES)
    assert any(c["status"]["reference"] == "abort" for c in _CASES)
    assert all(c["default_equals_optimized"] for c in _CASES)
    assert _INFO["rows_where_optimized_differs_from_reference"] > 0
    assert (DATA / "vectors.npz").stat().st_size < 2_000_000


# ---------------------------------------------------------------- the seed case

SEED = np.array([101, 49, 6, -34, -75, -79, -38, 120, -55, 115], dtype=np.int8)
SEED_2X5 = np.array([-57, -70, -79, -86, -92, -94, -88, -54, -91, -56], dtype=np.int8)
SEED_1X10 = np.array([-93, -100, -104, -107, -111, -111, -108, -90, -109, -91], dtype=np.int8)


@pytest.mark.parametrize("kernel", ["reference", "optimized"])
@pytest.mark.parametrize("scale", [1 / 255, 0.00392])
def test_seed_case(kernel, scale):
    got = Q.softmax(SEED.reshape(2, 5), scale, kernel=kernel)
    np.testing.assert_array_equal(got.ravel(), SEED_2X5)
    got = Q.softmax(SEED.reshape(1, 10), scale, kernel=kernel)
    np.testing.assert_array_equal(got.ravel(), SEED_1X10)


def test_seed_params_and_cmsis_entry_point():
    assert Q.softmax_params(np.float32(1 / 255)) == (1077952640, 19, -3968)
    got = Q.softmax_s8(SEED, 2, 5, 1077952640, 19, -3968)
    np.testing.assert_array_equal(got.ravel(), SEED_2X5)


# ---------------------------------------------------------------- parameters


def test_softmax_params_refusal_boundary():
    b = float(np.float32(2.0**-26))
    with pytest.raises(ValueError, match=r"2\*\*-26"):
        Q.softmax_params(b)
    with pytest.raises(ValueError, match=r"2\*\*-26"):
        Q.softmax_params(2.0**-24, beta=0.25)
    above = float(np.nextafter(np.float32(b), np.float32(1)))
    p = Q.softmax_params(above)
    assert p.shift == 1 and p.multiplier > 1 << 30 and p.diff_min == -31 * 2**25


def test_softmax_params_cap_and_rounding():
    # beta*scale*2^26 capped at 2^31 - 1 = (2^31 - 1) / 2^31 * 2^31: multiplier 2^31 - 1
    assert Q.softmax_params(1e6) == ((1 << 31) - 1, 31, 0)
    # exact powers of two: multiplier 2^30
    assert Q.softmax_params(1 / 16) == (1 << 30, 23, -248)


def test_log_softmax_params():
    p = Q.log_softmax_params(1 / 16)
    assert p.reverse_multiplier == 1 << 30 and p.reverse_shift == 21
    # the reverse factor 2^(31 - shift) / multiplier is in (0, 1) whenever the
    # softmax parameters exist (shift >= 1), so the refusal boundary is the same
    with pytest.raises(ValueError, match=r"2\*\*-26"):
        Q.log_softmax_params(float(np.float32(2.0**-26)))
    p = Q.log_softmax_params(float(np.nextafter(np.float32(2.0**-26), np.float32(1))))
    assert p.shift == 1 and 0 < p.reverse_multiplier < 1 << 31


@pytest.mark.parametrize(
    ("op", "dt", "odt", "want"),
    [
        ("softmax", np.int8, None, (1 / 256, -128)),
        ("softmax", np.uint8, None, (1 / 256, 0)),
        ("softmax", np.int8, np.int16, (1 / 65536, -32768)),
        ("softmax", np.int16, None, (1 / 32768, 0)),
        ("log_softmax", np.int8, None, (1 / 16, 127)),
        ("log_softmax", np.uint8, None, (1 / 16, 255)),
    ],
)
def test_output_quantization(op, dt, odt, want):
    assert Q.output_quantization(op, dt, odt) == want


def test_int16_luts():
    exp_lut, recip_lut = Q._int16_luts()
    assert exp_lut.shape == recip_lut.shape == (513,)
    assert exp_lut[512] == 32767 and exp_lut[0] in (1, 2)  # exp(0), exp(-10) * 32767.5
    assert recip_lut[0] == 32767 and abs(int(recip_lut[512]) - 16384) <= 1  # 1/(1+0), 1/2
    assert np.all(np.diff(exp_lut.astype(int)) >= 0) and np.all(np.diff(recip_lut.astype(int)) <= 0)


# ---------------------------------------------------------------- accuracy bounds


def _float_softmax(x, scale, beta=1.0):
    z = np.float64(np.float32(beta)) * np.float64(np.float32(scale)) * x.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return z, e / e.sum(axis=-1, keepdims=True)


_scales = st.floats(-20.0, 3.0).map(lambda e: float(np.float32(2.0**e)))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 600),
    lo=st.integers(-128, 127),
    scale=_scales,
    seed=st.integers(0, 2**32 - 1),
    kernel=st.sampled_from(["reference", "optimized"]),
)
def test_int8_within_one_step(n, lo, scale, seed, kernel):
    """|y - (round(256 p) - 128)| <= 1 for rows of fewer than 2048 values (docs/quantized.md)."""
    x = np.random.default_rng(seed).integers(lo, 128, size=(8, n)).astype(np.int8)
    _, p = _float_softmax(x, scale)
    try:
        y = Q.softmax(x, scale, kernel=kernel)
    except ValueError as exc:  # only the reference kernel aborts, on sums >= 512
        assert kernel == "reference" and "512" in str(exc)
        assert n >= 512
        return
    want = np.clip(np.round(256 * p) - 128, -128, 127)
    assert np.abs(y.astype(int) - want).max() <= 1
    # uint8 is int8 shifted by 128, input and output
    u = Q.softmax((x.astype(np.int16) + 128).astype(np.uint8), scale, kernel=kernel)
    np.testing.assert_array_equal(u.astype(int) - 128, y)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), scale=_scales, seed=st.integers(0, 2**32 - 1))
def test_log_softmax_within_one_step(n, scale, seed):
    if scale < 2.0**-24:
        scale = 2.0**-24
    x = np.random.default_rng(seed).integers(-128, 128, size=(8, n)).astype(np.int8)
    z, _ = _float_softmax(x, scale)
    ls = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    want = np.clip(np.round(16 * ls) + 127, -128, 127)
    # TFLite's reference kernel gives -128 for a difference below diff_min (it drops the
    # term, like softmax): there the output is exactly -128, whatever the float value.
    cut = x.astype(int) - x.max(axis=-1, keepdims=True) < Q.log_softmax_params(scale).diff_min
    for kernel in ("reference", "optimized"):
        y = Q.log_softmax(x, scale, kernel=kernel).astype(int)
        if kernel == "reference":
            assert (y[cut] == -128).all()
            assert np.abs(y - want)[~cut].max(initial=0) <= 1
        else:
            assert np.abs(y - want).max() <= 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), e=st.floats(-16.0, -2.0), seed=st.integers(0, 2**32 - 1))
def test_int16_bound(n, e, seed):
    """int16: exps below exp(-10) are clamped to exp(-10), each exp is an integer Q0.15
    value, so the output is within n + 3 steps of round(32768 p) with clamped p."""
    scale = float(np.float32(2.0**e))
    rng = np.random.default_rng(seed)
    x = rng.integers(int(rng.integers(-32768, 32767)), 32768, size=(4, n)).astype(np.int16)
    z, _ = _float_softmax(x, scale)
    ez = np.exp(np.maximum(z, -10.0))
    p = ez / ez.sum(axis=-1, keepdims=True)
    y = Q.softmax(x, scale)
    want = np.clip(np.round(32768 * p), 0, 32767)
    assert np.abs(y.astype(int) - want).max() <= n + 3
    # the row maximum always gets the largest output
    assert np.all(y[np.arange(4), x.argmax(axis=1)] == y.max(axis=1))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), scale=_scales, seed=st.integers(0, 2**32 - 1))
def test_int8_to_int16_matches_cmsis_and_bound(n, scale, seed):
    x = np.random.default_rng(seed).integers(-128, 128, size=(4, n)).astype(np.int8)
    y = Q.softmax(x, scale, output_dtype=np.int16)
    p = Q.softmax_params(scale)
    np.testing.assert_array_equal(Q.softmax_s8_s16(x, 4, n, *p), y)
    _, pf = _float_softmax(x, scale)
    want = np.clip(np.round(65536 * pf) - 32768, -32768, 32767)
    assert np.abs(y.astype(int) - want).max() <= 1 + n / 16


# ---------------------------------------------------------------- layout


def test_axis_and_layout():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(5, 6, 7)).astype(np.int8)
    for axis in (0, 1, -2):
        want = np.moveaxis(Q.softmax(np.moveaxis(x, axis, -1), 0.05), -1, axis)
        np.testing.assert_array_equal(Q.softmax(x, 0.05, axis=axis), want)
    xf = np.asfortranarray(x)
    np.testing.assert_array_equal(Q.softmax(xf, 0.05), Q.softmax(x, 0.05))
    ro = x.copy()
    ro.flags.writeable = False
    before = ro.copy()
    Q.softmax(ro, 0.05)
    Q.log_softmax(ro, 0.05, axis=0)
    np.testing.assert_array_equal(ro, before)


def test_empty_and_single():
    assert Q.softmax(np.zeros((3, 0), np.int8), 0.1).shape == (3, 0)
    assert Q.softmax(np.zeros((0, 4), np.int16), 0.1).shape == (0, 4)
    assert Q.log_softmax(np.zeros((0, 4), np.uint8), 0.1).shape == (0, 4)
    assert Q.softmax(np.array([5], np.int8), 0.1).tolist() == [127]
    assert Q.softmax(np.array([5], np.uint8), 0.1).tolist() == [255]
    assert Q.log_softmax(np.array([5], np.int8), 0.1).tolist() == [127]


def test_512_equal_values():
    x = np.full((2, 512), 7, np.int8)
    with pytest.raises(ValueError, match="aborts on row 0"):
        Q.softmax(x, 0.1)
    with pytest.raises(ValueError, match="512"):
        Q.softmax_s8(x, 2, 512, *Q.softmax_params(0.1))
    # std::round(256 / 512) = 1 (halves away from zero): -127
    assert np.all(Q.softmax(x, 0.1, kernel="optimized") == -127)
    np.testing.assert_array_equal(Q.softmax(x[:, :511], 0.1), np.full((2, 511), -127, np.int8))
    y16 = Q.softmax(x, 0.1, output_dtype=np.int16)  # int16 output: no abort
    assert np.all(y16 == 128 - 32768)


def test_sum_overflow():
    with pytest.raises(ValueError, match="overflows"):
        Q.softmax(np.full((1, 5000), 3, np.int8), 0.1, output_dtype=np.int16)
    with pytest.raises(ValueError, match="overflows"):
        Q.log_softmax(np.full((1, 5000), 3, np.int8), 0.1)
    with pytest.raises(ValueError, match="overflows"):
        Q.softmax(np.full((1, 66000), 3, np.int16), 0.1)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [[1, 2, 3], np.zeros(3), np.zeros(3, np.int32), np.ones(3, bool)])
def test_bad_dtype(bad):
    with pytest.raises(TypeError, match="int8, uint8 or int16"):
        Q.softmax(bad, 0.1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"kernel": "fast"}, ValueError, "kernel must be one of"),
        ({"output_dtype": np.uint8}, TypeError, "output_dtype for int8 input"),
        ({"output_dtype": "float32"}, TypeError, "output_dtype"),
        ({"beta": 0.0}, ValueError, "beta must be > 0"),
        ({"beta": float("nan")}, ValueError, "beta must be finite"),
        ({"axis": (0, 1)}, TypeError, "single int"),
        ({"axis": 2}, AxisError, "axis"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Q.softmax(np.zeros((2, 3), np.int8), 0.1, **kwargs)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan"), 1e-50, "0.1", True])
def test_bad_scale(scale):
    with pytest.raises((ValueError, TypeError), match="input_scale"):
        Q.softmax(np.zeros(3, np.int8), scale)


def test_other_errors():
    with pytest.raises(ValueError, match="at least one dimension"):
        Q.softmax(np.int8(3), 0.1)
    with pytest.raises(TypeError, match="int16 LOG_SOFTMAX"):
        Q.log_softmax(np.zeros(3, np.int16), 0.1)
    with pytest.raises(ValueError, match="2\\*\\*-26"):
        Q.softmax(np.zeros(3, np.int8), 2.0**-27)
    Q.softmax(np.zeros(3, np.int8), 2.0**-27, kernel="optimized")  # no check there
    with pytest.raises(ValueError, match="num_rows \\* row_size"):
        Q.softmax_s8(np.zeros(6, np.int8), 2, 2, 1 << 30, 1, -100)
    with pytest.raises(TypeError, match="dtype int8"):
        Q.softmax_s8(np.zeros(4, np.uint8), 2, 2, 1 << 30, 1, -100)
    with pytest.raises(ValueError, match="shift"):
        Q.softmax_s8(np.zeros(4, np.int8), 2, 2, 1 << 30, 32, -100)
    with pytest.raises(TypeError, match="mult"):
        Q.softmax_u8(np.zeros(4, np.uint8), 2, 2, 1.5, 1, -100)
    with pytest.raises(ValueError, match="op must be"):
        Q.output_quantization("relu", np.int8)


def test_import_softmaxkit_does_not_import_numba_or_quantized():
    import subprocess
    import sys

    code = (
        "import sys, softmaxkit; "
        "assert 'numba' not in sys.modules and 'softmaxkit.quantized' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- CLI


def test_cli_int8(capsys, tmp_path):
    from softmaxkit.cli import main

    argv = ["int8", "--input-scale", "0.00392", "--rows", "2", *map(str, SEED.tolist())]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "[[-57 -70 -79 -86 -92]\n [-94 -88 -54 -91 -56]]" in text
    assert "multiplier 1077521408, shift 19, diff_min -3968" in text
    f = tmp_path / "x.npy"
    np.save(f, np.full((2, 512), 3, np.int8))
    assert main(["int8", "--input-scale", "0.1", "--npy", str(f)]) == 2
    assert "aborts" in capsys.readouterr().err
    out = tmp_path / "y.npy"
    argv = ["int8", "--input-scale", "0.1", "--npy", str(f), "--kernel", "optimized"]
    assert main([*argv, "--out", str(out)]) == 0
    assert np.all(np.load(out) == -127)
    assert main(["int8", "--input-scale", "0.1", "300"]) == 2
    assert "outside the int8 range" in capsys.readouterr().err


def test_demo_step():
    import io

    from softmaxkit.cli.quantized import DEMO_STEPS

    buf = io.StringIO()
    for step in DEMO_STEPS:
        step(buf)
    text = buf.getvalue()
    assert "[-57, -70, -79, -86, -92, -94, -88, -54, -91, -56]  (exact)" in text
    assert "[-93, -100, -104, -107, -111, -111, -108, -90, -109, -91]" in text
