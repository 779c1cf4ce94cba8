"""softmaxkit inside PyTorch: ``softmaxkit::`` operators with fused gradients.

Every op is a real PyTorch operator made with :func:`torch.library.custom_op`
(namespace ``softmaxkit``), with a fake (meta) implementation for
``torch.compile(fullgraph=True)`` and a backward registered with
:func:`torch.library.register_autograd` that runs the fused NumPy/Numba kernels:

* ``softmax`` / ``log_softmax``: backward from the saved *output* by the VJP
  kernels (:func:`softmaxkit.softmax_vjp`, :func:`softmaxkit.log_softmax_vjp`).  The
  backward is itself an operator with its own backward, so double backward works.
* ``logsumexp``: backward ``g / T * softmax(x / T)`` through the softmax operator
  (differentiable again); with weights ``b`` the kernel of
  :func:`softmaxkit.logsumexp_vjp` (first order only).
* ``cross_entropy``, ``multiclass_hinge_loss``, ``max_margin_loss``: the gradient
  is computed in the forward pass (one pass over the logits, as Liger-Kernel does)
  and saved; backward multiplies it by the upstream gradient.
* ``linear_cross_entropy``: the forward returns ``d_hidden``, ``d_weight`` and
  ``d_bias`` from the chunked kernel (never the ``[N, V]`` logits); backward scales
  them.
* ``topk_softmax``: backward through the full softmax of the saved input.
* ``kl_divergence`` / ``jensen_shannon`` (``softmaxkit::distill``): the student's
  gradient computed in the forward pass and saved (the teacher gets none).
* ``segment_softmax`` / ``segment_log_softmax`` / ``segment_logsumexp``,
  ``logcumsumexp``, ``logmatmulexp``: backward by a second operator running the
  matching VJP (first order).
* ``sample`` / ``sampling_probs``: no gradient; the same tokens as the NumPy
  function for the same seed.

Memory and devices (``docs/frameworks.md``): contiguous CPU float16 / float32 /
float64 tensors reach the kernels without a copy (``Tensor.numpy()`` shares the
storage) and the result is written straight into the new tensor's storage;
bfloat16 (which NumPy lacks): softmax / log_softmax over trailing axes without a
mask run a kernel on the bits (``_kernels/bf16.py``, float32 arithmetic, no copy),
other calls widen to one float32 temporary and round back; strided tensors take
the one copy the NumPy function documents.
``meta`` tensors take the fake implementations (shapes and dtypes, no kernel).
Tensors on other devices (CUDA, MPS, ...) take the generic Array API path
(correct, not accelerated) in the dense ops; the losses and ``topk_softmax``
raise ``NotImplementedError`` naming the device.

Importing this module imports torch; ``import softmaxkit`` never does.
"""

from ._gradbuf import grad_cache_info, set_grad_cache
from ._modules import CrossEntropyLoss, LinearCrossEntropyLoss, LogSoftmax, Softmax
from ._ops_dense import log_softmax, logsumexp, softmax, topk_softmax
from ._ops_distill import (
    jensen_shannon,
    kl_divergence,
    linear_jensen_shannon,
    linear_kl_divergence,
)
from ._ops_losses import cross_entropy, linear_cross_entropy, max_margin_loss, multiclass_hinge_loss
from ._ops_scan import (
    logcumsumexp,
    logmatmulexp,
    segment_log_softmax,
    segment_logsumexp,
    segment_softmax,
)
from ._ops_vocab import sample, sampling_probs
from ._route import _route  # noqa: F401  (softmaxkit.softmax._torch_route)

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "Softmax",
    "cross_entropy",
    "grad_cache_info",
    "jensen_shannon",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_jensen_shannon",
    "linear_kl_divergence",
    "log_softmax",
    "logcumsumexp",
    "logmatmulexp",
    "logsumexp",
    "max_margin_loss",
    "multiclass_hinge_loss",
    "sample",
    "sampling_probs",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_softmax",
    "set_grad_cache",
    "softmax",
    "topk_softmax",
]


def _defer_dynamo() -> None:
    """The ops' first call without importing ``torch._dynamo`` (``_nodynamo.py``)."""
    import sys

    from . import _nodynamo

    mods = [m for k, m in list(sys.modules.items()) if k.startswith(__name__ + "._ops")]
    _nodynamo.defer(_nodynamo.our_ops(mods))


_defer_dynamo()
