"""torch.nn.Module wrappers with torch's signatures."""

import torch

from ._ops_dense import log_softmax, softmax
from ._ops_losses import cross_entropy, linear_cross_entropy


# --------------------------------------------------------------------------- modules
class Softmax(torch.nn.Module):
    """``torch.nn.Softmax(dim)`` on the ``softmaxkit::softmax`` operator.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> skt.Softmax(dim=-1)(torch.zeros(2, 2, dtype=torch.float64))
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]], dtype=torch.float64)
    """

    def __init__(self, dim=None, *, temperature=1.0):
        super().__init__()
        self.dim = -1 if dim is None else dim
        self.temperature = temperature

    def forward(self, x, where=None):
        """Softmax of ``x`` along ``dim``; ``where`` (bool, broadcastable) masks entries."""
        return softmax(x, self.dim, temperature=self.temperature, where=where)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``torch.nn.LogSoftmax(dim)`` on the ``softmaxkit::log_softmax`` operator."""

    def forward(self, x, where=None):
        """Log-softmax of ``x`` along ``dim``; ``where`` (bool, broadcastable) masks entries."""
        return log_softmax(x, self.dim, temperature=self.temperature, where=where)


class CrossEntropyLoss(torch.nn.Module):
    """``torch.nn.CrossEntropyLoss`` on the ``softmaxkit::cross_entropy`` operator.

    Torch's signature and defaults (``ignore_index=-100``, classes along dimension
    1 for inputs of two or more dimensions), plus ``z_loss`` and ``temperature``.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> loss = skt.CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([1, 3]))
    >>> round(float(loss), 6)
    1.386294
    """

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
        label_smoothing=0.0,
        *,
        z_loss=0.0,
        temperature=1.0,
    ):
        super().__init__()
        if size_average is not None or reduce is not None:
            raise ValueError("size_average and reduce are deprecated; use reduction")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.temperature = temperature

    def forward(self, input, target):
        """The loss of logits ``input`` (classes along dimension 1) against ``target``."""
        return cross_entropy(
            input, target, axis=1 if input.ndim >= 2 else 0, weight=self.weight,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
            reduction=self.reduction, z_loss=self.z_loss, temperature=self.temperature,
        )  # fmt: skip


class LinearCrossEntropyLoss(torch.nn.Module):
    """Cross-entropy of ``hidden @ weight.T + bias`` without the logits.

    ``forward(hidden, linear_weight, target, bias=None)`` with the options of
    :class:`CrossEntropyLoss` (``ignore_index=-100``) and ``chunk_size``,
    ``strategy``; the class axis is last.

    Examples
    --------
    >>> import torch
    >>> import softmaxkit.torch as skt
    >>> h, W = torch.zeros(2, 3), torch.zeros(4, 3)
    >>> loss = skt.LinearCrossEntropyLoss()(h, W, torch.tensor([0, 1]))
    >>> round(float(loss), 6)
    1.386294
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                 *, z_loss=0.0, temperature=1.0, chunk_size=None, strategy="auto"):  # fmt: skip
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.strategy = strategy

    def forward(self, hidden, linear_weight, target, bias=None):
        """The loss of ``hidden @ linear_weight.T + bias`` against ``target``."""
        return linear_cross_entropy(
            hidden, linear_weight, target, bias=bias, chunk_size=self.chunk_size,
            strategy=self.strategy, weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, z_loss=self.z_loss,
            temperature=self.temperature,
        )  # fmt: skip
