"""What a benchmark case is; shared by every family's benchmark module.

A family (dense, online, losses, dask, ...) contributes cases from a module
``softmaxkit._bench_<family>`` with a function ``cases(quick: bool) -> list[Case]``.
The runner behind ``softmaxkit bench`` (``softmaxkit.bench.core``) times the
implementations of a case interleaved in one process, with warm-up and
repeats, and reports each as a ratio against the case's ``baseline``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case"]


@dataclass
class Case:
    """One benchmark case.

    Attributes
    ----------
    family, op, label
        Where it belongs (``"dense"``), what it measures (``"softmax"``) and the input
        (``"[4096, 32000] float32"``).
    impls
        Implementation name -> zero-argument callable returning the result.  The names
        starting with ``"softmaxkit"`` are ours; the others are peers (``"numpy"``,
        ``"scipy"``, ``"torch"``, ``"torch out="``, ...).  Build inputs outside the
        callables.
    baseline
        The name of the implementation that ratios are taken against.
    check
        Optional: given an implementation's result, the max error against the float64
        reference (called once, outside timing).
    nbytes
        Bytes a perfect implementation must move (read + write), for the bandwidth floor.
    extra
        Anything else worth reporting (peak memory measured by the case itself, ...).
    """

    family: str
    op: str
    label: str
    impls: dict[str, Callable[[], Any]]
    baseline: str = "softmaxkit"
    check: Callable[[Any], float] | None = None
    nbytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
