"""softmaxkit.quantized.softmax(runtime=...): PyTorch, ONNX Runtime, QNNPACK/XNNPACK and
the float route, bit-exact against vectors recorded from the real runtimes
(tools/make_torch_vectors.py, tools/make_ort_vectors.py) and, when the runtime is
installed, against it live on random inputs."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from softmaxkit import quantized as Q

DATA = Path(__file__).parent / "data"
TOOLS = Path(__file__).parent.parent / "tools"


def _load(name):
    info = json.loads((DATA / name / "cases.json").read_text())
    with np.load(DATA / name / "vectors.npz") as f:
        vec = {k: f[k] for k in f.files}
    return info, vec


_TORCH_INFO, _TORCH_VEC = _load("torch")
_ORT_INFO, _ORT_VEC = _load("onnxruntime")


def _ort_model(x, c):
    """Our model of QLinearSoftmax for the node's opset and axis."""
    kw = {
        "runtime": "onnxruntime",
        "input_zero_point": c["input_zero_point"],
        "output_scale": c["output_scale"],
        "output_zero_point": c["output_zero_point"],
    }
    ax = c["axis"] % x.ndim
    if c["opset"] < 13:  # opset 1: rows are the flattened trailing dims from axis on
        x2 = x.reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), -1)
        return Q.softmax(x2, c["input_scale"], **kw).reshape(x.shape)
    return Q.softmax(x, c["input_scale"], axis=ax, **kw)


@pytest.mark.parametrize("case", _ORT_INFO["cases"], ids=lambda c: c["id"])
def test_onnxruntime_vectors(case):
    x, want = _ORT_VEC[case["id"] + "_x"], _ORT_VEC[case["id"] + "_y"]
    np.testing.assert_array_equal(_ort_model(x, case), want)


@pytest.mark.parametrize("case", _TORCH_INFO["cases"], ids=lambda c: c["id"])
def test_torch_vectors(case):
    x, want = _TORCH_VEC[case["id"] + "_x"], _TORCH_VEC[case["id"] + "_y"]
    runtime = "torch" if case["engine"] == "x86" else "torch-qnnpack"
    got = Q.softmax(
        x, case["input_scale"], runtime=runtime, input_zero_point=case["input_zero_point"],
        output_scale=case["output_scale"], output_zero_point=case["output_zero_point"],
    )  # fmt: skip
    np.testing.assert_array_equal(got, want)


def test_recorded_versions_and_coverage():
    assert _TORCH_INFO["runtime"]["torch"].startswith("2.13")
    assert _ORT_INFO["runtime"]["onnxruntime"].startswith("1.")
    assert {c["engine"] for c in _TORCH_INFO["cases"]} == {"x86", "qnnpack"}
    assert {c["opset"] for c in _ORT_INFO["cases"]} == {1, 13}
    assert {c["dtype"] for c in _ORT_INFO["cases"]} == {"int8", "uint8"}


def _random_case(rng, dt):
    info = np.iinfo(dt)
    n = int(rng.choice([1, 3, 10, 64, 300]))
    x = rng.integers(info.min, info.max + 1, size=(int(rng.integers(1, 6)), n)).astype(dt)
    if rng.random() < 0.3:
        x[:, : n // 2] = x.max()
    scale = float(rng.choice([1 / 255, 1 / 256, 1 / 128, 0.02, 0.1, 0.3, 2.0**-6]))
    return x, scale


def test_onnxruntime_live():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    sys.path.insert(0, str(TOOLS))
    from make_ort_vectors import run

    rng = np.random.default_rng(7)
    for k in range(60):
        dt = np.int8 if k % 2 else np.uint8
        x, xs = _random_case(rng, dt)
        info = np.iinfo(dt)
        ys = float(rng.choice([1 / 256, 1 / 255, 0.01, float(rng.uniform(0.002, 0.05))]))
        yzp = int(rng.integers(info.min, info.min + 20))
        opset = 1 if k % 3 == 0 else 13
        c = {"axis": -1, "opset": opset, "input_scale": xs, "input_zero_point": 0}
        c |= {"output_scale": ys, "output_zero_point": yzp}
        np.testing.assert_array_equal(_ort_model(x, c), run(x, opset, -1, xs, 0, ys, yzp))


def test_torch_live():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    engine = torch.backends.quantized.engine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(60):
                dt = np.int8 if k % 2 else np.uint8
                x, xs = _random_case(rng, dt)
                info = np.iinfo(dt)
                zp = int(rng.integers(info.min, info.max + 1))
                qnn = dt == np.uint8 and k % 4 == 1
                if qnn:
                    if "qnnpack" not in torch.backends.quantized.supported_engines:
                        continue
                    torch.backends.quantized.engine = "qnnpack"
                    os_, ozp = 1 / 256, 0
                else:
                    torch.backends.quantized.engine = "x86"
                    os_ = float(rng.choice([1 / 256, 1 / 255, 0.01]))
                    ozp = int(rng.integers(info.min, info.min + 20))
                q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x.copy()), xs, zp)
                want = torch.ops.quantized.softmax(q, -1, os_, ozp).int_repr().numpy()
                got = Q.softmax(
                    x, xs, runtime="torch-qnnpack" if qnn else "torch", input_zero_point=zp,
                    output_scale=os_, output_zero_point=ozp,
                )  # fmt: skip
                np.testing.assert_array_equal(got, want)
    finally:
        torch.backends.quantized.engine = engine


