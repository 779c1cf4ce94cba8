"""Keyword types of the losses' ``@overload`` signatures (PEP 692 ``**kw: Unpack[...]``).

The losses' return type depends on flags (``return_grad``; for the cross-entropies
also ``return_lse`` / ``return_logprob`` / ``return_entropy`` / ``return_argmax`` /
``topk``).  Each overload spells out only the flags it is keyed on and takes the
other options from one of these TypedDicts, so the long option lists are written
once here instead of once per overload.  The implementations keep the full,
explicit signatures (what ``help()`` and the docs show).

Overload order of ``cross_entropy`` / ``linear_cross_entropy``: no output flag and
``return_grad`` False / True / a ``bool`` (loss, ``(loss, grad)``, either); then
only output flags that are literally True or ``topk=int`` (a ``CrossEntropyOutput``);
then anything else (the union).  Private: used by annotations only.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .typing import Reduction

__all__ = [
    "CEAny",
    "CEKeywords",
    "CEOutputs",
    "HingeKeywords",
    "LCEAny",
    "LCEKeywords",
    "LCEOutputs",
    "MarginKeywords",
]


class LossKeywords(TypedDict, total=False):
    """Options of ``cross_entropy`` and ``linear_cross_entropy`` that leave the
    return type alone."""

    weight: ArrayLike | None
    ignore_index: int | None
    label_smoothing: float
    reduction: Reduction
    z_loss: float
    temperature: ArrayLike
    where: ArrayLike | None
    softcap: float | None
    entropy_weight: ArrayLike | None
    logprob_weight: ArrayLike | None


class CEKeywords(LossKeywords, total=False):
    axis: int
    out: NDArray[np.floating[Any]] | None


class LCEKeywords(LossKeywords, total=False):
    bias: ArrayLike | None
    chunk_size: int | None
    strategy: Literal["auto", "vocab", "rows"]


class _Outputs(TypedDict, total=False):
    """Output flags as they make the result a ``CrossEntropyOutput`` (each optional)."""

    return_grad: bool
    return_lse: Literal[True]
    return_logprob: Literal[True]
    return_entropy: Literal[True]
    return_argmax: Literal[True]
    topk: int


class _AnyOutputs(TypedDict, total=False):
    """Output flags of any value (the catch-all overload)."""

    return_grad: bool
    return_lse: bool
    return_logprob: bool
    return_entropy: bool
    return_argmax: bool
    topk: int | None


class CEOutputs(CEKeywords, _Outputs, total=False):
    pass


class CEAny(CEKeywords, _AnyOutputs, total=False):
    pass


class LCEOutputs(LCEKeywords, _Outputs, total=False):
    pass


class LCEAny(LCEKeywords, _AnyOutputs, total=False):
    pass


class MarginKeywords(TypedDict, total=False):
    """``max_margin_loss`` / ``max_margin_loss_split`` options besides ``return_grad``."""

    margin: float
    reduction: Reduction


class HingeKeywords(TypedDict, total=False):
    """``multiclass_hinge_loss`` options besides ``return_grad``."""

    margin: float
    p: Literal[1, 2]
    weight: ArrayLike | None
    reduction: Reduction
    kind: Literal["weston_watkins", "crammer_singer"]
    axis: int
