"""Pure-NumPy float64 twins of the public functions (the test oracle).

Same signatures and the same edge-case contract as the fast functions, written
for clarity with whole-array NumPy operations (no Numba, no chunking, no
``out=``).  Results are float64.  Tests compare the fast paths against these, and
these against mpmath, scipy.special and PyTorch.  One private module per family.
"""

from ._dense import log_softmax, logsumexp, softmax
from ._distill import (
    jensen_shannon,
    kl_divergence,
    linear_jensen_shannon,
    linear_kl_divergence,
)
from ._losses import (
    cross_entropy,
    linear_cross_entropy,
    log_softmax_vjp,
    logsumexp_vjp,
    max_margin_loss,
    max_margin_loss_split,
    multiclass_hinge_loss,
    softmax_jacobian,
    softmax_vjp,
)
from ._sampling import sample, sampling_probs
from ._segments import (
    logcumsumexp,
    logmatmulexp,
    segment_log_softmax,
    segment_logsumexp,
    segment_softmax,
)

__all__ = [
    "cross_entropy",
    "jensen_shannon",
    "kl_divergence",
    "linear_cross_entropy",
    "linear_jensen_shannon",
    "linear_kl_divergence",
    "log_softmax",
    "log_softmax_vjp",
    "logcumsumexp",
    "logmatmulexp",
    "logsumexp",
    "logsumexp_vjp",
    "max_margin_loss",
    "max_margin_loss_split",
    "multiclass_hinge_loss",
    "sample",
    "sampling_probs",
    "segment_log_softmax",
    "segment_logsumexp",
    "segment_softmax",
    "softmax",
    "softmax_jacobian",
    "softmax_vjp",
]
