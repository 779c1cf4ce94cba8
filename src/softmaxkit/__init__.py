"""softmaxkit: the softmax family, done right.

Dense ops (:func:`softmax`, :func:`log_softmax`, :func:`logsumexp`) over any
axis with temperature, masks, weights, dtype control and ``out=``, under one
written edge-case contract (``docs/dense.md``).  :mod:`softmaxkit.reference`
holds float64 NumPy twins of every public function.
"""

from importlib.metadata import PackageNotFoundError, version

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
from .softmax import log_softmax, logsumexp, softmax

try:
    __version__ = version("softmaxkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "CrossEntropyLoss",
    "LogSoftmax",
    "Softmax",
    "__version__",
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "max_margin_loss",
    "max_margin_loss_split",
    "multiclass_hinge_loss",
    "softmax",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
]
