"""Fresh output arrays: 2 MiB (huge page) aligned, and reused once released.

Alignment.  A plain call (no ``out=``) writes every element of a new array, and on
Linux the first write to each page of fresh memory faults it in.  NumPy asks for
transparent huge pages (``madvise(MADV_HUGEPAGE)``) on allocations of 4 MiB and more,
but ``malloc`` returns memory 16 bytes past a page boundary, so the first and last
partial 2 MiB spans of the array fall back to 4 KiB pages, each faulted separately
(about 2 microseconds each on the developer VM, against 0.1-0.2 ms per 2 MiB huge
page).  Allocating 2 MiB more and starting the array at the first 2 MiB boundary
inside the buffer lets every full 2 MiB span be one huge page; the unused head and
tail are never written, so they cost address space, not memory.  Measured on
[65536, 128] (plain call, interleaved with PyTorch calls, medians): float32 softmax
9.78 -> 5.52 ms, log_softmax 9.56 -> 6.28 ms, float64 softmax 13.2 -> 10.5 ms
(``docs/performance.md``, "Fresh outputs").

Reuse.  Even a huge page costs its zeroing when first touched (a fresh 32 MiB output:
about 2.1 ms, as long as the softmax itself on [65536, 128] float32).  When the last
array using such a buffer is released, the buffer goes back to a small cache, and
the next output of the same size class takes it with its pages already mapped.  The
cache keeps the most recently released buffers up to ``limit`` bytes in all and frees
the oldest beyond it.  The limit is 1 GiB by default, ``SOFTMAXKIT_OUTPUT_CACHE`` in
the environment (e.g. ``0``, ``64M``, ``1G``), or :func:`set_output_cache` at run
time.  Each buffer counts as its size class, the output's bytes rounded up to 2 MiB:
the alignment slack is never written, so it is address space, not memory.  A buffer is
never handed out while any array viewing it is alive: the output's ``base`` is a
small lease object, and a ``weakref.finalize`` on it returns the buffer only once
every view is gone.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np

HUGE_PAGE = 1 << 21
ALIGN_MIN_BYTES = 1 << 22  # NumPy's own threshold for asking for huge pages
DEFAULT_LIMIT = 1 << 30
ENV = "SOFTMAXKIT_OUTPUT_CACHE"

_CACHES: list[ReleasedBuffers] = []  # every cache, for the fork hook


class _Lease:
    """The ``base`` of an output array built on a cached buffer (keeps it alive)."""

    __slots__ = ("__array_interface__", "__weakref__")


def _parse_limit(text: str, env: str = ENV) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        val = int(float(num) * units[unit])
    except (ValueError, OverflowError):  # not a number, or inf
        val = -1
    if val < 0:
        raise ValueError(f"{env} must be a byte count such as 0, 67108864, 64M or 1G; got {text!r}")
    return val


def _held(raw: np.ndarray) -> int:
    # the memory a cached buffer holds: its size class, a multiple of 2 MiB.  The
    # other 2 MiB of the buffer (the unaligned head and tail) are never written, so
    # they are address space, not memory, and do not count against the limit.
    return raw.size - HUGE_PAGE


class ReleasedBuffers:
    """Released raw ``uint8`` buffers kept for reuse, up to a byte limit.

    The state of one cache (this module's output cache; ``softmaxkit.torch``'s
    gradient cache): the buffers, oldest first, and the bytes they hold; the limit,
    read from the environment variable ``env`` on first use (``default`` when
    unset); hits and misses.  A
    buffer counts as its size class (:func:`_held`).  Thread-safe (one re-entrant
    lock: a finalizer may run during a cache operation), and fork-safe (the child
    gets a free lock).
    """

    def __init__(self, env: str, default: int) -> None:
        self.env = env
        self.default = default
        self.lock = threading.RLock()
        self.free: list[np.ndarray] = []
        self._limit: int | None = None  # read from the environment on first use
        self.cached = 0  # bytes held (size classes)
        self.hits = 0
        self.misses = 0
        _CACHES.append(self)

    def limit(self) -> int:
        if self._limit is None:
            env = os.environ.get(self.env)
            self._limit = (
                self.default if env is None or not env.strip() else _parse_limit(env, self.env)
            )
        return self._limit

    def _trim(self, limit: int) -> None:
        while self.free and self.cached > limit:
            self.cached -= _held(self.free.pop(0))

    def give(self, raw: np.ndarray) -> None:
        """The finalizer of a lease: the buffer's last view is gone."""
        with self.lock:
            limit = self.limit()
            if _held(raw) > limit:
                return
            self.free.append(raw)
            self.cached += _held(raw)
            self._trim(limit)

    def take(self, cap: int) -> np.ndarray | None:
        """A released buffer of ``cap`` bytes (most recent first), or None (a miss)."""
        with self.lock:
            # read the limit here, so that a bad environment variable fails the call
            # that asked for a buffer, not the lease's finalizer later (where Python
            # only prints "Exception ignored" and the buffer is dropped)
            self.limit()
            for k in range(len(self.free) - 1, -1, -1):
                if self.free[k].size == cap:
                    raw = self.free.pop(k)
                    self.cached -= _held(raw)
                    self.hits += 1
                    return raw
            self.misses += 1
            return None

    def set_limit(self, limit: int) -> int:
        """Set the limit (bytes, ``>= 0``; 0 frees everything held); the old one."""
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise TypeError(f"limit must be an int number of bytes, got {type(limit).__name__}")
        if limit < 0:
            raise ValueError(f"limit must be >= 0 bytes, got {limit}")
        with self.lock:
            old = self.limit()
            self._limit = int(limit)
            self._trim(self._limit)
        return old

    def info(self) -> dict[str, int]:
        with self.lock:
            return {
                "limit": self.limit(),
                "cached_bytes": self.cached,
                "buffers": len(self.free),
                "hits": self.hits,
                "misses": self.misses,
            }


