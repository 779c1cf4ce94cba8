"""New CPU tensors for kernel outputs (shared by ``_common`` and ``_gradbuf``)."""

import math

import numpy as np
import torch

from .._core import buffers as _buffers


def _new(shape, dtype: torch.dtype) -> torch.Tensor:
    """A new C-contiguous CPU tensor for a kernel's output.

    Large ones (4 MiB and more) are built on softmaxkit's output buffers (2 MiB
    aligned, reused once released, ``softmaxkit._core.buffers``): a fresh ``torch.empty``
    of [4096, 32000] float32 costs ~130 ms of page faults on the 2-core VM, more
    than the softmax itself (~35 ms into a warm buffer).
    """
    shape = tuple(int(s) for s in shape)
    if dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits as int16
        return _new(shape, torch.int16).view(torch.bfloat16)
    ndt = torch.empty((), dtype=dtype).numpy().dtype
    size = math.prod(shape)
    if size * ndt.itemsize < _buffers.ALIGN_MIN_BYTES:
        return torch.empty(shape, dtype=dtype)
    strides = tuple(int(np.prod(shape[i + 1 :])) * ndt.itemsize for i in range(len(shape)))
    # a metadata-only stand-in with the output's shape and C layout (never written)
    like = np.lib.stride_tricks.as_strided(np.empty(1, ndt), shape, strides, writeable=False)
    return torch.from_numpy(_buffers.empty_like(like, ndt))
