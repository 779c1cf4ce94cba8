"""Reuse of the gradient buffers that the fused losses save for backward.

``softmaxkit.torch.cross_entropy`` computes the logits' gradient in its forward pass
and saves it (one pass over the logits).  On CPU a fresh logits-sized buffer costs
its first-touch page faults: for [4096, 32000] float32 (500 MiB) about as long as
the fused kernel itself.  In a training loop that gradient is released in the same
step (after the backward of the layer that made the logits), and the next step
asks for a buffer of the same size: this module keeps released gradient buffers and
hands them out again with their pages already mapped.

* Which buffers: the gradients the loss operators save; the output that
  softmax / log_softmax save for backward when they record a gradient, and the
  gradients their backward and logsumexp's write (``_fast._Dense``,
  ``_ops_dense``): all released within a training step.  Never a plain forward
  result (no gradient recorded: the output cache, ``softmaxkit._core.buffers``),
  never an input; 4 MiB and more (smaller ones are plain ``torch.empty``).
* How much: released buffers are kept, most recent first, up to a limit in bytes
  (the buffers' size classes: their bytes rounded up to 2 MiB); the oldest beyond
  it are freed.  Default 1 GiB, ``SOFTMAXKIT_GRAD_CACHE`` in the environment
  (bytes, or ``K`` / ``M`` / ``G`` suffixed), :func:`set_grad_cache` at run time;
  ``0`` turns it off and frees what it holds.  A buffer larger than the limit is
  never kept.
* Never aliased: a buffer goes back to the cache only when the last tensor or
  array viewing it has been released (a ``weakref.finalize`` on the lease object
  that is the NumPy base of every view, as ``softmaxkit._core.buffers`` does), so two
  gradients alive at once never share memory.

Independent of :func:`softmaxkit.set_output_cache` (plain outputs, 1 GiB): the two
kinds of buffer are released at different times in a training step, and each cache
keeps its own most recent ones.
"""

from __future__ import annotations

import numpy as np
import torch

from .._core import buffers as _buffers
from ._alloc import _new

DEFAULT_LIMIT = 1 << 30
ENV = "SOFTMAXKIT_GRAD_CACHE"
_HUGE = _buffers.HUGE_PAGE

GRADS = _buffers.ReleasedBuffers(ENV, DEFAULT_LIMIT)


_HUGEPAGES = False  # measured: see _fresh


def _fresh(cap: int) -> np.ndarray:
    """A new raw buffer of ``cap`` bytes.

    4 KiB pages (``torch.empty``: no ``madvise``), not NumPy's ``MADV_HUGEPAGE``
    (``np.empty`` of 4 MiB and more): with transparent huge pages in ``madvise``
    mode, a fault on a fresh huge page may wait for the kernel to compact memory.
    Measured on the 2-core VM, cross_entropy [4096, 32000] float32 forward +
    backward, medians of 5 interleaved in one process: a fresh buffer (cache miss)
    2489 ms with huge pages, 426 ms with 4 KiB pages; a reused one 331 / 328 ms
    (torch eager 1962 ms; load 6-8).  An earlier run (load 8-10): 3345 / 1652 ms
    fresh, torch 4023 ms.
    """
    if _HUGEPAGES:
        return np.empty(cap, dtype=np.uint8)
    return torch.empty(cap, dtype=torch.uint8).numpy()


def grad_buffer(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised C-contiguous CPU tensor for a saved gradient.

    4 MiB and more with the cache on: 2 MiB aligned, taken from the released
    gradient buffers of the same size class when there is one.  Otherwise
    ``torch.empty`` (via ``_common._new``'s rules for the output cache).
    """
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    limit = GRADS.limit()
    if nbytes < _buffers.ALIGN_MIN_BYTES or limit == 0:
        return _new(shape, dtype)
    cap = -(-nbytes // _HUGE) * _HUGE + _HUGE
    if cap - _HUGE > limit:
        return _new(shape, dtype)
    raw = GRADS.take(cap)
    if raw is None:
        raw = _fresh(cap)
    u8 = _buffers.leased(raw, nbytes, np.dtype(np.uint8), GRADS)
    return torch.from_numpy(u8).view(dtype).view(shape)


def set_grad_cache(limit: int) -> int:
    """Set how much memory of released loss-gradient buffers softmaxkit.torch keeps.

    :func:`softmaxkit.torch.cross_entropy` computes the logits' gradient in the
    forward pass into a new logits-sized buffer and saves it for backward (the
    dense ops' saved outputs and gradients use the same cache).  Fresh
    memory costs its first-touch page faults (on a 2-core VM about 100-150 ms for
    a 500 MiB [4096, 32000] float32 gradient, as long as the kernel); when a
    gradient is released (in a training loop: within the same step), its buffer is
    kept and the next gradient of the same size takes it.  Released buffers are
    kept, most recent first, up to ``limit`` bytes in all; ``0`` turns the cache
    off and frees what it holds.  Default 1 GiB, or ``SOFTMAXKIT_GRAD_CACHE``
    (bytes, or with a ``K`` / ``M`` / ``G`` suffix).  A buffer is reused only after
    every tensor viewing it has been released, so gradients alive at the same time
    never share memory.

    Parameters
    ----------
    limit : int
        Most bytes kept, ``>= 0``.

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> import softmaxkit.torch as skt
    >>> old = skt.set_grad_cache(0)       # every saved gradient is fresh memory
    >>> skt.grad_cache_info()["cached_bytes"]
    0
    >>> skt.set_grad_cache(old) == 0
    True
    """
    return GRADS.set_limit(limit)


def grad_cache_info() -> dict[str, int]:
    """The state of the loss-gradient buffer cache (:func:`set_grad_cache`).

    Returns
    -------
    dict
        ``limit`` (bytes), ``cached_bytes`` and ``buffers`` (held now), ``hits`` /
        ``misses`` (gradients of 4 MiB or more taken from the cache / freshly
        allocated since the process started).

    Examples
    --------
    >>> import softmaxkit.torch as skt
    >>> sorted(skt.grad_cache_info())
    ['buffers', 'cached_bytes', 'hits', 'limit', 'misses']
    """
    return GRADS.info()
