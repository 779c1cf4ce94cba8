"""runtime="xnnpack" and "torch-qnnpack" against QNNPACK's uint8 softmax as PyTorch
runs it (engine "qnnpack"): vectors recorded by tools/make_qnnpack_vectors.py, replayed
with NumPy only, and a live fuzz test when torch (with the qnnpack engine) is installed.

XNNPACK's ``softmax_nc_qu8`` has QNNPACK's table (same ``qscale`` and ``lrint(qscale *
exp((i - 255) * scale))``), the same ``x_max ^ 255`` table offset and the same
``u8lut32norm`` arithmetic (uint32 sum, ``((t << 8) + sum / 2) / sum``, clamped to
255): docs/quantized.md."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from softmaxkit import quantized as Q

DATA = Path(__file__).parent / "data" / "qnnpack"
_INFO = json.loads((DATA / "cases.json").read_text())
with np.load(DATA / "vectors.npz") as _f:
    _VEC = {k: _f[k] for k in _f.files}


@pytest.mark.parametrize("runtime", ["xnnpack", "torch-qnnpack"])
@pytest.mark.parametrize("case", _INFO["cases"], ids=lambda c: c["id"])
def test_qnnpack_vectors(case, runtime):
    x, want = _VEC[case["id"] + "_x"], _VEC[case["id"] + "_y"]
    got = Q.softmax(x, case["input_scale"], runtime=runtime, axis=case["axis"])
    np.testing.assert_array_equal(got, want)


def test_qnnpack_vectors_are_from_the_lut_path():
    """The recorded outputs are QNNPACK's, not the float path's: on the cases where
    torch's x86 engine gave other numbers, our model of that engine differs from the
    recording by exactly as many values."""
    assert _INFO["runtime"]["torch"].startswith("2.13") and _INFO["engine"] == "qnnpack"
    total = 0
    for c in _INFO["cases"]:
        x, want = _VEC[c["id"] + "_x"], _VEC[c["id"] + "_y"]
        fl = Q.softmax(
            x, c["input_scale"], runtime="torch", axis=c["axis"],
            input_zero_point=c["input_zero_point"], output_scale=1 / 256, output_zero_point=0,
        )  # fmt: skip
        assert int((fl != want).sum()) == c["differs_from_x86"], c["note"]
        total += c["differs_from_x86"]
    assert total > 1000


def test_lut32norm_wraps_and_ties():
    """Rows of n equal values, worked by hand from the source: ``t = lrint(qscale)``,
    ``sum = n * t`` modulo 2^32, ``y = min(((t << 8) + sum // 2) // sum, 255)``."""
    for n, want in [(2, 128), (512, 1), (1000, 0), (513, 255), (514, 255), (1025, 255)]:
        qscale = min(4294967295.0 / n, 8388607.0)
        t = round(qscale)  # Python's round is half-even, as lrint
        s = (n * t) % 2**32
        assert min(((t << 8) + s // 2) // s, 255) == want, n
        x = np.full((1, n), 200, dtype=np.uint8)
        assert (Q.softmax(x, 0.1, runtime="xnnpack") == want).all(), n


def test_qnnpack_table_formula():
    """``lrint(qscale * exp((i - 255) * (double)scale))`` with the C library's exp."""
    from softmaxkit.quantized._runtimes import qnnpack_table

    for scale, n in [(0.1, 10), (1 / 255, 513), (3.0, 4097), (0.0123, 1)]:
        s = float(np.float32(scale))
        qscale = min(4294967295.0 / n, 8388607.0)
        want = [round(qscale * math.exp((i - 255) * s)) for i in range(255, -1, -1)]
        assert qnnpack_table(scale, n).tolist() == want


def test_qnnpack_live():
    torch = pytest.importorskip("torch")
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack engine")
    rng = np.random.default_rng(7)
    engine = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "qnnpack"
        for k in range(60):
            n = int(rng.choice([1, 3, 8, 64, 255, 512, 513, 700, 2049]))
            x = rng.integers(0, 256, size=(int(rng.integers(1, 6)), n))
            if k % 3 == 0:  # near-equal rows: ties and the wrapped sum
                x = np.clip(x.max(1, keepdims=True) - rng.integers(0, 2, size=x.shape), 0, 255)
            x = x.astype(np.uint8)
            scale = float(np.float32(rng.choice([1e-3, 1 / 256, 0.02, 0.1, 0.5, 2.0, 20.0])))
            zp = int(rng.integers(0, 256))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), scale, zp)
            want = torch.ops.quantized.softmax(q, -1, 1 / 256, 0).int_repr().numpy()
            got = Q.softmax(x, scale, runtime="xnnpack")
            np.testing.assert_array_equal(got, want, err_msg=f"n={n} scale={scale}")
    finally:
        torch.backends.quantized.engine = engine


@pytest.mark.parametrize("runtime", ["xnnpack", "torch-qnnpack"])
@pytest.mark.parametrize("n", [1024, 2048, 4096])
def test_lut32norm_zero_sum_raises(runtime, n):
    """n equal values with ``n * lrint((2^32 - 1) / n) == 2^32`` (n a power of two from
    1024 on): the uint32 sum wraps to 0 and the runtimes divide by zero (torch 2.13's
    QNNPACK engine on x86-64 dies with SIGFPE); the model raises a ValueError instead
    of Numba's ZeroDivisionError, and identify() skips that runtime."""
    x = np.full((3, n), 200, dtype=np.uint8)
    x[0, 0] = 7  # row 0 sums to less than 2^32: only rows 1 and 2 wrap to 0
    with pytest.raises(ValueError, match=rf"runtime='{runtime}'.*wraps to 0.*vsum != 0"):
        Q.softmax(x, 0.1, runtime=runtime)
    got = Q.softmax(x[:1], 0.1, runtime=runtime)
    assert got[0, 0] == 0 and (got[0, 1:] == 0).all()


@pytest.mark.parametrize("runtime", ["xnnpack", "torch-qnnpack"])
@pytest.mark.parametrize("scale", [1e-40, 1e-38, 1e-45])
def test_qnnpack_refuses_subnormal_scale(runtime, scale):
    """Both create functions check ``isnormal(input_scale)`` (float32): torch 2.13's
    QNNPACK engine raises 'failed to create QNNPACK Softmax operator' on 1e-40, 1e-38
    and inf (every runtime refuses a non-finite scale already)."""
    x = np.array([[1, 2, 3]], dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"runtime='{runtime}'.*isnormal.*; got "):
        Q.softmax(x, scale, runtime=runtime)
    assert Q.softmax(x, 1.2e-38, runtime=runtime).tolist() == [[85, 85, 85]]


def test_float64_division_is_the_integer_quotient():
    """``lut32norm_rows`` divides in float64: ``floor(num / s) == num // s`` for every
    ``num, s < 2^32`` (a quotient just below an integer is at least ``1 / s`` below
    it, beyond float64's rounding); tried on the quotients nearest an integer."""
    rng = np.random.default_rng(11)
    s = np.concatenate([rng.integers(1, 2**32, size=20000), 2**32 - 1 - np.arange(100),
                        np.arange(1, 101)]).astype(np.uint64)  # fmt: skip
    k = rng.integers(0, 2**32, size=s.size).astype(np.uint64) // s  # a quotient that fits
    for off in (-1, 0, 1):
        num = np.clip(k.astype(np.int64) * s.astype(np.int64) + off * (s > 1), 0, 2**32 - 1)
        num = num.astype(np.uint64)
        got = np.floor(num.astype(np.float64) / s.astype(np.float64))
        np.testing.assert_array_equal(got.astype(np.uint64), num // s)
