"""softmaxkit: the softmax family, done right.

Dense ops (:func:`softmax`, :func:`log_softmax`, :func:`logsumexp`) over any
axis with temperature, masks, weights, dtype control and ``out=``, under one
written edge-case contract (``docs/dense.md``).  :mod:`softmaxkit.reference`
holds float64 NumPy twins of every public function.
"""

from importlib.metadata import PackageNotFoundError, version

from .online import (
    Normalizer,
    stream_logsumexp,
    stream_normalizer,
    stream_softmax,
    topk_softmax,
)
from .softmax import log_softmax, logsumexp, softmax

try:
    __version__ = version("softmaxkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "Normalizer",
    "__version__",
    "log_softmax",
    "logsumexp",
    "softmax",
    "stream_logsumexp",
    "stream_normalizer",
    "stream_softmax",
    "topk_softmax",
]
