"""CLI plugin for the quantized ops: ``softmaxkit int8`` and the int8 demo step."""

from __future__ import annotations

from typing import TextIO

import numpy as np

__all__ = ["DEMO_STEPS", "register"]

_SEED = [101, 49, 6, -34, -75, -79, -38, 120, -55, 115]
_SEED_EXPECTED = [-57, -70, -79, -86, -92, -94, -88, -54, -91, -56]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "int8",
        help="TFLite / CMSIS-NN bit-exact quantized softmax of given values or an .npy file",
        description="Quantized softmax (or log_softmax) exactly as TensorFlow Lite (or another "
        "runtime, --runtime) computes it. Example: softmaxkit int8 --input-scale 0.00392 --rows 2 "
        "101 49 6 -34 -75 -79 -38 120 -55 115. Which runtime made these numbers: softmaxkit int8 "
        "identify --input=101,49,6,-34,-75,-79,-38,120,-55,115 --expected="
        "-57,-70,-79,-86,-92,-94,-88,-54,-91,-56 --rows 2 (write --expected=... when the "
        "values start with a minus sign)",
    )
    p.add_argument(
        "values", nargs="*", help="quantized input values (row-major), or the word 'identify'"
    )
    p.add_argument("--input", help="identify: input values (comma-separated) or an .npy file")
    p.add_argument("--expected", help="identify: expected output values or an .npy file")
    p.add_argument(
        "--runtime", default=None, help="runtime to reproduce (default tflite-reference)"
    )
    p.add_argument("--input-zero-point", type=int, default=None)
    p.add_argument("--output-scale", type=float, default=None)
    p.add_argument("--output-zero-point", type=int, default=None)
    p.add_argument("--npy", metavar="FILE", help="read the quantized input from an .npy file")
    p.add_argument("--input-scale", type=float, default=None, help="input quantization scale")
    p.add_argument("--beta", type=float, default=1.0, help="softmax beta (default 1.0)")
    p.add_argument("--rows", type=int, default=None, help="number of rows for VALUES (default 1)")
    p.add_argument(
        "--dtype",
        choices=["int8", "uint8", "int16"],
        default=None,
        help="dtype of VALUES (default int8; an .npy keeps its dtype)",
    )
    p.add_argument("--output-dtype", choices=["int8", "uint8", "int16"], default=None)
    p.add_argument("--kernel", choices=["reference", "optimized"], default=None)
    p.add_argument("--log", action="store_true", help="log_softmax instead of softmax")
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        metavar="OUT.npy",
        help="also save the output to this .npy file (atomically; --out is an alias)",
    )
    p.set_defaults(func=_cmd_int8)


def _load(args) -> np.ndarray:
    if args.npy and args.values:
        raise ValueError("give either VALUES or --npy, not both")
    if args.npy:
        x = _read_npy(args.npy)
        if args.dtype is not None and x.dtype != np.dtype(args.dtype):
            raise ValueError(f"--npy file has dtype {x.dtype}; --dtype says {args.dtype}")
        return x
    if not args.values:
        raise ValueError("no input: give quantized VALUES or --npy FILE")
    dt = np.dtype(args.dtype or "int8")
    info = np.iinfo(dt)
    bad = [v for v in args.values if not info.min <= v <= info.max]
    if bad:
        raise ValueError(f"values {bad[:5]} are outside the {dt} range [{info.min}, {info.max}]")
    rows = 1 if args.rows is None else args.rows
    n = len(args.values)
    if rows <= 0 or n % rows:
        raise ValueError(f"--rows {rows} must be > 0 and divide the number of values ({n})")
    return np.array(args.values, dtype=dt).reshape(rows, n // rows)


def _read_npy(path: str) -> np.ndarray:
    """The whole --npy file, through the streaming reader's checks (regular file, valid
    header, not truncated), converted to native byte order."""
    from .._core.npyio import NpyIn

    def check(dtype: np.dtype, what: str) -> None:
        if dtype.kind not in "iu":
            raise TypeError(
                f"--npy file {what!r} has dtype {dtype}; int8 needs int8, uint8 or int16"
            )

    with NpyIn(path, check) as f:
        if f.nbytes > 2**31:
            raise ValueError(
                f"--npy file {path!r} holds {f.nbytes} bytes; int8 reads at most 2 GiB"
            )
        return f.read_all()


def _values(text: str, dtype) -> np.ndarray:
    if text.endswith(".npy"):
        return _read_npy(text)
    try:
        vals = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"expected integers separated by commas or an .npy file; got {text!r}"
        ) from None
    info = np.iinfo(dtype)
    if not vals or min(vals) < info.min or max(vals) > info.max:
        raise ValueError(f"values must be a non-empty list in the {np.dtype(dtype)} range")
    return np.array(vals, dtype=dtype)