# ------------------------------------------------------------------ the runtimes


def test_runtimes_listed_and_seed():
    assert set(Q.RUNTIMES) >= {"tflite-reference", "tflite-x86", "cmsis-nn", "tflite-micro",
                               "torch", "torch-qnnpack", "onnxruntime", "xnnpack",
                               "float-route"}  # fmt: skip
    x = np.array([[101, 49, 6, -34, -75], [-79, -38, 120, -55, 115]], dtype=np.int8)
    want = [[-57, -70, -79, -86, -92], [-94, -88, -54, -91, -56]]
    for rt in ("tflite-reference", "tflite-x86", "cmsis-nn", "tflite-micro", "torch"):
        assert Q.softmax(x, 1 / 255, runtime=rt).tolist() == want, rt
    # the legacy kernel= names are the TFLite runtimes
    np.testing.assert_array_equal(
        Q.softmax(x, 0.05, kernel="optimized"), Q.softmax(x, 0.05, runtime="tflite-x86")
    )


def test_float_route_rounding():
    """4 equal values: p = 1/4, times 1/0.1 = 10 (float32) is the tie 2.5."""
    x = np.zeros((1, 4), dtype=np.int8)
    even = Q.softmax(x, 0.1, runtime="float-route", output_scale=0.1, output_zero_point=0)
    away = Q.softmax(
        x, 0.1, runtime="float-route", output_scale=0.1, output_zero_point=0, rounding="half-away"
    )
    assert even.tolist() == [[2, 2, 2, 2]] and away.tolist() == [[3, 3, 3, 3]]
    neg = Q.softmax(x, 0.1, runtime="float-route", output_scale=0.1, output_zero_point=-128)
    assert neg.tolist() == [[-126] * 4]


