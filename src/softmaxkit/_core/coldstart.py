"""Cold start: small calls do not wait for a kernel to compile.

The first call of a kernel with new argument types makes Numba compile it (seconds;
``docs/performance.md``, "First call").  On a machine whose kernel cache is empty, a
public function whose input has at most :data:`SMALL` values runs inside
:func:`allow`; when a kernel it needs would be *compiled* (not loaded from the
cache), the compile listener in ``_kernels/_hooks.py`` hands that kernel's signature
to a background process (``_kernels/_background.py``), which compiles it into the
on-disk cache, and raises :class:`ColdKernel` instead.  The public function catches
it and computes the result with its float64 reference formula (``softmaxkit.reference``),
rounded once to the output dtype: as accurate as the kernel or more, and the same
edge-case contract.  Once the background process has written the kernel, the next
call loads it from the cache (milliseconds) and runs it.

Larger calls, and every call when ``SOFTMAXKIT_COMPILE=foreground`` is set (the test
suite, ``softmaxkit warmup`` and ``softmaxkit bench`` set it), compile in the calling
process as before.  This module imports neither Numba nor the kernels.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "SMALL",
    "ColdKernel",
    "allow",
    "allowed",
    "background_enabled",
    "fallback",
    "fell_back",
    "foreground",
]

#: Inputs of at most this many values may take the reference path while cold
#: (float64 NumPy formulas: a few ms at this size).
SMALL = 1 << 18

_ENV = "SOFTMAXKIT_COMPILE"
# Tests set this to make every small call take the reference path, as on a cold cache.
_FORCE = False
_local = threading.local()


class ColdKernel(Exception):
    """A kernel this call needs is not compiled yet; it is compiling in the background."""


_foreground = 0  # > 0 inside foreground(): this process compiles in the caller


def background_enabled() -> bool:
    """False inside :func:`foreground` or when ``SOFTMAXKIT_COMPILE=foreground``."""
    if _foreground:
        return False
    v = os.environ.get(_ENV)
    return v is None or v.strip().lower() != "foreground"


@contextlib.contextmanager
def foreground() -> Iterator[None]:
    """Compile every kernel in the calling process inside this block (warmup, bench:
    they must run the kernels, not the reference formulas)."""
    global _foreground
    _foreground += 1
    try:
        yield
    finally:
        _foreground -= 1


def allowed() -> bool:
    """True inside :func:`allow` on this thread when background compiling is enabled
    (read by the compile listener, so the environment is read only when a kernel is
    about to compile, not on every call)."""
    return getattr(_local, "allow", 0) > 0 and background_enabled()


def fell_back() -> bool:
    """True when the last :func:`allow` block on this thread ended in :class:`ColdKernel`."""
    return getattr(_local, "fell_back", False)


class _Allow:
    """The context manager of :func:`allow` (a class: a generator-based one cost
    about a microsecond per call, a third of a small softmax)."""

    __slots__ = ("on",)

    def __init__(self, size: int) -> None:
        self.on = size <= SMALL and not _foreground
        _local.fell_back = False
        if _FORCE and self.on:
            _local.fell_back = True
            raise ColdKernel("forced (tests)")

    def __enter__(self) -> None:
        if self.on:
            _local.allow = getattr(_local, "allow", 0) + 1

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        if et is not None and issubclass(et, ColdKernel):
            _local.fell_back = True
        if self.on:
            _local.allow -= 1
        return False


def allow(size: int) -> contextlib.AbstractContextManager[None]:
    """Let the kernels called in this block raise :class:`ColdKernel` instead of
    compiling, when ``size`` (the input's number of values) is at most :data:`SMALL`
    and background compiling is enabled.  Nested blocks are fine."""
    return _Allow(size)


def float_like(res: Any, dtype: Any) -> Any:
    """``res`` (an array, a scalar or a tuple of them) with every floating leaf cast
    to ``dtype`` (0-d results as NumPy scalars); other leaves as they are."""
    import numpy as np

    if isinstance(res, tuple):
        return tuple(float_like(r, dtype) for r in res)
    a = np.asarray(res)
    if a.dtype.kind != "f":
        return res
    with np.errstate(over="ignore", under="ignore"):
        a = a.astype(dtype)
    return a[()] if a.ndim == 0 else a


def fallback(
    reference: str, out_dtype: Callable[..., Any], size: Callable[..., int] | None = None
) -> Callable[[F], F]:
    """Decorate a public function: a call on at most :data:`SMALL` values whose kernel
    would compile returns ``reference(*args, **kwargs)`` instead (``"module:name"``
    of a float64 twin taking the same arguments but ``dtype`` and ``out``), cast to
    ``out_dtype(*args, **kwargs)`` and written into ``out=`` when given.  ``size``:
    the number of values that decides (default: the first argument's), e.g. the
    logits' ``N * V`` of a linear loss that never forms them but whose twin does."""
    import functools

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                n = _size(args[0]) if args else SMALL + 1
                if size is not None and args:
                    try:
                        n = size(*args, **kwargs)
                    except Exception:  # bad input: the function raises its own error
                        n = SMALL + 1
                with allow(n):
                    return fn(*args, **kwargs)
            except ColdKernel:
                import importlib

                import numpy as np

                module, _, name = reference.partition(":")
                ref = getattr(importlib.import_module(module), name)
                dt = out_dtype(*args, **kwargs)
                rkw = {k: v for k, v in kwargs.items() if k not in ("out", "dtype")}
                try:
                    res = float_like(ref(*args, **rkw), dt)
                except TypeError:
                    # an option the twin does not take: compile here, as before
                    with foreground():
                        return fn(*args, **kwargs)
                out = kwargs.get("out")
                if out is None:
                    return res
                first = res[0] if isinstance(res, tuple) else res
                with np.errstate(over="ignore", under="ignore"):
                    out[...] = first
                return (out, *res[1:]) if isinstance(res, tuple) else out

        return wrapper  # type: ignore[return-value]

    return deco


def _size(x: Any) -> int:
    """The number of values of ``x`` without converting an array of any library."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        try:
            return math.prod(int(n) for n in shape)
        except (TypeError, ValueError):  # unknown sizes (Dask): not a small call
            return SMALL + 1
    import numpy as np

    try:
        return int(np.size(x))
    except Exception:  # not array-like: let the function raise its own error
        return SMALL + 1
