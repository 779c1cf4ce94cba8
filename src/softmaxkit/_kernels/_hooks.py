"""Two process-wide hooks into Numba, installed when ``softmaxkit._kernels`` is imported.

* **Compile log.**  A listener on Numba's ``"numba:compile"`` event (sent only when a
  kernel is compiled, not when it is loaded from the on-disk cache) writes one
  ``logging`` INFO line on the ``"softmaxkit"`` logger per outermost softmaxkit
  kernel being compiled, naming it and its argument types.  Nothing is printed unless
  the application configures logging.  The helpers that kernel compiles on the way
  (dozens of nested dispatchers) are counted, not logged.
* **Cold start.**  When a kernel would be compiled inside ``_core.coldstart.allow``
  (a small call, background compiling on), the listener hands its signature to
  ``_background.submit`` and raises ``ColdKernel`` before Numba compiles anything;
  the public function then returns its float64 reference result.
* **No-disk fallback.**  Numba caches a kernel beside its source (``__pycache__``),
  in ``NUMBA_CACHE_DIR`` when set, or in its user-wide cache directory
  (``~/.cache/numba``); when none of them is writable, ``@njit(cache=True)`` raises
  ``RuntimeError: cannot cache function ...: no locator available`` at import.  A last
  locator, claiming only softmaxkit's own kernels, lets them compile in memory
  instead: one ``RuntimeWarning`` per process, and the compile listener switches the
  cache of each such kernel off before Numba would save it (so nothing is ever
  written).  Numba's own locators are tried first and keep working unchanged for
  every other library.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
import warnings

from numba.core import caching, event

from .._core import coldstart
from . import _background

__all__ = ["COMPILED", "cache_dir", "cache_dirs", "install"]

log = logging.getLogger("softmaxkit")

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../softmaxkit

# Counters a caller (softmaxkit warmup, tools/first_call.py, the tests) may read:
# "top" outermost softmaxkit kernels compiled in this process, "all" every softmaxkit
# dispatcher signature compiled (helpers included).
COMPILED = {"top": 0, "all": 0}

_IN_MEMORY: set = set()  # py_funcs claimed by the no-disk locator
_NO_DISK_NAME = f"softmaxkit-no-disk-cache-{uuid.uuid4().hex}"
_warned = False
_local = threading.local()


def _ours(dispatcher) -> bool:
    mod = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return mod == "softmaxkit" or mod.startswith("softmaxkit.")


def _signature(args) -> str:
    text = ", ".join(str(a) for a in args)
    return text if len(text) <= 160 else text[:157] + "..."


class _CompileListener(event.Listener):
    def on_start(self, ev):
        disp = ev.data.get("dispatcher")
        if not _ours(disp):
            return
        if (
            getattr(_local, "depth", 0) == 0
            and coldstart.allowed()
            and disp.py_func not in _IN_MEMORY
            and _background.submit(disp, ev.data.get("args", ()))
        ):
            # a small call on a cold cache: the kernel compiles in a background
            # process and this call takes the reference path (_core/coldstart.py)
            raise coldstart.ColdKernel(disp.py_func.__qualname__)
        if disp.py_func in _IN_MEMORY:
            # no writable cache directory: keep this compile in memory (Cache.disable
            # makes save_overload return before it touches the file system)
            disp._cache.disable()
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        COMPILED["all"] += 1
        if depth == 0:
            COMPILED["top"] += 1
            name = disp.py_func.__module__.rpartition(".")[2] + "." + disp.py_func.__name__
            log.info(
                "compiling Numba kernel %s(%s): first use with these types; "
                "later processes load it from the cache (softmaxkit warmup compiles "
                "every kernel ahead of time)",
                name,
                _signature(ev.data.get("args", ())),
            )

    def on_end(self, ev):
        if _ours(ev.data.get("dispatcher")):
            _local.depth = max(0, getattr(_local, "depth", 1) - 1)


def _outside_numba() -> int:
    """The ``stacklevel`` of the first caller outside Numba and this module (the
    kernel module being decorated), for a warning raised from a locator."""
    import numba

    skip = (os.path.dirname(numba.__file__), os.path.abspath(__file__))
    frame, level = sys._getframe(2), 2  # 1: the locator's from_function
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def _base_locator():
    return getattr(caching, "_CacheLocator", None)


def _make_locator():
    base = _base_locator()
    mixin = getattr(caching, "_SourceFileBackedLocatorMixin", None)
    if base is None or mixin is None:  # pragma: no cover - a Numba without these
        return None

    class NoDiskLocator(mixin, base):
        """Last resort for softmaxkit's kernels: a cache that is never written.

        Its directory is never created; the compile listener disables the cache of
        every kernel it claims, so ``save_overload`` writes nothing and
        ``load_overload`` finds no index (a miss).
        """

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno

        def ensure_cache_path(self):
            pass

        def get_cache_path(self):
            # never created: loading the index finds no file (a miss).  Inside the
            # kernels' own directory, not writable here, so nobody else can plant
            # an index there either.
            return os.path.join(os.path.dirname(self._py_file), _NO_DISK_NAME)

        @classmethod
        def from_function(cls, py_func, py_file):
            global _warned
            if not os.path.abspath(py_file).startswith(_PKG + os.sep):
                return None  # another library's function: Numba's own error stands
            _IN_MEMORY.add(py_func)
            if not _warned:
                _warned = True
                warnings.warn(
                    "softmaxkit: no writable directory for Numba's kernel cache "
                    f"(NUMBA_CACHE_DIR unset or not writable, {os.path.dirname(py_file)} "
                    "not writable, and no writable user cache directory such as "
                    "~/.cache/numba): kernels are compiled in memory for this process "
                    "only and each new process compiles them again.  Set NUMBA_CACHE_DIR "
                    "to a writable directory to keep them (docs/performance.md).",
                    RuntimeWarning,
                    stacklevel=_outside_numba(),
                )
            return cls(py_func, py_file)

    return NoDiskLocator


_LISTENER = _CompileListener()
_installed = False


def install() -> None:
    """Register the compile listener and append the no-disk locator (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    event.register("numba:compile", _LISTENER)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    locator = _make_locator()
    if impl is not None and locator is not None:
        classes = impl._locator_classes
        if not any(getattr(c, "__name__", "") == "NoDiskLocator" for c in classes):
            classes.append(locator)


def cache_dir(source: str | None = None) -> str | None:
    """The directory that holds the compiled kernels of ``source``'s directory (default:
    ``_kernels``, where every kernel module lives), or None (in memory only).

    Asks Numba's locators in Numba's order, as Numba does on a kernel's first compile
    (which also creates the directory).
    """
    source = os.path.abspath(source or __file__)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    for cls in getattr(impl, "_locator_classes", ()):
        locator = cls.from_function(cache_dir, source)
        if locator is not None:
            if type(locator).__name__ == "NoDiskLocator":
                return None
            return str(locator.get_cache_path())
    return None


def cache_dirs() -> list[str]:
    """Every directory that may hold softmaxkit's compiled kernels: ``_kernels``, each of
    its subpackages (``rows/``, ``losses/``, ``sampling/``: Numba keys the cache on a
    source's directory) and the package itself (the bench's copy kernels)."""
    here = os.path.dirname(os.path.abspath(__file__))
    subs = sorted(
        os.path.join(here, d, "__init__.py")
        for d in os.listdir(here)
        if os.path.isfile(os.path.join(here, d, "__init__.py"))
    )
    dirs = [
        cache_dir(),
        *(cache_dir(s) for s in subs),
        cache_dir(os.path.join(_PKG, "__init__.py")),
    ]
    return [d for d in dict.fromkeys(dirs) if d]