def test_float_route_close_to_float64():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(50, 40)).astype(np.int8)
    got = Q.softmax(x, 0.05, runtime="float-route").astype(np.int64)
    v = x * np.float64(np.float32(0.05))
    p = np.exp(v - v.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.abs(got - (np.rint(p * 256) - 128).clip(-128, 127)).max() <= 1


def test_lut32norm_hand_case():
    """QNNPACK/XNNPACK: two equal values -> (t << 8 + sum / 2) // sum = 128."""
    x = np.array([[255, 255], [0, 255]], dtype=np.uint8)
    y = Q.softmax(x, 1.0, runtime="xnnpack")
    assert y[0].tolist() == [128, 128]
    assert y[1].tolist() == [0, 255]  # exp(-255) rounds to table entry 0; 256 saturates


@pytest.mark.parametrize(
    ("runtime", "kwargs", "match"),
    [
        ("xnnpack", {"x": np.int8}, "xnn_create_softmax_nc_qu8 takes uint8"),
        ("torch-qnnpack", {"x": np.int8}, "runtime='torch'"),
        ("xnnpack", {"output_scale": 1 / 255}, "only output scale of 1/256"),
        ("xnnpack", {"output_zero_point": 3}, "only output zero point of 0"),
        ("tflite-reference", {"output_scale": 1 / 255}, "TF_LITE_ENSURE_NEAR"),
        ("tflite-x86", {"output_zero_point": 5}, "TF_LITE_ENSURE_EQ"),
        ("onnxruntime", {"x": np.int16}, "takes int8 or uint8"),
        ("torch", {"beta": 2.0}, "has no beta"),
        ("torch", {"rounding": "half-away"}, "float-route"),
        ("float-route", {"rounding": "up"}, "half-even"),
        ("torch", {"output_zero_point": 300}, "quant_min"),
        ("torch", {"output_dtype": np.int16}, "output dtype is the input dtype"),
        ("nope", {}, "runtime must be one of"),
    ],
)
def test_runtime_errors(runtime, kwargs, match):
    dt = kwargs.pop("x", np.uint8)
    x = np.zeros((2, 3), dtype=dt)
    with pytest.raises(ValueError, match=match):
        Q.softmax(x, 0.1, runtime=runtime, **kwargs)


def test_runtime_kernel_conflict_and_log_softmax():
    x = np.zeros(3, np.int8)
    with pytest.raises(ValueError, match="contradicts"):
        Q.softmax(x, 0.1, runtime="torch", kernel="reference")
    with pytest.raises(ValueError, match="has no quantized log_softmax"):
        Q.log_softmax(x, 0.1, runtime="onnxruntime")
    np.testing.assert_array_equal(Q.log_softmax(x, 0.1, runtime="cmsis-nn"), Q.log_softmax(x, 0.1))


# ------------------------------------------------------------------ issue 18


def test_axis_none_is_a_named_error():
    """axis=None raised "too many values to unpack"."""
    with pytest.raises(ValueError, match="axis=None is not supported"):
        Q.softmax(np.zeros((2, 3), np.int8), 0.1, axis=None)


def test_output_quantization_unknown_dtype_lists_choices():
    """output_quantization(..., 'x') raised a bare TypeError / numpy's 'not understood'."""
    for op in ("softmax", "log_softmax"):
        with pytest.raises(ValueError, match="'int8', 'uint8', 'int16'"):
            Q.output_quantization(op, np.int8, "x")
    with pytest.raises(ValueError, match="input_dtype must be one of"):
        Q.output_quantization("softmax", "x")


# ------------------------------------------------------------------ identify

_SEED_X = np.array([101, 49, 6, -34, -75, -79, -38, 120, -55, 115], dtype=np.int8)
_SEED_Y = np.array([-57, -70, -79, -86, -92, -94, -88, -54, -91, -56], dtype=np.int8)


def test_identify_seed():
    found = Q.identify(_SEED_X.reshape(2, 5), _SEED_Y.reshape(2, 5))
    assert found and all(m.mismatches == 0 for m in found)
    names = {m.runtime for m in found}
    assert {"tflite-reference", "cmsis-nn", "tflite-x86", "torch", "onnxruntime"} <= names
    assert all(abs(m.input_scale - 1 / 255) < 1e-9 for m in found)
    assert "input_scale=1/255" in str(found[0]) and "bit-exact" in str(found[0])
    # flat: found as 2 rows of 5 (one row of 10 matches nothing)
    flat = Q.identify(_SEED_X, _SEED_Y)
    assert flat[0].rows == 2 and flat[0].mismatches == 0


@pytest.mark.parametrize(
    ("runtime", "dt", "scale"),
    [("onnxruntime", np.int8, 0.07), ("xnnpack", np.uint8, 0.03), ("float-route", np.int8, 0.2),
     ("tflite-x86", np.uint8, 0.011)],
)  # fmt: skip
def test_identify_finds_the_runtime(runtime, dt, scale):
    rng = np.random.default_rng(11)
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, size=(6, 40)).astype(dt)
    y = Q.softmax(x, scale, runtime=runtime)
    found = Q.identify(x, y)
    hit = [m for m in found if m.runtime == runtime]
    assert hit and hit[0].mismatches == 0
    assert Q.softmax(x, hit[0].input_scale, runtime=runtime).tolist() == y.tolist()


def test_identify_closest_when_none_matches():
    y = _SEED_Y.reshape(2, 5).copy()
    y[0, 0] += 3
    found = Q.identify(_SEED_X.reshape(2, 5), y, max_results=3)
    assert len(found) == 3 and all(m.mismatches >= 1 for m in found)
    assert found[0].mismatches == 1 and found[0].max_abs_diff == 3
    assert "1 entries differ (max 3 steps)" in str(found[0])


