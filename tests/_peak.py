"""The memory tests' measurement: the peak of what one call allocates."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any


def traced(call: Callable[[], Any]) -> tuple[Any, int]:
    """``(result, peak bytes)`` of ``call()``: tracemalloc's peak over the call, which
    counts NumPy's array allocations (NumPy reports them to tracemalloc)."""
    tracemalloc.start()
    try:
        res = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return res, peak
