"""``softmaxkit warmup``: compile and cache the kernels ahead of time (CLI plugin).

Numba compiles a kernel on its first call with a new combination of argument types
(dtype, layout, mask or not) and caches the machine code on disk; later processes
load it in well under a second.  ``warmup`` makes those first calls now, on tiny
inputs: one *case* per public op, dtype and code path (``CASES``), grouped by family.
``tools/first_call.py`` times each case's first call in a fresh process from the same
table.  ``warmup --clear`` deletes the cached kernels, ``--where`` prints where they
are (docs/performance.md, "First call and the compile cache").
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np

from .._core import coldstart

__all__ = ["CASES", "DEMO_STEPS", "FAMILIES", "cases", "clear", "register", "warmup"]

FAMILIES = ("dense", "online", "losses", "vocab", "segments", "quantized")

_F32, _F64 = np.float32, np.float64


def _x(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _dense() -> list[tuple[str, str, Callable[[], object]]]:
    import softmaxkit as sk

    out = []
    for dt in (_F32, _F64):
        name = np.dtype(dt).name
        # rows of 300: log_softmax's groups; of 100: its rows one at a time
        x = _x((64, 300), dt)
        mask = np.arange(300) % 3 != 0
        out += [
            ("softmax", name, lambda x=x: sk.softmax(x)),
            ("log_softmax", name, lambda x=x: sk.log_softmax(x)),
            ("log_softmax, rows of 100", name, lambda x=x: sk.log_softmax(x[:, :100].copy())),
            ("logsumexp", name, lambda x=x: sk.logsumexp(x, axis=-1)),
            ("softmax, rows of 10", name, lambda x=x: sk.softmax(x[:, :10].copy())),
            ("logsumexp, rows of 10", name, lambda x=x: sk.logsumexp(x[:, :10].copy(), axis=-1)),
            ("softmax axis=0", name, lambda x=x: sk.softmax(x, axis=0)),
            ("log_softmax axis=0", name, lambda x=x: sk.log_softmax(x, axis=0)),
            ("logsumexp axis=0", name, lambda x=x: sk.logsumexp(x, axis=0)),
            ("softmax where=", name, lambda x=x, m=mask: sk.softmax(x, where=m)),
            ("log_softmax where=", name, lambda x=x, m=mask: sk.log_softmax(x, where=m)),
            ("logsumexp b=", name, lambda x=x: sk.logsumexp(x, axis=-1, b=np.abs(x))),
        ]
    return out


def _online() -> list[tuple[str, str, Callable[[], object]]]:
    import softmaxkit as sk

    out = []
    for dt in (_F32, _F64):
        name = np.dtype(dt).name
        x = _x((64, 200), dt)
        out += [
            ("Normalizer.update", name, lambda x=x: sk.Normalizer.empty((64,), x.dtype).update(x)),
            ("topk_softmax", name, lambda x=x: sk.topk_softmax(x, 5)),
            ("stream_logsumexp", name, lambda x=x: sk.stream_logsumexp([x[:, :100], x[:, 100:]])),
        ]
    return out


def _losses() -> list[tuple[str, str, Callable[[], object]]]:
    import softmaxkit as sk

    out = []
    t = np.arange(64) % 200
    for dt in (_F32, _F64):
        name = np.dtype(dt).name
        z = _x((64, 200), dt)
        h, w = _x((16, 32), dt, 1), _x((200, 32), dt, 2)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)  # NumPy: building the table compiles nothing
        out += [
            ("cross_entropy", name, lambda z=z, t=t: sk.cross_entropy(z, t)),
            ("cross_entropy grad", name, lambda z=z, t=t: sk.cross_entropy(z, t, return_grad=True)),
            (
                "linear_cross_entropy",
                name,
                lambda h=h, w=w, t=t: sk.linear_cross_entropy(h, w, t[:16]),
            ),
            ("multiclass_hinge_loss", name, lambda z=z, t=t: sk.multiclass_hinge_loss(z, t)),
            ("max_margin_loss", name, lambda z=z: sk.max_margin_loss(z[:, :198], 10)),
            ("softmax_vjp", name, lambda y=y, z=z: sk.softmax_vjp(y, z)),
            ("log_softmax_vjp", name, lambda y=y, z=z: sk.log_softmax_vjp(np.log(y), z)),
            ("logsumexp_vjp", name, lambda z=z: sk.logsumexp_vjp(z, np.ones(64, z.dtype))),
            ("softmax_jvp", name, lambda z=z: sk.softmax_jvp(z, z)),
        ]
    return out


def _vocab() -> list[tuple[str, str, Callable[[], object]]]:
    import softmaxkit as sk

    out = []
    t = np.arange(64) % 200
    for dt in (_F32, _F64):
        name = np.dtype(dt).name
        z, z2 = _x((64, 200), dt), _x((64, 200), dt, 3)
        h, w, w2 = _x((16, 32), dt, 1), _x((200, 32), dt, 2), _x((200, 32), dt, 4)
        out += [
            ("sample top-p", name, lambda z=z: sk.sample(z, top_p=0.9, seed=0)),
            ("sample top-k", name, lambda z=z: sk.sample(z, top_k=5, seed=0)),
            ("sampling_probs", name, lambda z=z: sk.sampling_probs(z, min_p=0.1)),
            (
                "cross_entropy outputs",
                name,
                lambda z=z, t=t: sk.cross_entropy(z, t, return_entropy=True, topk=5),
            ),
            ("kl_divergence", name, lambda z=z, y=z2: sk.kl_divergence(z, y, return_grad=True)),
            ("jensen_shannon", name, lambda z=z, y=z2: sk.jensen_shannon(z, y)),
            (
                "linear_kl_divergence",
                name,
                lambda h=h, w=w, v=w2: sk.linear_kl_divergence(h, w, h, v, return_grad=True),
            ),
        ]
    return out


def _segments() -> list[tuple[str, str, Callable[[], object]]]:
    import softmaxkit as sk

    out = []
    ids = np.repeat(np.arange(40), 5)
    shuffled = np.random.default_rng(5).permutation(ids)
    for dt in (_F32, _F64):
        name = np.dtype(dt).name
        x, a, b = _x(200, dt), _x((16, 12), dt, 1), _x((12, 8), dt, 2)
        # values spread over more than 60 units: the float32 unsorted pass with float64
        # exps; a product of more than 2^15 terms: logmatmulexp's BLAS tiles
        wide = (x * 100).astype(dt)
        ta, tb = _x((40, 30), dt, 3), _x((30, 30), dt, 4)
        out += [
            ("segment_softmax", name, lambda x=x: sk.segment_softmax(x, ids)),
            ("segment_logsumexp", name, lambda x=x: sk.segment_logsumexp(x, ids)),
            ("segment_logsumexp unsorted", name, lambda x=x: sk.segment_logsumexp(x, shuffled)),
            (
                "segment_logsumexp unsorted wide",
                name,
                lambda x=wide: sk.segment_logsumexp(x, shuffled),
            ),
            ("logcumsumexp", name, lambda x=x: sk.logcumsumexp(x)),
            ("logmatmulexp", name, lambda a=a, b=b: sk.logmatmulexp(a, b)),
            ("logmatmulexp tiles", name, lambda a=ta, b=tb: sk.logmatmulexp(a, b)),
        ]
    return out


def _quantized() -> list[tuple[str, str, Callable[[], object]]]:
    from .. import quantized as q

    xq = (np.arange(64 * 200) % 255 - 127).astype(np.int8).reshape(64, 200)
    x16 = xq.astype(np.int16) * 200
    args = (64, 200, 1077952640, 19, -3968)
    return [
        ("quantized.softmax", "int8", lambda: q.softmax(xq, 0.1)),
        ("quantized.softmax optimized", "int8", lambda: q.softmax(xq, 0.1, kernel="optimized")),
        ("quantized.softmax", "int16", lambda: q.softmax(x16, 0.001)),
        ("quantized.log_softmax", "int8", lambda: q.log_softmax(xq, 0.1)),
        ("softmax_s8", "int8", lambda: q.softmax_s8(xq.ravel(), *args)),
        ("softmax_u8", "uint8", lambda: q.softmax_u8(xq.ravel().view(np.uint8), *args)),
    ]


_BUILDERS = {
    "dense": _dense,
    "online": _online,
    "losses": _losses,
    "vocab": _vocab,
    "segments": _segments,
    "quantized": _quantized,
}

# family -> [(op, dtype, call)] ; built on first use (the builders import the package)
CASES: dict[str, list[tuple[str, str, Callable[[], object]]]] = {}


def cases(families: Sequence[str] | None = None) -> list[tuple[str, str, str, Callable]]:
    """``(family, op, dtype, call)`` for the given families (all when None), in order."""
    chosen = FAMILIES if families is None or "all" in families else tuple(families)
    for f in chosen:
        if f not in _BUILDERS:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)} or all; got {f!r}")
    rows = []
    for f in chosen:
        if f not in CASES:
            CASES[f] = _BUILDERS[f]()
        rows += [(f, op, dt, call) for op, dt, call in CASES[f]]
    return rows


class _Bar:
    """tqdm on stderr when installed and ``stream`` is a terminal; else one text line
    per case (``[3/20] dense softmax float32  4.1 s``)."""

    def __init__(self, total: int, stream: TextIO, quiet: bool):
        self.total, self.stream, self.quiet, self.n = total, stream, quiet, 0
        self._tqdm = None
        if not quiet and stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._tqdm = tqdm(total=total, unit="case", file=stream, desc="warmup")

    def step(self, label: str, seconds: float) -> None:
        self.n += 1
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(label, refresh=False)
            self._tqdm.update(1)
        elif not self.quiet:
            self.stream.write(f"[{self.n}/{self.total}] {label}  {seconds:.1f} s\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


def warmup(
    families: Sequence[str] | None = None, *, stream: TextIO | None = None, quiet: bool = True
) -> dict[str, int | float]:
    """Compile (or load from the cache) every kernel the cases of ``families`` use.

    Returns ``{"cases", "compiled", "seconds"}``: ``compiled`` counts the outermost
    kernels that had to be compiled (0 when the cache was already warm).
    """
    from .._kernels import _hooks

    rows = cases(families)
    before = _hooks.COMPILED["top"]
    bar = _Bar(len(rows), stream or sys.stderr, quiet)
    t0 = time.perf_counter()
    try:
        with coldstart.foreground():
            for family, op, dt, call in rows:
                t = time.perf_counter()
                call()
                bar.step(f"{family} {op} {dt}", time.perf_counter() - t)
    finally:
        bar.close()
    return {
        "cases": len(rows),
        "compiled": _hooks.COMPILED["top"] - before,
        "seconds": time.perf_counter() - t0,
    }


def clear() -> tuple[int, list[str]]:
    """Delete softmaxkit's cached kernels (``*.nbi`` / ``*.nbc`` files in the directories
    Numba uses for softmaxkit's sources); return how many files and the directories."""
    from .._kernels import _hooks

    dirs = _hooks.cache_dirs()
    n = 0
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(d, name))
                n += 1
    return n, dirs