def test_identify_errors():
    with pytest.raises(ValueError, match="shape"):
        Q.identify(_SEED_X, _SEED_Y[:5])
    with pytest.raises(ValueError, match="outside the int8 range"):
        Q.identify(_SEED_X, _SEED_Y.astype(np.int16) + 300)
    with pytest.raises(TypeError, match="int8"):
        Q.identify(_SEED_X.astype(np.float32), _SEED_Y)


def test_cli_identify(capsys):
    from softmaxkit.cli import main

    rc = main(["int8", "identify", "--input=" + ",".join(map(str, _SEED_X)),
               "--expected=" + ",".join(map(str, _SEED_Y)), "--rows", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "bit-exact matches" in out and "tflite-reference: input_scale=1/255" in out
    rc = main(["int8", "--input-scale", "0.0039", "--rows", "2", "--runtime", "torch",
               *map(str, _SEED_X)])  # fmt: skip
    assert rc == 0 and "runtime=torch" in capsys.readouterr().out


def test_bench_family_quantized():
    from softmaxkit.bench import select_cases

    (case,) = select_cases(quick=True, families=["quantized"])
    assert case.family == "quantized" and "float route" in case.baseline
    want = case.impls["softmaxkit tflite-reference"]()
    for name, fn in case.impls.items():
        got = np.asarray(fn())
        assert got.shape == want.shape and case.check(got) < 1.5, name


# ------------------------------------------------------------------ tflite-arm64


def _arm64_by_hand(row, scale, beta, zp, qmin, qmax):
    """SoftmaxInt8LUT written out from the source in plain Python integers (no Numba)."""
    import math

    f32 = np.float32
    sb = f32(f32(scale) * f32(beta))
    m = int(max(row))
    t = [min(65535, int(float(f32(np.exp(f32(sb * f32(-(m - int(v))))) * f32(65535))) + 0.5))
         for v in row]  # fmt: skip
    s = sum(t)
    inv = float(f32(1.0) / f32(f32(s) * f32(1 / 256)))
    frac, shift = math.frexp(inv)
    q = math.floor(frac * 2**31 + 0.5)
    if q == 2**31:
        q, shift = q // 2, shift + 1
    out = []
    for v in t:
        a = v << max(shift, 0)  # SaturatingRoundingDoublingHighMul (a, q >= 0)
        h = (a * q + 2**30) >> 31
        e = max(-shift, 0)  # RoundingDivideByPOT, ties away (h >= 0)
        r = (h + (1 << (e - 1))) >> e if e else h
        out.append(min(max(r + zp, qmin), qmax))
    return out


@pytest.mark.parametrize("dt", [np.int8, np.uint8])
def test_tflite_arm64_matches_the_source_by_hand(dt):
    rng = np.random.default_rng(5)
    info = np.iinfo(dt)
    zp = -128 if dt == np.int8 else 0
    for k in range(40):
        n = int(rng.choice([1, 2, 7, 16, 33, 100]))
        x = rng.integers(info.min, info.max + 1, size=(3, n)).astype(dt)
        scale = float(rng.choice([1 / 255, 0.02, 0.1, 0.5]))
        beta = float(rng.choice([1.0, 0.5, 2.0]))
        got = Q.softmax(x, scale, beta=beta, runtime="tflite-arm64")
        for r in range(3):
            want = _arm64_by_hand(x[r].tolist(), scale, beta, zp, info.min, info.max)
            assert got[r].tolist() == want, (k, r)


def test_tflite_arm64_hand_cases():
    # two equal values: t = 65535 each, inv = 256 / 131070 -> exactly 128 steps
    assert Q.softmax(np.zeros((1, 2), np.int8), 0.1, runtime="tflite-arm64").tolist() == [[0, 0]]
    # one value: 65535 * 256 / 65535 = 256 -> clamped to 127
    assert Q.softmax(np.zeros((1, 1), np.int8), 0.1, runtime="tflite-arm64").tolist() == [[127]]
    with pytest.raises(ValueError, match="TF_LITE_ENSURE_NEAR"):
        Q.softmax(np.zeros(3, np.int8), 0.1, runtime="tflite-arm64", output_scale=0.01)
