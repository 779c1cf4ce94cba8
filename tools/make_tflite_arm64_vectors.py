"""Record TFLite's ARM64 optimized 8-bit SOFTMAX from a real aarch64 LiteRT wheel.

Replayed by ``tests/test_quant_arm64.py`` (NumPy only) against
``softmaxkit.quantized.softmax(..., runtime="tflite-arm64")``.

Run it with an aarch64 Python that has ``ai-edge-litert`` (and its numpy,
flatbuffers) importable; on an x86-64 Debian 12 host this works under
qemu-user without installing anything arm64 system-wide::

    apt-get install -y qemu-user-static
    dpkg --add-architecture arm64 && apt-get update
    mkdir -p /tmp/arm64/debs /tmp/arm64/root && cd /tmp/arm64/debs
    apt-get download python3.11-minimal:arm64 libpython3.11-minimal:arm64 \\
        libpython3.11-stdlib:arm64 libc6:arm64 libexpat1:arm64 zlib1g:arm64 \\
        libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 libgcc-s1:arm64 \\
        libstdc++6:arm64 libsqlite3-0:arm64 libncursesw6:arm64 libtinfo6:arm64 \\
        libreadline8:arm64 libuuid1:arm64 libdb5.3:arm64 libcrypt1:arm64
    for d in *.deb; do dpkg -x $d ../root; done
    pip download --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \\
        --only-binary=:all: --python-version 3.11 ai-edge-litert==2.3.0 -d ../wheels
    for w in ../wheels/*.whl; do python3 -m zipfile -e $w ../site; done
    # XNNPACK's cpuinfo reads /proc/cpuinfo (the host's x86 one under qemu-user, on
    # which it crashes); qemu's -L prefix serves root/proc/cpuinfo instead:
    mkdir -p ../root/proc && printf 'processor\\t: 0\\nFeatures\\t: fp asimd cpuid \\
        asimdrdm asimddp\\nCPU implementer\\t: 0x41\\nCPU architecture: 8\\nCPU variant\\t: \\
        0x3\\nCPU part\\t: 0xd0c\\nCPU revision\\t: 1\\n\\n' > ../root/proc/cpuinfo
    export ARM64_PYTHON=/tmp/arm64/py.sh   # a script running:
    #   PYTHONPATH=/tmp/arm64/site qemu-aarch64-static -L /tmp/arm64/root \\
    #       /tmp/arm64/root/usr/bin/python3.11 "$@"
    $ARM64_PYTHON tools/make_tflite_arm64_vectors.py

(``binfmt_misc`` is not needed; ``ARM64_PYTHON`` is what runs the child processes
that isolate runs which might abort.)  The models are the one-op flatbuffers of
``tools/tflite_softmax_model.py``, the inputs are drawn with the helpers of
``tools/make_tflite_vectors.py``.  Each case is run with
``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (the optimized kernels: on aarch64 the
uint16-LUT ``SoftmaxInt8LUT``), ``AUTO`` (the same plus the default XNNPACK
delegate) and ``BUILTIN_REF`` (the reference kernels).

Output ``tests/data/tflite_arm64_vectors.npz``: per case ``c<i>_x`` (input),
``c<i>_opt`` (optimized output), ``c<i>_ref_minus_opt`` (reference minus
optimized, int16, mostly zeros), ``c<i>_dflt`` only where ``AUTO`` differs from
the optimized output, and ``meta`` (a JSON string: per case dtype, float32 input
scale, beta, the status of each resolver; the LiteRT version and platform).
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

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import make_tflite_vectors as mtv  # noqa: E402
from tflite_softmax_model import RESOLVERS, build_model, run_model  # noqa: E402

OUT = TOOLS.parent / "tests" / "data" / "tflite_arm64_vectors.npz"
mtv.RNG = np.random.default_rng(20261205)  # the drawing helpers use this generator
OUT_Q = {"int8": (1 / 256, -128), "uint8": (1 / 256, 0)}


_FLOAT32_INV_ROWS = [
    ("0x1.a5c048p-8", [[-89, 29, 80, -122, 35, -73, 86, 39, -98, 42, -121, 5, 120, 63, 43, 82,
                        12, -76, -104, 18, -16, -89, 31, 81, 127, 42, 23]]),
    ("0x1.d3d5cp-8", [[-1, -20, 69, 83, 121, -72, -34, 61, 31, 111, -21, -20, -99, 21, -14, 103,
                       77, 12, 90, -128, 3, -38, 68, -73, -29, -45, -97, 117, -95, 74, -23, 56,
                       -97, -19, -120, 44, 127, -93, -61, 74]]),
    ("0x1.09deda0p-2", [[85, -102, -72, -75, 118, 97, 124, -51],
                        [-86, 123, 85, 117, -12, -29, -86, 96]]),
    ("0x1.0fbe5cp-8", [[16, 39, -124, 120, -50, 75, -110, 63, 93, 3, 83, -62, 86, 31, -97, -97,
                        -41, 117, -18, 74, -104, 27, -78, -52]]),
]  # fmt: skip


def run_isolated(model: bytes, x: np.ndarray, resolver: str):
    """``mtv.run_isolated`` with the aarch64 interpreter as the child (no binfmt needed)."""
    py = os.environ.get("ARM64_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as d:
        mp, xp, yp = (os.path.join(d, n) for n in ("m.tflite", "x.npy", "y.npy"))
        Path(mp).write_bytes(model)
        np.save(xp, x)
        code = mtv._CHILD.format(tools=str(TOOLS), model=mp, x=xp, y=yp, resolver=resolver)
        r = subprocess.run([py, "-c", code], capture_output=True, text=True)
        if r.returncode != 0:
            return None, f"exit status {r.returncode}: {(r.stderr.strip() or '?')[-200:]}"
        return np.load(yp), ""


def ties_at_max(dt, rows, n, k):
    """Rows with ``k`` entries equal to the row maximum, the rest drawn below it."""
    info = np.iinfo(dt)
    x = mtv.rand(dt, (rows, n)).astype(np.int64)
    m = x.max(axis=1, keepdims=True)
    for r in range(rows):
        x[r, mtv.RNG.choice(n, size=k, replace=False)] = m[r, 0]
    return np.clip(x, info.min, info.max).astype(dt)


def cases():
    """Yield (dtype, x, input_scale, beta, note, may_abort)."""
    seed = np.array([101, 49, 6, -34, -75, -79, -38, 120, -55, 115], dtype=np.int8)
    yield "int8", seed.reshape(1, 10), 1 / 255, 1.0, "seed: 1 row of 10", False
    yield "int8", seed.reshape(2, 5), 1 / 255, 1.0, "seed: 2 rows of 5", False
    yield "int8", seed.reshape(1, 10), 0.00392, 1.0, "seed, scale 0.00392", False
    shapes = [(1, 1), (5, 1), (3, 2), (7, 13), (4, 3, 10), (2, 2, 2, 9), (64, 100), (8, 1000)]
    for t in ("int8", "uint8"):
        dt = np.dtype(t)
        info = np.iinfo(dt)
        for k, scale in enumerate(mtv.log_scales(-20.0, 3.0, 16)):
            beta = [1.0, 1.0, 0.5, 2.0, 0.1, 3.7][k % 6]
            shape = shapes[k % len(shapes)]
            x = mtv.rand(dt, shape) if k % 3 else mtv.near_max(dt, shape, [3, 20, 60][k // 3 % 3])
            yield t, x, scale, beta, "random", False
        for scale in [1 / 256, 1 / 64, 0.05, 0.1, 0.5, 1.0]:
            yield t, mtv.near_max(dt, (128, 24), 12), scale, 1.0, "near max", False
            yield t, ties_at_max(dt, 32, 16, 2 + int(scale * 10) % 5), scale, 1.0, "ties", False
            yield t, mtv.rand(dt, (32, 64)), scale, 1.0, "full range", False
        # entries that underflow to 0 (large scales) and tables that are nearly flat
        for scale in [4.0, 20.0, 1e6, 2.0**-26, 2.0**-20]:
            yield t, mtv.rand(dt, (16, 20)), scale, 1.0, "extreme scale", True
        for x, note in [
            (np.full((1, 7), info.min, dt), "all min"),
            (np.full((1, 7), info.max, dt), "all max"),
            (np.array([[info.min]], dt), "single element"),
            (np.array([[info.max, *([info.min] * 9)]], dt), "one max, rest min"),
            (np.array([[info.min, info.max]], dt), "min and max"),
            (np.full((2, 512), 3, dt), "512 equal values"),
            (np.full((1, 4000), 3, dt), "4000 equal values"),
            (mtv.rand(dt, (1, 5000)), "long random row"),
            (mtv.near_max(dt, (2, 3000), 2), "long row near max"),
            (np.full((1, 40000), 3, dt), "40000 equal values (int32 sum > 2^31)"),
        ]:
            for scale in [1 / 256, 0.05]:
                yield t, x, scale, 1.0, note, True
    # a block to measure how often it differs from the reference kernel
    for scale in [1 / 64, 1 / 8, 0.5]:
        yield "int8", mtv.rand(np.dtype(np.int8), (1024, 16), -40, 127), scale, 1.0, "block", False
    # rows found (by a NumPy search over random rows) where computing ``1 / (sum * scale)``
    # in double instead of float32 would change an output: they pin the float32
    for h, rows in _FLOAT32_INV_ROWS:
        yield "int8", np.array(rows, np.int8), float.fromhex(h), 1.0, "float32 inv", False
    # the row sum is a wrapping 32-bit integer: n * 65535 equal entries wrap to -1, 65533
    # (every output 256 steps, clamped) and 262139 (64 steps) for these n
    for t in ("int8", "uint8"):
        for n in (65537, 65538, 65541):
            yield t, np.full((1, n), 3, np.dtype(t)), 1 / 256, 1.0, f"{n} equal values", True


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = []
    rows = rows_ref_differs = dflt_differs = 0
    for i, (t, x, scale, beta, note, may_abort) in enumerate(cases()):
        scale32, beta32 = np.float32(scale), np.float32(beta)
        out_scale, out_zp = OUT_Q[t]
        model = build_model("softmax", x.shape, t, scale32, 0, t, out_scale, out_zp, beta32)
        # isolate every run that might hit a TFLITE_CHECK (as make_tflite_vectors.py does)
        may_abort = may_abort or float(scale32) * float(beta32) < 2.0**-22 or x.shape[-1] >= 500
        res, status = {}, {}
        for name in RESOLVERS:
            if may_abort:
                res[name], err = run_isolated(model, x, name)
            else:
                res[name], err = run_model(model, x, name), ""
            status[name] = "ok" if res[name] is not None else "abort: " + err
        key = f"c{i}"
        arrays[f"{key}_x"] = x
        opt, ref, dflt = res["optimized"], res["reference"], res["default"]
        if opt is not None:
            arrays[f"{key}_opt"] = opt
            if ref is not None:
                arrays[f"{key}_ref_minus_opt"] = ref.astype(np.int16) - opt.astype(np.int16)
                d = (ref != opt).reshape(-1, x.shape[-1]).any(axis=1)
                rows_ref_differs += int(d.sum())
                rows += d.size
        same = dflt is not None and opt is not None and np.array_equal(dflt, opt)
        if dflt is not None and not same:
            arrays[f"{key}_dflt"] = dflt
            dflt_differs += 1
        meta.append(
            {
                "id": key,
                "dtype": t,
                "shape": list(x.shape),
                "input_scale_hex": float(scale32).hex(),
                "beta_hex": float(beta32).hex(),
                "output_scale": out_scale,
                "output_zero_point": out_zp,
                "status": status,
                "default_equals_optimized": bool(same),
                "note": note,
            }
        )
        print(i, t, x.shape, f"{float(scale32):.4g}", beta, note, status, flush=True)
    info = {
        "generator": "tools/make_tflite_arm64_vectors.py",
        "runtime": {
            "ai-edge-litert": version("ai-edge-litert"),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "system": platform.system(),
            "how": "aarch64 wheel under qemu-user (qemu-aarch64-static) on an x86-64 host",
        },
        "resolvers": {
            "optimized": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
            "default": "AUTO (optimized kernels + default XNNPACK delegate)",
            "reference": "BUILTIN_REF",
        },
        "rows_compared_with_reference": rows,
        "rows_where_reference_differs": rows_ref_differs,
        "cases_where_default_delegate_differs": dflt_differs,
        "cases": meta,
    }
    arrays["meta"] = np.array(json.dumps(info))
    np.savez_compressed(OUT, **arrays)
    print(
        f"{len(meta)} cases, {OUT.name} {OUT.stat().st_size / 1e6:.3f} MB; rows where reference"
        f" differs {rows_ref_differs}/{rows}; cases where AUTO differs {dflt_differs}"
    )


if __name__ == "__main__":
    main()