def _reset_locks_in_child() -> None:
    # a fork while another thread held a lock would leave the child's copy locked
    for c in _CACHES:
        c.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)

OUTPUTS = ReleasedBuffers(ENV, DEFAULT_LIMIT)


def set_output_cache(limit: int) -> int:
    """Set how much memory of released output buffers softmaxkit keeps for reuse.

    Plain calls of :func:`softmaxkit.softmax` and :func:`softmaxkit.log_softmax`
    whose output is 4 MiB or more take their output from buffers that earlier
    outputs of the same size released, skipping the kernel's zeroing of fresh pages
    (about 2 ms per 32 MiB on the developer machine).  Released buffers are kept,
    most recent first, up to ``limit`` bytes in all; ``0`` turns the cache off and
    frees what it holds.  The default is 1 GiB, or ``SOFTMAXKIT_OUTPUT_CACHE``
    (bytes, or with a ``K`` / ``M`` / ``G`` suffix) when it is set.  A buffer is
    reused only after every array viewing it has been released.  Peak extra memory:
    none (this call only frees cached buffers when the limit shrinks).

    Parameters
    ----------
    limit : int
        Most bytes kept, ``>= 0``.

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> import softmaxkit as sk
    >>> old = sk.set_output_cache(0)       # no cache: every output is fresh memory
    >>> sk.output_cache_info()["cached_bytes"]
    0
    >>> sk.set_output_cache(old) == 0
    True
    """
    return OUTPUTS.set_limit(limit)


def output_cache_info() -> dict[str, int]:
    """The state of the cache of released output buffers (:func:`set_output_cache`).

    Returns
    -------
    dict
        ``limit`` (bytes), ``cached_bytes`` and ``buffers`` (the memory held now, and
        in how many released buffers), ``hits`` / ``misses`` (outputs of 4 MiB or
        more taken from the cache / freshly allocated since the process started).

    Examples
    --------
    >>> import softmaxkit as sk
    >>> sorted(sk.output_cache_info())
    ['buffers', 'cached_bytes', 'hits', 'limit', 'misses']
    """
    return OUTPUTS.info()


def empty_like(arr: np.ndarray, dtype) -> np.ndarray:
    """``np.empty_like(arr, dtype=dtype)``, 2 MiB-aligned when it is 4 MiB or more.

    The result has ``arr``'s shape and memory order (C or Fortran; other layouts and
    small arrays come from ``np.empty_like`` itself).  A large one is a view of a
    private ``uint8`` buffer (``owndata`` is False; its ``base`` is a lease object),
    taken from the cache of released buffers when one of the same size class is there
    (module docstring); its contents are then whatever was last written to it.
    """
    dtype = np.dtype(dtype)
    nbytes = arr.size * dtype.itemsize
    if nbytes < ALIGN_MIN_BYTES:
        return np.empty_like(arr, dtype=dtype)
    if arr.flags.c_contiguous:
        order = "C"
    elif arr.flags.f_contiguous:
        order = "F"
    else:
        return np.empty_like(arr, dtype=dtype)
    cap = -(-nbytes // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE  # size class + alignment slack
    raw = OUTPUTS.take(cap)
    if raw is None:
        raw = np.empty(cap, dtype=np.uint8)
    return leased(raw, arr.size, dtype, OUTPUTS).reshape(arr.shape, order=order)


def leased(raw: np.ndarray, n: int, dtype: np.dtype, cache: ReleasedBuffers) -> np.ndarray:
    """A 1-D array of ``n`` ``dtype`` values at the first 2 MiB boundary of ``raw``,
    whose buffer goes back to ``cache`` once every view of it is released (its
    ``base`` is a :class:`_Lease` with a finalizer)."""
    ptr = raw.ctypes.data
    lease = _Lease()
    lease.__array_interface__ = {
        "data": (ptr + (-ptr % HUGE_PAGE), False),
        "shape": (n,),
        "typestr": dtype.str,
        "version": 3,
    }
    fin = weakref.finalize(lease, cache.give, raw)
    fin.atexit = False
    return np.asarray(lease)