def _cmd_identify(args) -> int:
    from .. import quantized as Q

    if args.input is None or args.expected is None:
        raise ValueError("identify needs --input and --expected")
    x = _values(args.input, args.dtype or "int8")
    y = _values(args.expected, x.dtype)
    if args.rows is not None:
        if args.rows <= 0 or x.size % args.rows:
            raise ValueError(f"--rows {args.rows} must be > 0 and divide {x.size}")
        x, y = x.reshape(args.rows, -1), y.reshape(args.rows, -1)
    found = Q.identify(
        x, y, input_scale=args.input_scale, input_zero_point=args.input_zero_point,
        output_scale=args.output_scale, output_zero_point=args.output_zero_point,
    )  # fmt: skip
    exact = [m for m in found if m.mismatches == 0]
    print(f"{'bit-exact matches' if exact else 'no bit-exact match; closest'} ({len(found)}):")
    for m in found:
        print(f"  {m}")
    return 0


def _cmd_int8(args) -> int:
    from .. import quantized as Q

    if args.out:
        from .._core.npyio import check_target

        check_target(args.out)  # a bad target fails before any work
    if args.values and args.values[0] == "identify":
        if len(args.values) > 1:
            raise ValueError("identify takes its values from --input and --expected")
        return _cmd_identify(args)
    try:
        args.values = [int(v) for v in args.values]
    except ValueError:
        raise ValueError(
            f"VALUES must be integers (or the word 'identify'); got {args.values}"
        ) from None
    if args.input_scale is None:
        raise ValueError("--input-scale is required")
    runtime = args.runtime
    if runtime is None:
        runtime = "tflite-x86" if args.kernel == "optimized" else "tflite-reference"
    x = _load(args)
    op = "log_softmax" if args.log else "softmax"
    if args.log:
        y = Q.log_softmax(x, args.input_scale, kernel=args.kernel, runtime=args.runtime)
    else:
        kw = {"output_scale": args.output_scale, "output_zero_point": args.output_zero_point}
        if args.input_zero_point is not None:
            kw["input_zero_point"] = args.input_zero_point
        y = Q.softmax(
            x, args.input_scale, beta=args.beta, output_dtype=args.output_dtype,
            kernel=args.kernel, runtime=args.runtime, **kw,
        )  # fmt: skip
    if runtime.startswith("tflite") or runtime == "cmsis-nn":
        scale, zp = Q.output_quantization(op, x.dtype, y.dtype)
    else:
        scale = args.output_scale or 1 / 256
        zp = (
            args.output_zero_point
            if args.output_zero_point is not None
            else (-128 if x.dtype == np.int8 else 0)
        )
    kernel = {"tflite-x86": "optimized"}.get(runtime, "reference")
    print(f"{op} {x.dtype} -> {y.dtype}, input shape {x.shape}, runtime={runtime}")
    print(f"input scale (float32) {float(np.float32(args.input_scale))!r}, beta {args.beta!r}")
    if (
        x.dtype != np.int16
        and kernel == "reference"
        and runtime in ("tflite-reference", "cmsis-nn", "tflite-micro")
    ):
        p = Q.log_softmax_params(args.input_scale) if args.log else None
        sp = Q.softmax_params(args.input_scale, 1.0 if args.log else args.beta)
        print(f"multiplier {sp.multiplier}, shift {sp.shift}, diff_min {sp.diff_min}")
        if p is not None:
            print(f"reverse multiplier {p.reverse_multiplier}, reverse shift {p.reverse_shift}")
    print(f"output scale {scale!r}, zero point {zp}")
    print("output:")
    print(np.array2string(y, max_line_width=100, threshold=200))
    if args.out:
        from .._core.npyio import write_atomic

        write_atomic(args.out, lambda f: np.save(f, y))
    return 0


def _step_int8(out: TextIO) -> None:
    from .. import quantized as Q

    x = np.array(_SEED, dtype=np.int8)
    p = Q.softmax_params(np.float32(1 / 255))
    out.write("int8 softmax bit-exact with TensorFlow Lite / CMSIS-NN (arm_softmax_s8)\n")
    out.write(f"   input  = {_SEED}\n")
    out.write(f"   expected (CMSIS-NN unit test)       = {_SEED_EXPECTED}\n")
    out.write("   input scale 1/255, beta 1, output scale 1/256 and zero point -128\n")
    out.write(f"   derived: multiplier {p.multiplier}, shift {p.shift}, diff_min {p.diff_min}\n")
    two = Q.softmax(x.reshape(2, 5), 1 / 255)
    one = Q.softmax(x.reshape(1, 10), 1 / 255)
    out.write(f"   softmaxkit, as 2 rows of 5          = {two.ravel().tolist()}  (exact)\n")
    out.write(f"   softmaxkit, as 1 row of 10          = {one.ravel().tolist()}\n")
    naive = (np.exp(x / 128.0) / np.exp(x / 128.0).sum() * 256 - 100).round().astype(int)
    out.write(f"   a float fit, exp(x/128) * 256 - 100 = {naive.tolist()}\n")
    out.write("   The test vector is two rows of five: the layout was the real mistake.\n")


DEMO_STEPS = [_step_int8]
