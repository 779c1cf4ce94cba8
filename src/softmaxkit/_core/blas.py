"""The library's one way to call NumPy's matrix product.

OpenBLAS kernels can raise the floating-point *invalid* flag on finite inputs: they read
scratch memory or padding lanes that hold a NaN or an inf left by an earlier call, and
discard those lanes afterwards (numpy/numpy#24067, OpenMathLib/OpenBLAS#746). NumPy then
reports ``RuntimeWarning: invalid value encountered in matmul`` for a correct result. It
depends on the CPU's kernel and on what the memory held, so it comes and goes. The
softmax kernels that read these products already follow the edge-case contract for NaN
and inf logits, so the flag carries nothing a caller needs: every internal product goes
through :func:`matmul`, which leaves it out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["matmul"]


def matmul(a: Any, b: Any, out: np.ndarray | None = None) -> Any:
    """``np.matmul(a, b, out=out)`` without the spurious *invalid* warning."""
    with np.errstate(invalid="ignore"):
        return np.matmul(a, b, out=out)
