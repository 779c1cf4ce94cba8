"""Fresh output arrays whose data start on a 2 MiB (huge page) boundary.

A plain call (no ``out=``) writes every element of a new array, and on Linux the first
write to each page of fresh memory faults it in.  NumPy asks for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on allocations of 4 MiB and more, but ``malloc`` returns
memory 16 bytes past a page boundary, so the first and last partial 2 MiB spans of
the array fall back to 4 KiB pages, each faulted separately (about 2 microseconds
each on the developer VM, against 0.1-0.2 ms per 2 MiB huge page).  Allocating
2 MiB more and starting the array at the first 2 MiB boundary inside the buffer
lets every full 2 MiB span be one huge page; the unused head and tail are never
written, so they cost address space, not memory.

Measured on [65536, 128] (plain call, interleaved with PyTorch calls, medians):
float32 softmax 9.78 -> 5.52 ms, log_softmax 9.56 -> 6.28 ms, float64 softmax
13.2 -> 10.5 ms (``docs/performance.md``, "Fresh outputs").
"""

from __future__ import annotations

import numpy as np

HUGE_PAGE = 1 << 21
ALIGN_MIN_BYTES = 1 << 22  # NumPy's own threshold for asking for huge pages


def empty_like(arr: np.ndarray, dtype) -> np.ndarray:
    """``np.empty_like(arr, dtype=dtype)``, 2 MiB-aligned when it is 4 MiB or more.

    The result has ``arr``'s shape and memory order (C or Fortran; other layouts and
    small arrays come from ``np.empty_like`` itself).  It is a view of a private
    ``uint8`` buffer (``owndata`` is False), which no one else holds.
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
    buf = np.empty(nbytes + HUGE_PAGE, dtype=np.uint8)
    off = -buf.ctypes.data % HUGE_PAGE
    return buf[off : off + nbytes].view(dtype).reshape(arr.shape, order=order)
