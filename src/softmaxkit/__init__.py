"""softmaxkit: the softmax family, done right.

* Dense ops (:func:`softmax`, :func:`log_softmax`, :func:`logsumexp`) over any axis
  with temperature, masks, weights, dtype control and ``out=``, under one written
  edge-case contract (``docs/dense.md``).
* The online normalizer (:class:`Normalizer`), streaming over data larger than
  memory, fused :func:`topk_softmax` (``docs/online.md``).
* Losses and gradients: :func:`cross_entropy`, :func:`linear_cross_entropy`,
  max-margin and hinge losses, VJPs, JVPs, Jacobians and layers (``docs/losses.md``).
* Distillation: :func:`kl_divergence`, :func:`jensen_shannon` and their ``linear_``
  variants (``docs/distill.md``).
* Ragged groups and scans: :func:`segment_softmax`, :func:`segment_logsumexp`,
  :func:`logcumsumexp`, :func:`logmatmulexp` (``docs/segments.md``).
* :mod:`softmaxkit.quantized`: int8/uint8/int16 softmax bit-exact with TensorFlow
  Lite and CMSIS-NN (``docs/quantized.md``).
* Dask arrays and any Array API array go through the same public functions
  (``docs/scaling.md``).

:mod:`softmaxkit.reference` holds float64 NumPy twins of every public function.
"""

from importlib.metadata import PackageNotFoundError, version

from ._core.buffers import output_cache_info, set_output_cache
from ._vocab import CrossEntropyOutput
from .distill import (
    jensen_shannon,
    kl_divergence,
    linear_jensen_shannon,
    linear_kl_divergence,
)
from .grad import (
    CrossEntropyLoss,
    LogSoftmax,
    Softmax,
    log_softmax_vjp,
    logsumexp_vjp,
    softmax_jacobian,
    softmax_jvp,
    softmax_vjp,
)
from .losses import (
    cross_entropy,
    linear_cross_entropy,
    max_margin_loss,
    max_margin_loss_split,
    multiclass_hinge_loss,
)
from .online import (
    Normalizer,
    stream_logsumexp,
    stream_normalizer,
    stream_softmax,
    topk_softmax,
)
from .sampling import sample, sampling_probs
from .scan import logcumsumexp, logcumsumexp_vjp, logmatmulexp, logmatmulexp_vjp
from .segments import (
    segment_log_softmax,
    segment_log_softmax_vjp,
    segment_logsumexp,
    segment_logsumexp_vjp,
    segment_softmax,
    segment_softmax_vjp,
)
from .softmax import log_softmax, logsumexp, softmax

try:
    __version__ = version("softmaxkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "CrossEntropyLoss",
    "CrossEntropyOutput",
    "LogSoftmax",
    "Normalizer",
    "Softmax",
    "__version__",
    "cross_entropy",
    "jensen_shannon",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_jensen_shannon",
    "linear_kl_divergence",
    "log_softmax",
    "log_softmax_vjp",
    "logcumsumexp",
    "logcumsumexp_vjp",
    "logmatmulexp",
    "logmatmulexp_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "max_margin_loss",
    "max_margin_loss_split",
    "multiclass_hinge_loss",
    "output_cache_info",
    "sample",
    "sampling_probs",
    "segment_log_softmax",
    "segment_log_softmax_vjp",
    "segment_logsumexp",
    "segment_logsumexp_vjp",
    "segment_softmax",
    "segment_softmax_vjp",
    "set_output_cache",
    "softmax",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
    "stream_logsumexp",
    "stream_normalizer",
    "stream_softmax",
    "topk_softmax",
]
