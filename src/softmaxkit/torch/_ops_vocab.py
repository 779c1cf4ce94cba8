"""Sampling operators: ``softmaxkit::sample`` and ``softmaxkit::sampling_probs``.

Sampling has no gradient: ``sample`` returns int64 token ids
(as ``torch.multinomial``), ``sampling_probs`` float64 probabilities (as the NumPy
function).  ``seed=None`` is drawn in the wrapper, so the operator itself is
deterministic (``torch.compile`` may trace it).
"""

import numbers
import secrets

import numpy as np
import torch

from .. import sampling as _sampling
from ._common import (
    _arr,
    _check_kernel_device,
)

_DISTILL_REDUCTIONS = ("batchmean", "sum", "none", "mean")


# --------------------------------------------------------------------- sampling
def _opt_int(v):
    return -1 if v is None else int(v)


def _opt_float(v, none):
    return none if v is None else float(v)


@torch.library.custom_op("softmaxkit::sample", mutates_args=())
def _sample_op(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    min_p: float,
    num_samples: int,
    seed: int,
    axis: int,
    row_offset: int,
    need_logprobs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    r = _sampling.sample(
        _arr(logits), temperature=temperature, top_k=None if top_k < 0 else top_k,
        top_p=top_p, min_p=None if min_p < 0 else min_p, num_samples=num_samples,
        seed=seed % (1 << 64), axis=axis, return_logprobs=need_logprobs, row_offset=row_offset,
    )  # fmt: skip
    ids, lp = r if need_logprobs else (r, None)
    lpt = torch.empty((0,), dtype=torch.float64) if lp is None else torch.from_numpy(lp)
    return torch.from_numpy(ids), lpt


@_sample_op.register_fake
def _(logits, temperature, top_k, top_p, min_p, num_samples, seed, axis, row_offset,
      need_logprobs):  # fmt: skip
    ax = axis % logits.ndim
    shape = (*logits.shape[:ax], *logits.shape[ax + 1 :], num_samples)
    return (
        logits.new_empty(shape, dtype=torch.int64),
        logits.new_empty(shape if need_logprobs else (0,), dtype=torch.float64),
    )


def _logits(name, logits, axis):
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor; got {type(logits).__name__}")
    _check_kernel_device(name, logits=logits)
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension; got a 0-d tensor")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int; got {axis!r}")
    if not -logits.ndim <= axis < logits.ndim:
        raise np.exceptions.AxisError(int(axis), logits.ndim)
    x = logits.detach()
    if not x.dtype.is_floating_point:
        x = x.to(torch.float64)
    return x, int(axis) % logits.ndim


def sample(
    logits, /, *, temperature=1.0, top_k=None, top_p=None, min_p=None, num_samples=1,
    seed=None, axis=-1, return_logprobs=False, row_offset=0,
):  # fmt: skip
    r"""Token ids sampled from a tensor of logits (``softmaxkit::sample``).

    As :func:`softmaxkit.sample`: the same filters, the same tokens for the same
    seed (the draw of element ``j`` of row ``i`` depends on ``(seed, row_offset + i,
    j, sample)`` only), an int64 tensor ``[..., num_samples]``; with
    ``return_logprobs`` also their float64 log-probabilities.  No gradient.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> x = torch.tensor([[0.0, 0.0, 5.0, -float("inf")]])
    >>> skt.sample(x, temperature=0)
    tensor([[2]])
    """
    x, ax = _logits("sample", logits, axis)
    # the NumPy function checks every argument; a fresh seed is drawn here, once
    seed = secrets.randbits(64) if seed is None else seed
    _sampling._filters(temperature, top_k, top_p, min_p, max(x.shape[ax], 1))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed must be an int in [0, 2**64); got seed={seed}")
    for nm, v in (("num_samples", num_samples), ("row_offset", row_offset)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{nm} must be an int; got {v!r}")
    if not isinstance(return_logprobs, bool):
        raise TypeError(f"return_logprobs must be a bool; got {return_logprobs!r}")
    s = int(seed)
    s = s - (1 << 64) if s >= 1 << 63 else s  # the operator's int is int64
    ids, lp = _sample_op(x, float(temperature), _opt_int(top_k), _opt_float(top_p, 1.0),
                         _opt_float(min_p, -1.0), int(num_samples), s, ax, int(row_offset),
                         return_logprobs)  # fmt: skip
    return (ids, lp) if return_logprobs else ids


@torch.library.custom_op("softmaxkit::sampling_probs", mutates_args=())
def _probs_op(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float, axis: int
) -> torch.Tensor:
    p = _sampling.sampling_probs(
        _arr(logits), temperature=temperature, top_k=None if top_k < 0 else top_k,
        top_p=top_p, min_p=None if min_p < 0 else min_p, axis=axis,
    )  # fmt: skip
    return torch.from_numpy(np.ascontiguousarray(p))


@_probs_op.register_fake
def _(logits, temperature, top_k, top_p, min_p, axis):
    return logits.new_empty(logits.shape, dtype=torch.float64)


def sampling_probs(logits, /, *, temperature=1.0, top_k=None, top_p=None, min_p=None, axis=-1):
    r"""The filtered distribution :func:`sample` draws from (``softmaxkit::sampling_probs``).

    As :func:`softmaxkit.sampling_probs`: float64, ``logits``' shape.  No gradient.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.sampling_probs(torch.tensor([0.0, 0.0]))
    tensor([0.5000, 0.5000], dtype=torch.float64)
    """
    x, ax = _logits("sampling_probs", logits, axis)
    _sampling._filters(temperature, top_k, top_p, min_p, max(x.shape[ax], 1))
    return _probs_op(x, float(temperature), _opt_int(top_k), _opt_float(top_p, 1.0),
                     _opt_float(min_p, -1.0), ax)  # fmt: skip


# ------------------------------------------- routing from the public functions
ROUTES = {
    "sample": lambda a: sample(a.pop("logits"), **a),
    "sampling_probs": lambda a: sampling_probs(a.pop("logits"), **a),
}
