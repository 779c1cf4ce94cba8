"""Run a serial ``nogil`` range kernel over task ranges on several threads.

The thread count follows Numba's setting: ``numba.get_num_threads()`` (itself
``NUMBA_NUM_THREADS`` by default, changed with ``numba.set_num_threads``), so one
knob controls every softmaxkit kernel.  Inputs of at most ``PAR_MIN`` units of work
(a float32 value is one unit, a float64 value two: its exp costs 2.4x as much) run
on the calling thread.  Larger ones are cut into a few ranges per thread that the
calling thread and the pool workers take from a shared counter (see :func:`run`).

With PyTorch loaded in the process, the ranges run on torch's own OpenMP team
instead of the pool (see ``_omp_team`` below: the same ranges, the same shared
counter, other threads).

This is the only threading layer of softmaxkit: no kernel uses ``parallel=True``
(Numba's OpenMP layer aborts a forked child that runs a parallel region after its
parent did: "fork() called from a process already using GNU OpenMP"; the TBB layer
needs another package; the workqueue layer is not safe for concurrent callers).
Row kernels are serial ``nogil`` kernels over a ``[r0, r1)`` row range, wrapped by
:func:`over_rows`; ``tests/test_fork.py`` guards both the fork safety and the
absence of ``parallel=True``.  The pool is dropped in a forked child (its threads
do not exist there) by a fork hook, and the lock guarding it is renewed.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

# Up to this much work one thread is as fast or faster than a hand-off (0.3-0.5 ms
# of work here: a late worker, or one sharing its vCPU with another library's spinning
# OpenMP threads, takes over too little of it).  Measured, one against two threads,
# medians of calls interleaved with PyTorch's (with NumPy's) -- float32 [1, 5e5]:
# softmax 0.31 / 0.37 ms (0.30 / 0.38), logsumexp 0.27 / 0.43 (0.21 / 0.29); [1, 1e6]:
# softmax 0.62 / 0.71 (0.54 / 0.53), log_softmax 0.65 / 0.72 (0.59 / 0.63), logsumexp
# 0.45 / 0.50 (0.40 / 0.39); [1000, 1000] softmax 0.58 / 0.69 (0.50 / 0.59).  From
# [1, 2e6] float32 and [1, 1e6] float64 on, two threads win (float64 [1, 1e6]
# logsumexp 1.64 / 1.30, softmax 1.81 / 1.62).
PAR_MIN = 1 << 20

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_LOCK = threading.Lock()


def threads_for(size: int, itemsize: int = 4) -> int:
    """Threads to use for ``size`` values computed in a dtype of ``itemsize`` bytes."""
    if size * max(1, itemsize // 4) <= PAR_MIN:
        return 1
    import numba

    return max(1, int(numba.get_num_threads()))


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    with _LOCK:
        if _POOL is None or _POOL_PID != os.getpid():  # a forked child has no threads
            import numba

            _POOL = ThreadPoolExecutor(
                max_workers=max(1, int(numba.config.NUMBA_NUM_THREADS)),
                thread_name_prefix="softmaxkit",
            )
            _POOL_PID = os.getpid()
        return _POOL


def _after_fork_in_child() -> None:
    # the parent's worker threads do not exist in a forked child, and the lock may
    # have been held by another parent thread at the fork: start afresh; the OpenMP
    # team (below) is not used in a child at all (libgomp's pool would wait forever
    # for the parent's threads)
    global _POOL, _POOL_PID, _LOCK, _OMP_PID
    _POOL = None
    _POOL_PID = -1
    _LOCK = threading.Lock()
    _OMP_PID = -2


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_CHUNKS_PER_THREAD = 4  # ranges per thread, taken in turn from a shared counter

# ------------------------------------------------------- PyTorch's OpenMP team
# PyTorch's CPU ops run on libgomp's team, whose worker keeps spinning on the other
# core for milliseconds after each op.  A softmaxkit call right after a torch op
# (every call in a training step) then had its pool worker share that core with the
# spinning thread: [65536, 128] bfloat16 softmax, 2 threads, interleaved with
# torch's, 6.1 ms against 5.8 on one thread.  When torch's libgomp is loaded in this
# process, the ranges run on that same team instead (``GOMP_parallel`` with a ctypes
# callback: each team thread takes the GIL only to call the ``nogil`` kernel, the
# kernel itself runs without it), so the spinning worker takes our ranges at once:
# 6.1-8.9 -> 3.5-5.5 ms (docs/performance.md, "Threads").  Never in a forked child (libgomp's team
# does not exist there) and never unless torch is already imported (no import here).
# ``OMP = False`` (or ``SOFTMAXKIT_OMP_TEAM=0`` in the environment) turns it off.
OMP = os.environ.get("SOFTMAXKIT_OMP_TEAM", "1") != "0"
_OMP_PID = -1  # the pid the team was looked up in; -2: a forked child, never
_OMP: tuple | None = None  # (GOMP_parallel, CFUNCTYPE) when found


def _omp_team():
    """``(GOMP_parallel, callback type)`` of the process's libgomp, or None."""
    global _OMP_PID, _OMP
    if not OMP or _OMP_PID == -2 or "torch" not in sys.modules:
        return None
    if _OMP_PID == os.getpid():
        return _OMP
    _OMP = None
    _OMP_PID = os.getpid()
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "libgomp" in ln and "/" in ln}
        # torch's own copy (its wheel ships one); another libgomp may be loaded too
        # (Numba's threading layer loads the system's): a second runtime would bring
        # its own spinning threads, the very thing this avoids
        home = os.path.dirname(getattr(sys.modules["torch"], "__file__", None) or "/-")
        mine = [p for p in paths if p.startswith(home + os.sep)]
        import ctypes

        for path in mine or (sorted(paths) if len(paths) == 1 else []):
            lib = ctypes.CDLL(path)
            fn = getattr(lib, "GOMP_parallel", None)
            if fn is not None:
                cb = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
                fn.argtypes = [cb, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                fn.restype = None
                _OMP = (fn, cb)
                break
    except OSError:  # no /proc (not Linux), or the library cannot be opened
        _OMP = None
    return _OMP


def run(kernel, ntask: int, nt: int, *args, chunks: int = _CHUNKS_PER_THREAD) -> None:
    """``kernel(*args, t0, t1)`` over ``[0, ntask)`` on ``nt`` threads.

    The tasks are cut into up to ``_CHUNKS_PER_THREAD * nt`` contiguous ranges that the
    calling thread and ``nt - 1`` pool workers take from a shared counter (dynamic
    scheduling).  A worker that starts late -- a vCPU waking from idle, or busy with
    another library's spinning OpenMP threads, costs 0.2-1.4 ms here -- then costs
    only the ranges it did not take, instead of delaying a fixed half of the work:
    softmax of [65536, 128] float32 (3 ms calls) interleaved with PyTorch and NumPy
    calls, median 6.3 -> 3.6-4.0 ms (docs/performance.md).  ``chunks``: ranges per
    thread (the torch bfloat16 calls ask for more, ``softmaxkit/torch/_fast.py``).
    """
    if ntask <= 0:
        return
    nt = max(1, min(nt, ntask))
    if nt == 1:
        kernel(*args, 0, ntask)
        return
    nch = min(ntask, max(1, chunks) * nt)
    bounds = [ntask * k // nch for k in range(nch + 1)]
    counter = itertools.count()  # next() is atomic under the GIL
    # A cancelled work item stays in the pool's queue until a worker pops it, so the
    # closure must not keep the arrays alive after this call: it reaches them
    # through ``held``, emptied on return (an output released by the caller then
    # goes back to the output cache at once, ``_buffers``).
    held = [args]

    def work():
        a = held[0] if held else None
        while a is not None and (k := next(counter)) < nch:
            kernel(*a, bounds[k], bounds[k + 1])

    omp = _omp_team()
    if omp is not None and threading.current_thread() is threading.main_thread():
        _run_omp(omp, work, nt, held)
        return
    try:
        futs = [_pool().submit(work) for _ in range(1, nt)]
        work()  # the calling thread takes ranges too
        for f in futs:
            # a worker that has not started yet took no range: cancel it rather than
            # wait for its wake-up (or for a pool busy with other callers) to find no
            # work left
            if not f.cancel():
                f.result()
    finally:
        held.clear()


def _run_omp(omp, work, nt: int, held: list) -> None:
    """``work`` on ``nt`` threads of the OpenMP team (the caller is thread 0)."""
    gomp_parallel, cbtype = omp
    errors: list[BaseException] = []

    def body(_data):
        try:
            work()
        except BaseException as e:  # a ctypes callback cannot raise: hand it back
            errors.append(e)

    cb = cbtype(body)
    try:
        gomp_parallel(cb, None, nt, 0)
    finally:
        held.clear()
    if errors:
        raise errors[0]


def over_rows(cost: int = 1, strided: tuple[int, ...] = ()):
    """Decorate a serial range kernel ``kernel(x, *args, r0, r1)`` into
    ``f(x, *args)`` that runs it over the rows ``[0, x.shape[0])`` with :func:`run`.

    ``strided``: positions (in ``(x, *args)``) of arrays that reach the kernel typed as
    strided arrays whatever their layout (``view.any_layout``: one compiled variant
    for a full and a broadcast mask).

    The thread count is :func:`threads_for` of ``cost * x.size`` values of
    ``x.itemsize`` bytes: ``cost`` is the kernel's work per value relative to a
    float32 exp (measured on the reference [4096, n] calls, one thread: cross-entropy
    ~2 ns a value, top-k ~3, 8-bit quantized ~12, against ~0.3 ns for the dense
    kernels' exp).  The Numba dispatcher stays reachable as ``f.kernel``.
    """

    def wrap(kernel):
        @functools.wraps(kernel, updated=())
        def call(x, *args):
            R = x.shape[0]
            if R:
                k = kernel
                if strided:
                    from .view import any_layout

                    k = any_layout(kernel, (x, *args), strided)
                run(k, R, threads_for(cost * x.size, x.itemsize), x, *args)

        call.kernel = kernel
        return call

    return wrap
