"""Keyword types of the distillation losses' ``@overload`` signatures (PEP 692
``**kw: Unpack[...]``), as :mod:`softmaxkit._core.losskw` is for the other losses.

``kl_divergence``, ``jensen_shannon`` and their ``linear_`` variants (and the float64
twins in :mod:`softmaxkit.reference`) return ``loss`` or ``(loss, grad)`` depending
on ``return_grad``: each has three overloads (``Literal[False]``, ``Literal[True]``,
``bool``) that spell out only ``return_grad`` and take the other options from one
of these TypedDicts, so the option lists are written once here instead of once per
overload.  The implementations keep the full, explicit signatures (what ``help()``
and the docs show).  Private: used by annotations only.
"""

from __future__ import annotations

from typing import TypedDict

from .typing import ArrayLike, Direction, DistillReduction

__all__ = ["JSKeywords", "KLKeywords", "LinearJSKeywords", "LinearKLKeywords"]


class _DistillKeywords(TypedDict, total=False):
    """Options every distillation loss takes besides ``return_grad``."""

    temperature: float
    where: ArrayLike | None
    reduction: DistillReduction


class KLKeywords(_DistillKeywords, total=False):
    """``kl_divergence`` options besides ``return_grad``."""

    direction: Direction
    axis: int


class JSKeywords(_DistillKeywords, total=False):
    """``jensen_shannon`` options besides ``return_grad``."""

    beta: float
    axis: int


class LinearKLKeywords(_DistillKeywords, total=False):
    """``linear_kl_divergence`` options besides ``return_grad``."""

    direction: Direction
    chunk_size: int | None


class LinearJSKeywords(_DistillKeywords, total=False):
    """``linear_jensen_shannon`` options besides ``return_grad``."""

    beta: float
    chunk_size: int | None
