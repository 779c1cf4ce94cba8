"""Type aliases shared by the public signatures (PEP 484; checked by ``mypy --strict``).

The public functions take anything NumPy can turn into an array (``ArrayLike``), a
Dask array or an Array API array, and return a NumPy array for NumPy input (the other
drivers return their own array type, which the annotations cannot express without
losing precision for the common case, so they say ``Array``).

Conventions of the public signatures (``pyproject.toml``'s ``[tool.mypy]`` checks them
with ``--strict``; ``tests/test_typing.py`` type-checks a user script against them):

* Array inputs are ``ArrayLike`` (lists, scalars, NumPy arrays, anything with
  ``__array__``); the other drivers' arrays (Dask, torch, JAX) are accepted at run time
  and returned as their own type, which the NumPy-typed results do not describe (cast
  if you need their type).
* A result that is 0-d comes back as a NumPy scalar (like NumPy's own reductions); it
  is annotated ``FloatArray`` all the same, as NumPy's stubs annotate ``np.exp`` of a
  0-d array: the scalar supports the same arithmetic, ``float()``, ``.shape`` and
  ``.astype``.
* String options are ``Literal`` types, so a misspelt option is a type error.
* A flag that changes what is returned (``return_sign``, ``return_grad``,
  ``return_logprobs``) selects an ``@overload``: ``Literal[True]`` gives the tuple,
  ``Literal[False]`` (the default) the single array, a plain ``bool`` the union.
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
    "Direction",
    "DistillReduction",
    "FloatArray",
    "IntArray",
    "NDArray",
    "Reduction",
    "Seed",
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
#: ``reduction=`` of the distillation losses (``"batchmean"`` is their default).
DistillReduction: TypeAlias = Literal["batchmean", "sum", "none", "mean"]
#: ``direction=`` of :func:`softmaxkit.kl_divergence` (which KL, see its docstring).
Direction: TypeAlias = Literal["forward", "reverse"]
#: ``seed=`` of :func:`softmaxkit.sample`: a non-negative int, or None for fresh entropy.
Seed: TypeAlias = int | np.integer[Any] | None
