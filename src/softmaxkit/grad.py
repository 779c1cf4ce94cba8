"""Gradients of the dense ops (VJPs, JVP, Jacobian) and NumPy layer objects.

Conventions (derivations in ``docs/losses.md``):

* Reverse mode takes what a forward pass saves.  :func:`softmax_vjp` and
  :func:`log_softmax_vjp` take the forward *output* ``y`` (as PyTorch's autograd
  saves the result of softmax), never the input, so no exponential is recomputed
  for softmax.  :func:`logsumexp_vjp` takes the *input* ``x`` (its output alone
  does not determine the gradient).
* Forward mode takes the primal input: :func:`softmax_jvp` returns
  ``(y, dy)`` like ``jax.jvp``.
* ``temperature`` and ``where`` must be those of the forward call: every op acts on
  ``x / T``, so each gradient carries a factor ``1 / T``; masked-out entries get 0.
* The gradient of an empty, all -inf or fully masked row is 0, never NaN
  (jax#6811, pytorch#31829 give NaN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._core.typing import ArrayLike, Axis, FloatArray
from ._core.validate import normalize_axis, validate_temperature
from ._vjp import log_softmax_vjp, logsumexp_vjp, softmax_jacobian, softmax_jvp, softmax_vjp
from .losses import cross_entropy
from .softmax import log_softmax, softmax

__all__ = [
    "CrossEntropyLoss",
    "LogSoftmax",
    "Softmax",
    "log_softmax_vjp",
    "logsumexp_vjp",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
]

# ---------------------------------------------------------------------------
# Layer objects
# ---------------------------------------------------------------------------


class _Layer:
    forward: Callable[..., FloatArray]  # each layer's own signature

    def __call__(self, *args: Any, **kwargs: Any) -> FloatArray:
        return self.forward(*args, **kwargs)

    def _need(self, attr: str) -> Any:
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value


class Softmax(_Layer):
    """Softmax layer for NumPy networks: ``forward(x)`` and the true ``backward(grad)``.

    Unlike the pass-through shortcut of some tutorials (``backward`` returning its
    input, valid only when fused with a cross-entropy), ``backward`` returns the
    real vector-Jacobian product :func:`softmax_vjp` of the saved output.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import Softmax
    >>> layer = Softmax()
    >>> y = layer.forward(np.array([[0.0, 0.0]]))
    >>> layer.backward(np.array([[1.0, 0.0]]))
    array([[ 0.25, -0.25]])
    """

    def __init__(self, axis: Axis = -1, *, temperature: float = 1.0) -> None:
        self.axis = axis
        self.temperature = validate_temperature(temperature)
        self._y: FloatArray | None = None
        self._where: ArrayLike | None = None

    def forward(self, x: ArrayLike, where: ArrayLike | None = None) -> FloatArray:
        self._where = where
        self._y = softmax(x, axis=self.axis, temperature=self.temperature, where=where)
        return self._y

    def backward(self, grad: ArrayLike) -> FloatArray:
        y = self._need("_y")
        return softmax_vjp(y, grad, axis=self.axis, temperature=self.temperature, where=self._where)


class LogSoftmax(Softmax):
    """Log-softmax layer: ``forward(x)`` and ``backward(grad)`` (:func:`log_softmax_vjp`).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import LogSoftmax
    >>> layer = LogSoftmax()
    >>> _ = layer.forward(np.array([0.0, 0.0]))
    >>> layer.backward(np.array([1.0, 0.0]))
    array([ 0.5, -0.5])
    """

    def forward(self, x: ArrayLike, where: ArrayLike | None = None) -> FloatArray:

        self._where = where
        self._y = log_softmax(x, axis=self.axis, temperature=self.temperature, where=where)
        return self._y

    def backward(self, grad: ArrayLike) -> FloatArray:
        y = self._need("_y")
        return log_softmax_vjp(
            y, grad, axis=self.axis, temperature=self.temperature, where=self._where
        )


class CrossEntropyLoss(_Layer):
    """Cross-entropy layer: ``forward(logits, target)`` -> loss, ``backward(grad=1.0)`` -> dlogits.

    Takes the options of :func:`softmaxkit.cross_entropy`.  ``forward`` computes the
    loss and its gradient in one fused pass; ``backward`` scales the saved gradient
    by the upstream gradient (a scalar for "mean"/"sum", one value per sample for
    "none").

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import CrossEntropyLoss
    >>> loss_fn = CrossEntropyLoss()
    >>> float(loss_fn.forward(np.array([[0.0, 0.0]]), np.array([0])))
    0.6931471805599453
    >>> loss_fn.backward()
    array([[-0.5,  0.5]])
    """

    def __init__(self, *, axis: int = -1, **options: Any) -> None:
        if "return_grad" in options or "out" in options:
            raise TypeError(
                "CrossEntropyLoss takes the cross_entropy options except return_grad/out"
            )
        self.axis = axis
        self.options = options
        self._grad: FloatArray | None = None

    def forward(
        self, logits: ArrayLike, target: ArrayLike, where: ArrayLike | None = None
    ) -> FloatArray:
        res: Any = cross_entropy(
            logits, target, axis=self.axis, where=where, return_grad=True, **self.options
        )
        loss: FloatArray = res[0]
        self._grad = res[1]
        return loss

    def backward(self, grad: ArrayLike = 1.0) -> FloatArray:
        saved: FloatArray = self._need("_grad")
        g = np.asarray(grad, dtype=saved.dtype)
        if g.ndim:
            ax = normalize_axis(self.axis, saved.ndim)[0]
            g = np.expand_dims(g, ax)
        return saved * g
