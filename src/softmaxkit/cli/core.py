"""The ``softmaxkit`` command line.

Each family contributes its subcommands and its ``demo`` steps from a plugin
module listed in ``_PLUGINS``.  A plugin module defines

* ``register(subparsers)``: add its subcommands; each sets ``func=`` to a callable
  ``(args) -> int``;
* ``DEMO_STEPS``: a list of callables ``(out) -> None`` that print one demo
  section each to the text stream ``out``.

``main`` turns every user error (``ValueError``, ``TypeError``, ``OSError``, a bad
option) into a one-line message on stderr and exit status 2, never a traceback
(``tests/test_cli_fuzz.py``).  Ctrl-C (SIGINT) exits with 130 and SIGTERM with 143
(128 + 15) after the running command removed its temporary output file.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import io
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn, TextIO

__all__ = ["console", "main"]

_PLUGINS = (
    "softmaxkit.cli.dense",
    "softmaxkit.cli.online",
    "softmaxkit.cli.losses",
    "softmaxkit.cli.quantized",
    "softmaxkit.cli.segments",
    "softmaxkit.cli.sample",
    "softmaxkit.cli.bench",
    "softmaxkit.cli.warmup",
)


_STEP_PREFIX = re.compile(r"^(?:[A-Za-z]+ )?\d+\.\s+")


def _plugins():
    return [importlib.import_module(name) for name in _PLUGINS]


def run_demo(out: TextIO) -> int:
    """Print every plugin's demo steps, in order."""
    out.write("softmaxkit demo: what goes wrong with the textbook formulas, and our answer\n")
    number = 0
    for plugin in _plugins():
        for step in plugin.DEMO_STEPS:
            number += 1
            buf = io.StringIO()
            step(buf)
            # Steps are numbered here, in tour order; a step's own "N." prefix is dropped.
            title, _, body = buf.getvalue().partition("\n")
            title = _STEP_PREFIX.sub("", title, count=1)
            out.write(f"\n{number}. {title}\n{body}")
    out.write("\nAll demo steps done.\n")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so ``finally`` / ``except BaseException``
    clean-ups run as they do for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _remove_temporaries() -> None:
    """After Ctrl-C / SIGTERM: every output temporary not yet renamed or removed, even
    one whose creation the interrupt cut short (``_core.npyio.remove_live``)."""
    npyio = sys.modules.get("softmaxkit._core.npyio")
    if npyio is not None:  # never imported: no temporaries
        npyio.remove_live()


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="softmaxkit",
        description="The softmax family done right: apply the ops to .npy files, check int8 "
        "cases, benchmark, and tour the library (softmaxkit demo).",
    )
    parser.add_argument("--version", action="version", version=f"softmaxkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="tour the library on built-in inputs (no input needed)")
    demo.set_defaults(func=lambda args: run_demo(sys.stdout))
    for plugin in _plugins():
        plugin.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``softmaxkit`` and ``python -m softmaxkit``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _remove_temporaries()
        print("softmaxkit: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        _remove_temporaries()
        print("softmaxkit: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (ValueError, TypeError, OSError, MemoryError, OverflowError, EOFError) as exc:
        msg = " ".join((str(exc) or type(exc).__name__).split())  # one line
        print(f"softmaxkit {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def console(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``softmaxkit`` command and ``python -m softmaxkit``: :func:`main`, then exit.

    Once :func:`main` has returned, the exit handlers run (among them the background
    compiler's hand-off of kernels still queued) and stdout / stderr are flushed;
    then the process ends with ``os._exit``, without the interpreter's teardown of
    Numba's and LLVM's objects, which took about 0.2 s of a warm
    ``softmaxkit demo`` (1.05 -> 0.85 s).  A failed flush of stdout (a full disk)
    is an error like any other: one line on stderr, exit status 2; a closed pipe
    (``softmaxkit demo | head``) is not.
    """
    code = main(argv)
    try:
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        except (OSError, ValueError) as exc:
            msg = " ".join((str(exc) or type(exc).__name__).split())
            print(f"softmaxkit: error: writing the output: {msg}", file=sys.stderr)
            code = 2
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)
