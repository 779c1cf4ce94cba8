"""Record quantized SOFTMAX / LOG_SOFTMAX test vectors from the real LiteRT runtime.

Run it in a separate virtual environment that has the interpreter (it never
touches softmaxkit)::

    python3 -m venv /tmp/venv-tflite
    /tmp/venv-tflite/bin/pip install ai-edge-litert==2.3.0
    /tmp/venv-tflite/bin/python tools/make_tflite_vectors.py

Each case is a one-op model built directly as a flatbuffer
(``tools/tflite_softmax_model.py``) and run with three op resolvers:
``BUILTIN_REF`` (TFLite's reference kernels), ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``
(the optimized kernels) and ``AUTO`` (optimized + the default XNNPACK delegate).
Runs that may abort the process (TFLITE_CHECK failures) are made in a child
process and recorded as ``"abort"``.

Output, replayed by ``tests/test_quantized.py`` without TensorFlow:

* ``tests/data/tflite/vectors.npz``: per case ``c<i>_x`` (input), ``c<i>_ref``
  (reference output, absent when it aborts) and ``c<i>_opt_minus_ref`` (optimized
  minus reference, int32, mostly zeros) or ``c<i>_opt`` when the reference aborts;
* ``tests/data/tflite/cases.json``: per case the op, dtypes, shape, float32 scale
  (hex), beta, output quantization, the status of each resolver, and the runtime
  versions.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflite_softmax_model import RESOLVERS, build_model, run_model

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "tflite"
RNG = np.random.default_rng(20261122)

OUT_Q = {
    ("softmax", "int8", "int8"): (1 / 256, -128),
    ("softmax", "uint8", "uint8"): (1 / 256, 0),
    ("softmax", "int8", "int16"): (1 / 65536, -32768),
    ("softmax", "uint8", "int16"): (1 / 65536, -32768),
    ("softmax", "int16", "int16"): (1 / 32768, 0),
    ("log_softmax", "int8", "int8"): (16 / 256, 127),
    ("log_softmax", "uint8", "uint8"): (16 / 256, 255),
}

_CHILD = """
import sys, numpy as np
sys.path.insert(0, {tools!r})
from tflite_softmax_model import run_model
model = open({model!r}, 'rb').read()
x = np.load({x!r})
np.save({y!r}, run_model(model, x, {resolver!r}))
"""


def run_isolated(model: bytes, x: np.ndarray, resolver: str):
    """Run in a child process; return the output or None when the runtime aborts."""
    with tempfile.TemporaryDirectory() as d:
        mp, xp, yp = (os.path.join(d, n) for n in ("m.tflite", "x.npy", "y.npy"))
        Path(mp).write_bytes(model)
        np.save(xp, x)
        code = _CHILD.format(
            tools=str(Path(__file__).resolve().parent), model=mp, x=xp, y=yp, resolver=resolver
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode != 0:
            return None, (r.stderr.strip().splitlines() or ["?"])[-1][:300], r.returncode
        return np.load(yp), "", 0


def rand(dtype, shape, lo=None, hi=None):
    info = np.iinfo(dtype)
    lo = info.min if lo is None else lo
    hi = info.max if hi is None else hi
    return RNG.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def near_max(dtype, shape, spread):
    """Rows whose values lie within ``spread`` steps of a random row maximum."""
    info = np.iinfo(dtype)
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    n = shape[-1]
    m = RNG.integers(info.min + spread, info.max, size=(rows, 1), endpoint=True)
    x = m - RNG.integers(0, spread, size=(rows, n), endpoint=True)
    return x.astype(dtype).reshape(shape)


def log_scales(lo, hi, k):
    return [float(np.float32(2.0**e)) for e in RNG.uniform(lo, hi, size=k)]


def cases():
    """Yield (op, in_dtype, out_dtype, x, input_scale, beta, note, may_abort)."""
    seed = np.array([101, 49, 6, -34, -75, -79, -38, 120, -55, 115], dtype=np.int8)
    yield "softmax", "int8", "int8", seed.reshape(2, 5), 1 / 255, 1.0, "seed: 2 rows of 5", False
    yield "softmax", "int8", "int8", seed.reshape(1, 10), 1 / 255, 1.0, "seed: 1 row of 10", False
    yield "softmax", "int8", "int8", seed.reshape(2, 5), 0.00392, 1.0, "seed, scale 0.00392", False

    # 8-bit softmax over many scales, betas, shapes and value spreads
    shapes = [(1, 1), (5, 1), (3, 2), (7, 13), (4, 3, 10), (2, 2, 2, 9), (64, 100), (8, 1000)]
    for in_t, out_t in [
        ("int8", "int8"),
        ("uint8", "uint8"),
        ("int8", "int16"),
        ("uint8", "int16"),
    ]:
        dt = np.dtype(in_t)
        for k, scale in enumerate(log_scales(-25.5, 3.0, 12)):
            beta = [1.0, 1.0, 0.5, 2.0, 0.1, 3.7][k % 6]
            shape = shapes[k % len(shapes)]
            x = rand(dt, shape) if k % 3 else near_max(dt, shape, [3, 20, 60][(k // 3) % 3])
            yield "softmax", in_t, out_t, x, scale, beta, "random", False
        for scale in [1 / 256, 1 / 16, 0.1, 1.0]:
            yield "softmax", in_t, out_t, near_max(dt, (256, 24), 12), scale, 1.0, "near max", False

    # extreme rows
    for in_t, out_t in [("int8", "int8"), ("uint8", "uint8"), ("int8", "int16")]:
        dt = np.dtype(in_t)
        info = np.iinfo(dt)
        extremes = [
            (np.full((1, 7), info.min, dt), "all min"),
            (np.full((1, 7), info.max, dt), "all max"),
            (np.array([[info.min]], dt), "single element"),
            (np.array([[info.max, *([info.min] * 9)]], dt), "one max, rest min"),
            (np.array([[info.min, info.max]], dt), "min and max"),
            (np.full((1, 511), 3, dt), "511 equal values"),
            (np.full((2, 512), 3, dt), "512 equal values"),
            (np.full((1, 4000), 3, dt), "4000 equal values"),
            (rand(dt, (1, 5000)), "long random row"),
            (near_max(dt, (3, 3000), 2), "long row near max"),
        ]
        for x, note in extremes:
            for scale in [1 / 256, 0.05]:
                yield "softmax", in_t, out_t, x, scale, 1.0, note, True

    # the refusal boundary beta * scale = 2^-26
    b = float(np.float32(2.0**-26))
    above = float(np.nextafter(np.float32(b), np.float32(1)))
    x = rand(np.dtype(np.int8), (2, 8))
    yield "softmax", "int8", "int8", x, b, 1.0, "scale = 2^-26 (refused)", True
    yield "softmax", "int8", "int8", x, above, 1.0, "scale just above 2^-26", True
    yield "softmax", "int8", "int8", x, 2.0**-24, 0.25, "beta*scale = 2^-26 (refused)", True
    yield "softmax", "int8", "int8", x, 1e6, 1.0, "huge scale (multiplier capped)", True

    # a large random block to measure how often the two kernels differ
    for scale in [1 / 64, 1 / 8, 0.5]:
        x = rand(np.dtype(np.int8), (4096, 16), -40, 127)
        yield "softmax", "int8", "int8", x, scale, 1.0, "agreement block", False

    # int16 -> int16 (LUT path)
    for k, scale in enumerate(log_scales(-16, 0, 10)):
        beta = [1.0, 0.5, 2.0, 1.0, 0.3][k % 5]
        shape = shapes[k % len(shapes)]
        x = rand(np.dtype(np.int16), shape) if k % 2 else near_max(np.dtype(np.int16), shape, 4000)
        yield "softmax", "int16", "int16", x, scale, beta, "random", False
    i16 = np.dtype(np.int16)
    for x, note in [
        (np.full((1, 9), -32768, i16), "all min"),
        (np.full((1, 9), 32767, i16), "all max"),
        (np.array([[5]], i16), "single element"),
        (np.array([[-32768, 32767]], i16), "min and max"),
        (np.full((1, 3000), 7, i16), "3000 equal values"),
        (rand(i16, (2, 4000)), "long random rows"),
    ]:
        for scale in [1 / 32768, 1 / 1024, 0.01]:
            yield "softmax", "int16", "int16", x, scale, 1.0, note, True

    # log_softmax, 8-bit
    for in_t in ["int8", "uint8"]:
        dt = np.dtype(in_t)
        info = np.iinfo(dt)
        for k, scale in enumerate(log_scales(-24.5, 3.0, 12)):
            shape = shapes[k % len(shapes)]
            x = rand(dt, shape) if k % 2 else near_max(dt, shape, 40)
            yield "log_softmax", in_t, in_t, x, scale, 1.0, "random", False
        for scale in [1 / 256, 1 / 16, 0.1]:
            yield "log_softmax", in_t, in_t, near_max(dt, (512, 24), 30), scale, 1.0, "block", False
        for x, note in [
            (np.full((1, 7), info.min, dt), "all min"),
            (np.full((1, 7), info.max, dt), "all max"),
            (np.array([[info.max]], dt), "single element"),
            (np.array([[info.max, *([info.min] * 9)]], dt), "one max, rest min"),
            (np.full((1, 4000), 3, dt), "4000 equal values"),
            (rand(dt, (1, 5000)), "long random row"),
        ]:
            for scale in [1 / 256, 0.05]:
                yield "log_softmax", in_t, in_t, x, scale, 1.0, note, True
        s25 = float(np.float32(2.0**-25))
        x = rand(dt, (2, 8))
        for scale, note in [
            (s25, "scale = 2^-25"),
            (float(np.nextafter(np.float32(s25), np.float32(0))), "scale just below 2^-25"),
            (float(np.float32(2.0**-26)), "scale = 2^-26"),
        ]:
            yield "log_softmax", in_t, in_t, x, scale, 1.0, note, True


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = []
    n_rows_diff = n_rows = 0
    for i, (op, in_t, out_t, x, scale, beta, note, may_abort) in enumerate(cases()):
        scale32 = np.float32(scale)
        beta32 = np.float32(beta)
        out_scale, out_zp = OUT_Q[(op, in_t, out_t)]
        model = build_model(op, x.shape, in_t, scale32, 0, out_t, out_scale, out_zp, beta32)
        # isolate every run that might hit a TFLITE_CHECK (coarse, generous bound)
        may_abort = may_abort or float(scale32) * float(beta32) < 2.0**-22 or x.shape[-1] >= 500
        res, status, errors = {}, {}, {}
        for name in RESOLVERS:
            if may_abort:
                y, err, rc = run_isolated(model, x, name)
            else:
                y, err, rc = run_model(model, x, name), "", 0
            res[name] = y
            status[name] = "ok" if y is not None else "abort"
            if y is None:
                errors[name] = f"exit status {rc}: {err}"
        key = f"c{i}"
        arrays[f"{key}_x"] = x
        ref, opt, dflt = res["reference"], res["optimized"], res["default"]
        if ref is not None:
            arrays[f"{key}_ref"] = ref
            if opt is not None:
                arrays[f"{key}_opt_minus_ref"] = opt.astype(np.int32) - ref.astype(np.int32)
                d = (opt != ref).reshape(-1, x.shape[-1]).any(axis=1)
                n_rows_diff += int(d.sum())
                n_rows += d.size
        elif opt is not None:
            arrays[f"{key}_opt"] = opt
        same_default = (
            dflt is not None and opt is not None and bool(np.array_equal(dflt, opt))
        ) or (dflt is None and opt is None)
        meta.append(
            {
                "id": key,
                "op": op,
                "input_dtype": in_t,
                "output_dtype": out_t,
                "shape": list(x.shape),
                "input_scale": float(scale32),
                "input_scale_hex": float(scale32).hex(),
                "beta": float(beta32),
                "output_scale": out_scale,
                "output_zero_point": out_zp,
                "status": status,
                "errors": errors,
                "default_equals_optimized": same_default,
                "note": note,
            }
        )
        print(i, op, in_t, out_t, x.shape, f"{float(scale32):.4g}", beta, note, status)
    np.savez_compressed(OUT / "vectors.npz", **arrays)
    info = {
        "generator": "tools/make_tflite_vectors.py",
        "runtime": {
            "ai-edge-litert": version("ai-edge-litert"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "system": platform.system(),
        },
        "resolvers": {
            "reference": "BUILTIN_REF",
            "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
            "default": "AUTO (optimized kernels + default XNNPACK delegate)",
        },
        "rows_compared": n_rows,
        "rows_where_optimized_differs_from_reference": n_rows_diff,
        "cases": meta,
    }
    (OUT / "cases.json").write_text(json.dumps(info, indent=1) + "\n")
    size = (OUT / "vectors.npz").stat().st_size
    print(
        f"{len(meta)} cases, vectors.npz {size / 1e6:.2f} MB; rows differing {n_rows_diff}/{n_rows}"
    )


if __name__ == "__main__":
    main()