def _cmd_warmup(args) -> int:
    from .._kernels import _hooks

    if args.where:
        print(_hooks.cache_dir() or "(none: kernels are compiled in memory)")
        return 0
    if args.clear:
        n, dirs = clear()
        print(f"removed {n} cached kernel files from {', '.join(dirs) or '(no cache directory)'}")
        return 0
    stats = warmup(args.family or None, quiet=args.quiet)
    where = _hooks.cache_dir() or "memory only (no writable cache directory)"
    print(
        f"warmup: {stats['cases']} cases, {stats['compiled']} kernels compiled, "
        f"{stats['seconds']:.1f} s; cache: {where}"
    )
    return 0


def register(subparsers) -> None:
    """Add ``warmup``."""
    p = subparsers.add_parser(
        "warmup",
        help="compile and cache every kernel ahead of time (or --clear the cache)",
        description="Numba compiles each kernel on its first call (seconds each) and "
        "caches it on disk.  warmup makes every first call now, on tiny inputs, so later "
        "processes load the kernels from the cache.  The cache lives in NUMBA_CACHE_DIR "
        "when set, else beside the installed package (__pycache__) or in Numba's user "
        "cache directory (--where prints it).",
    )
    p.add_argument(
        "--family",
        action="append",
        choices=(*FAMILIES, "all"),
        help="only this family (repeatable; default: all)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--where", action="store_true", help="print the cache directory and exit")
    p.add_argument(
        "--clear", action="store_true", help="delete softmaxkit's cached kernels and exit"
    )
    p.set_defaults(func=_cmd_warmup)


DEMO_STEPS: list = []
