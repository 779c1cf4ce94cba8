"""Record QNNPACK's uint8 softmax from PyTorch (``torch.backends.quantized.engine =
"qnnpack"``), the lookup-table kernel that XNNPACK's ``softmax_nc_qu8`` was ported from.

    PYTHONPATH=src python tools/make_qnnpack_vectors.py

``torch.ops.quantized.softmax`` runs ``qsoftmax_qnnpack`` (QNNPACK's
``softargmax_nc_q8`` with the ``u8lut32norm`` micro-kernel) when the engine is
QNNPACK and ``is_qnnpack_compatible`` holds: per-tensor quint8 input of at least one
dimension, output scale exactly 2^-8 and output zero point 0 (qsoftmax.cpp); any
``dim`` (it permutes the axis last).  Otherwise it dequantises, runs the float
softmax and requantises (the x86 engine's path).  Each case is also run on the x86
engine: ``differs_from_x86`` counts the outputs where the two paths disagree, so the
recorded data show which path produced them.

Cases: rows of equal values (ties of the rounding division, and the uint32 sum that
wraps past 2^32 when ``lrint(UINT32_MAX / channels)`` rounds up: 513, 514, 1025, 3000
channels), one-value rows (256 saturates to 255), large input scales (table entries
underflow to 0), random rows of 1 to 4097 values with rows biased towards the max,
and a 3-D input reduced over a middle axis.  Output, replayed by
``tests/test_quant_qnnpack.py`` without torch: ``tests/data/qnnpack/vectors.npz``
(``c<i>_x``, ``c<i>_y``) and ``cases.json`` (parameters, versions).
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "qnnpack"
RNG = np.random.default_rng(20261205)
warnings.filterwarnings("ignore")

SCALES = [1 / 255, 1 / 256, 1 / 128, 0.05, 0.1, 2.0**-5, 0.0123, 0.25, 1.0, 3.0, 1e-3]


def run(x, scale, zp, engine, dim):
    """``torch.ops.quantized.softmax`` of quint8 ``x`` with output 1/256, 0 on ``engine``."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x.copy()), scale, zp)
        assert q.dtype == torch.quint8
        return torch.ops.quantized.softmax(q, dim, 1 / 256, 0).int_repr().numpy()
    finally:
        torch.backends.quantized.engine = old


def cases():
    for n in (2, 3, 5, 512, 513, 514, 1000, 1025, 3000):
        x = np.full((2, n), 7, dtype=np.uint8)
        x[1] = 200
        yield x, 0.1, 0, -1, f"{n} equal values"
    yield np.array([[0], [255], [17]], dtype=np.uint8), 0.05, 3, -1, "one value per row"
    for scale in (10.0, 40.0):
        x = RNG.integers(0, 256, size=(4, 50)).astype(np.uint8)
        yield x, scale, 128, -1, f"input scale {scale}: table entries underflow"
    for k in range(40):
        n = int(RNG.choice([1, 2, 5, 10, 33, 100, 257, 1000, 4097]))
        rows = int(RNG.integers(1, 9))
        x = RNG.integers(0, 256, size=(rows, n))
        if k % 2:  # most values near the row max: large outputs, frequent ties
            top = RNG.integers(0, 256, size=(rows, 1))
            x = np.clip(top - RNG.integers(0, 4, size=(rows, n)), 0, 255)
        scale = float(RNG.choice(SCALES))
        zp = int(RNG.integers(0, 256))
        yield x.astype(np.uint8), scale, zp, -1, f"random {k}"
    x = RNG.integers(0, 256, size=(3, 40, 5)).astype(np.uint8)
    yield x, 0.07, 100, 1, "3-D, dim=1 (QNNPACK path permutes it last)"


def main() -> None:
    meta, arrays = [], {}
    for i, (x, scale, zp, dim, note) in enumerate(cases()):
        y = run(x, scale, zp, "qnnpack", dim)
        y86 = run(x, scale, zp, "x86", dim)
        arrays[f"c{i}_x"] = x
        arrays[f"c{i}_y"] = y
        meta.append(
            {"id": f"c{i}", "shape": list(x.shape), "input_scale": scale,
             "input_zero_point": zp, "axis": dim, "differs_from_x86": int((y != y86).sum()),
             "note": note}
        )  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "vectors.npz", **arrays)
    info = {
        "generator": "tools/make_qnnpack_vectors.py",
        "engine": "qnnpack",
        "output": {"scale": 1 / 256, "zero_point": 0},
        "runtime": {"torch": torch.__version__, "numpy": np.__version__,
                    "python": platform.python_version(), "machine": platform.machine(),
                    "supported_engines": list(torch.backends.quantized.supported_engines)},
        "cases": meta,
    }  # fmt: skip
    (OUT / "cases.json").write_text(json.dumps(info, indent=1) + "\n")
    n = sum(a.size for k, a in arrays.items() if k.endswith("_y"))
    d = sum(c["differs_from_x86"] for c in meta)
    print(f"{len(meta)} cases, {n} values ({d} differ from the x86 engine) -> {OUT}")


if __name__ == "__main__":
    main()
