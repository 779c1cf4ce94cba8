"""Type aliases shared by the public signatures (PEP 484; checked by ``mypy --strict``).

The public functions take anything NumPy can turn into an array (``ArrayLike``), a
Dask array or an Array API array, and return a NumPy array for NumPy input (the other
drivers return their own array type, which the annotations cannot express without
losing precision for the common case, so they say ``Array``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = [
    "Array",
    "ArrayLike",
    "Axis",
    "DTypeLike",
    "FloatArray",
    "IntArray",
    "NDArray",
    "Reduction",
]

#: What the public functions return for NumPy input: a floating NumPy array.
FloatArray: TypeAlias = NDArray[np.floating[Any]]
#: Integer index arrays (top-k indices, sampled token ids).
IntArray: TypeAlias = NDArray[np.integer[Any]]
#: A returned array of whatever kind came in (NumPy, Dask, an Array API namespace).
Array: TypeAlias = Any
#: ``axis=``: one int, a tuple of ints, or ``None`` for all axes.
Axis: TypeAlias = int | tuple[int, ...] | None
#: ``reduction=`` of the losses.
Reduction: TypeAlias = Literal["mean", "sum", "none"]
