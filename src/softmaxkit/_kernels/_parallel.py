"""Run a serial ``nogil`` range kernel over task ranges on several threads.

The thread count follows Numba's setting: ``numba.get_num_threads()`` (itself
``NUMBA_NUM_THREADS`` by default, changed with ``numba.set_num_threads``), so one
knob controls every softmaxkit kernel.  Inputs smaller than ``PAR_MIN`` elements
run on the calling thread (thread hand-off costs ~20 µs).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

PAR_MIN = 1 << 18  # elements; below this one thread is faster than a hand-off

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_LOCK = threading.Lock()


def threads_for(size: int) -> int:
    """Threads to use for an input of ``size`` elements."""
    if size < PAR_MIN:
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


def run(kernel, ntask: int, nt: int, *args) -> None:
    """``kernel(*args, t0, t1)`` over ``[0, ntask)`` split into ``nt`` contiguous ranges."""
    if ntask <= 0:
        return
    nt = max(1, min(nt, ntask))
    if nt == 1:
        kernel(*args, 0, ntask)
        return
    bounds = [ntask * k // nt for k in range(nt + 1)]
    futs = [_pool().submit(kernel, *args, bounds[k], bounds[k + 1]) for k in range(1, nt)]
    kernel(*args, bounds[0], bounds[1])  # the calling thread takes the first range
    for f in futs:
        f.result()
