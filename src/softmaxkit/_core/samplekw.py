"""Keyword type of :func:`softmaxkit.sample`'s ``@overload`` signatures (PEP 692
``**kw: Unpack[...]``), as :mod:`softmaxkit._core.losskw` is for the losses.

``sample`` (and its float64 twin in :mod:`softmaxkit.reference`) returns ``ids`` or
``(ids, logprobs)`` depending on ``return_logprobs``: its three overloads
(``Literal[False]``, ``Literal[True]``, ``bool``) spell out only that flag and take
the other options from :class:`SampleKeywords`, written once here instead of once
per overload.  The implementations keep the full, explicit signatures (what
``help()`` and the docs show).  Private: used by annotations only.
"""

from __future__ import annotations

from typing import TypedDict

from .typing import Seed

__all__ = ["SampleKeywords"]


class SampleKeywords(TypedDict, total=False):
    """``sample`` options besides ``return_logprobs``."""

    temperature: float
    top_k: int | None
    top_p: float | None
    min_p: float | None
    num_samples: int
    seed: Seed
    axis: int
    row_offset: int
