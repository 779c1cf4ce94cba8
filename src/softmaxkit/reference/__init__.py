"""Pure-NumPy float64 twins of the public functions (the test oracle).

Same signatures and the same edge-case contract as the fast functions, written
for clarity with whole-array NumPy operations (no Numba, no chunking, no
``out=``).  Results are float64.  Tests compare the fast paths against these, and
these against mpmath, scipy.special and PyTorch.  One private module per family.
"""

from ._dense import log_softmax, logsumexp, softmax

__all__ = ["log_softmax", "logsumexp", "softmax"]
