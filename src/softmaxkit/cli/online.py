"""CLI plugin of the online family: ``softmax``, ``logsumexp`` and ``topk`` on .npy files,
and the demo step of the seed notebook (two halves merged)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

import numpy as np

__all__ = ["DEMO_STEPS", "register"]


def _axis(text: str):
    try:
        if text.strip().lower() == "none":
            return None
        parts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"axis must be an int, a comma-separated list of ints or 'none'; got {text!r}"
        ) from None
    if not parts:
        raise argparse.ArgumentTypeError(f"axis must not be empty; got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _memory(text: str) -> int:
    """--memory: parsed as the API does, and refused above this machine's RAM."""
    from ..drivers.stream import parse_memory

    try:
        value = parse_memory(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    ram = _physical_memory()
    if ram is not None and value > ram:
        raise argparse.ArgumentTypeError(
            f"{text!r} ({value} bytes) is more than this machine's memory ({ram} bytes); "
            "the budget must fit in RAM"
        )
    return value


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _workers(text: str) -> int:
    cores = _usable_cores()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int; got {text!r}") from None
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(
            f"must be between 1 and the {cores} usable cores of this machine; got {text!r}"
        )
    return value


def _check_in(path: str) -> str:
    if not path.endswith(".npy"):
        raise ValueError(f"input {path!r} is not a .npy file (expected a name ending in .npy)")
    return path


_MEMORY_HELP = (
    "working-memory budget (default 512M): bytes, or K/M/G/T = KiB/MiB/GiB/TiB "
    "(powers of 1024; KiB... also accepted), KB/MB/GB/TB = powers of 1000; at most "
    "this machine's RAM.  Peak memory stays within it plus about 100 MB for Python, "
    "NumPy and the compiled kernels"
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN.npy", help="input array (.npy regular file)")
    p.add_argument("--axis", type=_axis, default=-1, help="axis or axes, e.g. -1, 0,1 (default -1)")
    p.add_argument("--temperature", type=float, default=1.0, help="act on x / T (default 1)")
    p.add_argument("--memory", type=_memory, default="512M", help=_MEMORY_HELP)
    p.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="threads, 1 to the number of usable cores (default: all usable cores, at most 7)",
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar (shown only on a terminal)"
    )


def _cmd_softmax(args) -> int:
    from .._core import npyio as _npyio
    from ..online import stream_softmax

    out = args.output
    _npyio.check_target(out)  # a special file or link is refused whatever its name
    if not out.endswith(".npy"):
        raise ValueError(f"output {out!r} must end in .npy")
    stream_softmax(
        _check_in(args.input),
        out,
        axis=args.axis,
        log=args.log,
        temperature=args.temperature,
        memory=args.memory,
        workers=args.workers,
        progress=_progress(args),
    )
    return 0


def _cmd_logsumexp(args) -> int:
    from .._core import npyio as _npyio
    from ..online import stream_logsumexp

    if args.output is not None:
        _npyio.check_target(args.output)  # refuse a bad target before any work
    res = stream_logsumexp(
        _check_in(args.input),
        axis=args.axis,
        temperature=args.temperature,
        memory=args.memory,
        workers=args.workers,
        progress=_progress(args),
    )
    if args.output is None:
        print(np.array2string(np.asarray(res), precision=17, threshold=1000))
        return 0
    _npyio.write_atomic(args.output, lambda f: np.save(f, np.asarray(res)))
    return 0


def _cmd_topk(args) -> int:
    from .._core import npyio as _npyio
    from ..drivers import stream as _stream

    _npyio.check_target(args.output)
    if not args.output.endswith(".npz"):
        raise ValueError(f"output {args.output!r} must end in .npz")
    if isinstance(args.axis, tuple) or args.axis is None:
        raise ValueError(f"topk needs a single --axis; got {args.axis!r}")
    _stream.topk_to_file(
        _check_in(args.input),
        args.output,
        args.k,
        args.axis,
        args.temperature,
        args.memory,
        _progress(args),
    )
    return 0


def _cmd_clean(args) -> int:
    from .._core import npyio as _npyio

    d = args.directory
    if not os.path.isdir(d):
        raise NotADirectoryError(f"{d!r} is not a directory")
    removed, live = _npyio.clean(d)
    for p in removed:
        print(f"removed {p}")
    for p in live:
        print(f"kept {p} (its process is still running)")
    if not removed and not live:
        print(f"no softmaxkit temporary files in {d}")
    return 0


_TEMP_NOTE = (
    "Outputs are written to a hidden temporary .NAME.softmaxkit-tmp.PID.RAND beside "
    "the target and renamed over it when complete; Ctrl-C and SIGTERM remove it (exit "
    "130 / 143).  After SIGKILL or a crash, the next write to the same target or "
    "'softmaxkit clean DIR' removes it.  The target must be a regular file or not exist "
    "(devices, FIFOs and symbolic links are refused)."
)


def register(subparsers) -> None:
    """Add ``softmax``, ``logsumexp``, ``topk`` and ``clean``."""
    p = subparsers.add_parser(
        "softmax",
        help="softmax / log_softmax of a .npy file of any size (streamed)",
        description="Softmax of IN.npy over --axis, written atomically to OUT.npy; files "
        "larger than memory are streamed in chunks within --memory.  " + _TEMP_NOTE,
    )
    _common(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.npy")
    p.add_argument("--log", action="store_true", help="write log_softmax instead")
    p.set_defaults(func=_cmd_softmax)

    p = subparsers.add_parser(
        "logsumexp",
        help="logsumexp of a .npy file of any size (streamed)",
        description="logsumexp of IN.npy over --axis; printed, or saved to -o OUT.npy.  "
        + _TEMP_NOTE,
    )
    _common(p)
    p.add_argument("-o", "--output", default=None, metavar="OUT.npy")
    p.set_defaults(func=_cmd_logsumexp)

    p = subparsers.add_parser(
        "topk",
        help="top-k softmax probabilities and indices of a .npy file",
        description="The k largest softmax probabilities along --axis and their indices, "
        "saved to OUT.npz as arrays 'probabilities' and 'indices'.  Rows longer than "
        "--memory are read in column chunks.  " + _TEMP_NOTE,
    )
    _common(p)
    p.add_argument("-k", type=int, required=True, help="how many entries per row")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.set_defaults(func=_cmd_topk)

    p = subparsers.add_parser(
        "clean",
        help="remove temporary files left in DIR by killed softmaxkit runs",
        description="Remove the hidden temporaries .NAME.softmaxkit-tmp.PID.RAND in DIR "
        "whose process PID is no longer running (left by SIGKILL or a crash); those of "
        "running processes are kept.  Use it on local file systems: PIDs of other "
        "machines sharing a network file system cannot be checked.",
    )
    p.add_argument("directory", metavar="DIR")
    p.set_defaults(func=_cmd_clean)


def _step_online(out: TextIO) -> None:
    from ..online import Normalizer
    from ..softmax import logsumexp, softmax

    x = np.array([0.48403498, 0.0973621, 0.51869646, 0.18187859, 0.7138846,
                  0.15514045, 0.44284629, 0.46132317, 0.04277389, 0.776115])  # fmt: skip
    a = Normalizer.empty(()).update(x[:5])
    b = Normalizer.empty(()).update(x[5:])
    w = a | b
    out.write("5. The online normalizer (Milakov & Gimelshein): two halves, merged\n")
    out.write(f"   first half  (m, d) = ({float(a.m):.7f}, {float(a.s):.7f})\n")
    out.write(f"   second half (m, d) = ({float(b.m):.7f}, {float(b.s):.7f})\n")
    out.write(
        "   merged: m = max(m0, m1), d = d0 exp(m0 - m) + d1 exp(m1 - m) = "
        f"({float(w.m):.7f}, {float(w.s):.7f})\n"
    )
    whole = Normalizer.empty(()).update(x)
    out.write(f"   whole list  (m, d) = ({float(whole.m):.7f}, {float(whole.s):.7f})\n")
    out.write(f"   logsumexp: merged {float(w.logsumexp())!r}, dense {float(logsumexp(x))!r}\n")
    err = float(np.max(np.abs(w.softmax(x) - softmax(x))))
    out.write(f"   max |softmax from merged state - dense softmax| = {err:.1e}\n")
    e = Normalizer.empty(()) | Normalizer.empty(())
    out.write(
        f"   empty | empty = (m, s) = ({float(e.m)}, {float(e.s)}): the identity, not NaN "
        "(FlashInfer #4051)\n"
    )


DEMO_STEPS = [_step_online]
