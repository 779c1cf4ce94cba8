"""CLI plugin: ``softmaxkit bench`` (the runner is ``softmaxkit.bench.core``)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TextIO

from .._core import coldstart

__all__ = ["DEMO_STEPS", "register"]


class _NoHyphenBreak(argparse.HelpFormatter):
    """Wrap help text at spaces only, so "(opt-in)" never splits across lines."""

    def _split_lines(self, text, width):
        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_on_hyphens=False)


def register(subparsers) -> None:
    from ..bench.core import _BENCH_FAMILIES, _OPT_IN

    p = subparsers.add_parser(
        "bench",
        formatter_class=_NoHyphenBreak,
        help="time softmaxkit against NumPy, SciPy and PyTorch (interleaved, medians)",
        description="Benchmark every family's cases in one process: peers interleaved, "
        "warm-up, repeats, medians; a read+write bandwidth floor on the same threads; max "
        "error against a float64 reference; peak extra memory.  Nothing is written unless "
        "an output path is given.",
    )
    p.add_argument("--quick", action="store_true", help="reduced shapes (under a minute)")
    names = [m.rsplit(".", 1)[-1] for m in _BENCH_FAMILIES]
    listed = ", ".join(f"{n} (opt-in)" if n in _OPT_IN else n for n in names)
    p.add_argument(
        "--family",
        action="append",
        metavar="NAME",
        help=f"only this family (repeatable): {listed}; default: all but the opt-in ones",
    )
    p.add_argument("--op", action="append", metavar="OP", help="only this op (repeatable)")
    p.add_argument("--repeats", type=int, default=7, help="max timed rounds per case (7)")
    p.add_argument(
        "--budget", type=float, default=3.0, help="seconds of timing per case, roughly (3)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart (needs matplotlib)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..bench import core as bench

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {args.repeats}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise OSError(
                "--plot needs matplotlib: pip install 'softmaxkit[plot]' (or matplotlib)"
            ) from None
    from .._core import npyio

    for target in (args.json, args.markdown, args.plot):
        if target:  # refused now, not after minutes of timing
            npyio.check_target(target)
    cases = bench.select_cases(args.quick, args.family)
    if args.op:
        cases = [c for c in cases if c.op in args.op]
        if not cases:
            raise ValueError(f"--op matched no case: {args.op}")
    info = bench.machine()
    results = bench.run_cases(
        cases,
        repeats=args.repeats,
        budget_s=args.budget,
        memory=not args.no_memory,
        progress=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(bench.format_table(results))
    command = "softmaxkit " + " ".join(sys.argv[1:]) if sys.argv[1:] else "softmaxkit bench"
    if args.json:
        text = bench.to_json(results, info, command)
        npyio.write_atomic(args.json, lambda fh: fh.write(text.encode()))
    if args.markdown:
        text = f"Command: `{command}`\n\n" + bench.format_markdown(results, info)
        npyio.write_atomic(args.markdown, lambda fh: fh.write(text.encode()))
    if args.plot:
        bench.plot(results, args.plot)
    return 0


def _step_speed(out: TextIO) -> None:
    """A tiny timing, no peers: how the fused kernel compares to the NumPy formula."""
    import time

    import numpy as np

    from ..softmax import softmax

    x = np.random.default_rng(0).standard_normal((256, 4096)).astype(np.float32)
    softmax(x[:8])  # a small probe of the same kernel: is it compiled or cached yet?
    if coldstart.fell_back():
        out.write("5. Speed: skipped on this first run on this machine\n")
        out.write("   (the kernels are compiling in the background; run softmaxkit demo again,\n")
        out.write("   or softmaxkit warmup to compile every kernel now)\n")
        return
    softmax(x)

    def naive_formula():
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)

    def best(f):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best(lambda: softmax(x))
    naive = best(naive_formula)
    out.write("5. Speed: one fused pass instead of five NumPy passes ([256, 4096] float32)\n")
    out.write(f"   NumPy stable formula {naive * 1e3:.2f} ms, softmaxkit {ours * 1e3:.2f} ms\n")
    out.write("   (full comparison with SciPy and PyTorch: softmaxkit bench --quick)\n")


DEMO_STEPS = [_step_speed]
