"""Record ``torch.ops.quantized.softmax`` test vectors from the real PyTorch runtime.

    PYTHONPATH=src python tools/make_torch_vectors.py

Cases: per-tensor qint8 / quint8 inputs of several shapes, input scales and zero
points, output quantizations; each run on torch's default engine (x86: dequantise
-> at::softmax -> quantize_per_tensor) and, for quint8 with output 1/256 and 0, on
the ``qnnpack`` engine (QNNPACK's lookup-table softargmax).  Output, replayed by
``tests/test_quant_runtimes.py`` without torch: ``tests/data/torch/vectors.npz``
(``c<i>_x``, ``c<i>_y``) and ``cases.json`` (parameters, engine, versions).
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "torch"
RNG = np.random.default_rng(20261205)
warnings.filterwarnings("ignore")

SCALES = [1 / 255, 1 / 256, 1 / 128, 0.05, 0.1, 2.0**-5, 0.0123, 0.25]


def run(x, scale, zp, out_scale, out_zp, engine, axis=-1):
    torch.backends.quantized.engine = engine
    dt = torch.qint8 if x.dtype == np.int8 else torch.quint8
    q = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x.copy()), scale, zp)
    assert q.dtype == dt
    y = torch.ops.quantized.softmax(q, axis, out_scale, out_zp)
    return y.int_repr().numpy()


def cases():
    seed = np.array([[101, 49, 6, -34, -75], [-79, -38, 120, -55, 115]], dtype=np.int8)
    yield seed, 1 / 255, 0, 1 / 256, -128, "x86", "seed"
    for k in range(60):
        dt = np.int8 if k % 2 == 0 else np.uint8
        info = np.iinfo(dt)
        n = int(RNG.choice([1, 2, 5, 10, 33, 100, 257, 1000]))
        rows = int(RNG.integers(1, 9))
        x = RNG.integers(info.min, info.max + 1, size=(rows, n)).astype(dt)
        scale = float(RNG.choice(SCALES))
        zp = int(RNG.integers(info.min, info.max + 1)) if k % 3 else (0 if dt == np.int8 else 128)
        if k % 4 == 1:
            out_scale, out_zp = 1 / 256, (-128 if dt == np.int8 else 0)
        else:
            out_scale = float(RNG.choice([1 / 256, 1 / 255, 1 / 128, 0.01]))
            out_zp = int(RNG.integers(info.min, info.min + 10))
        yield x, scale, zp, out_scale, out_zp, "x86", f"random {k}"
        if dt == np.uint8:
            yield x, scale, zp, 1 / 256, 0, "qnnpack", f"random {k} qnnpack"


def main() -> None:
    meta, arrays = [], {}
    for i, (x, scale, zp, os_, ozp, engine, note) in enumerate(cases()):
        y = run(x, scale, zp, os_, ozp, engine)
        arrays[f"c{i}_x"] = x
        arrays[f"c{i}_y"] = y
        meta.append(
            {"id": f"c{i}", "dtype": str(x.dtype), "shape": list(x.shape), "input_scale": scale,
             "input_zero_point": zp, "output_scale": os_, "output_zero_point": ozp,
             "engine": engine, "note": note}
        )  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "vectors.npz", **arrays)
    info = {
        "generator": "tools/make_torch_vectors.py",
        "runtime": {"torch": torch.__version__, "numpy": np.__version__,
                    "python": platform.python_version(), "machine": platform.machine()},
        "cases": meta,
    }  # fmt: skip
    (OUT / "cases.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"{len(meta)} cases -> {OUT}")


if __name__ == "__main__":
    main()
