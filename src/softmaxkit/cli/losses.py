"""CLI plugin for the losses and gradients: demo steps (no subcommands)."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ..grad import Softmax, softmax_vjp
from ..losses import cross_entropy, max_margin_loss, max_margin_loss_split
from ..softmax import softmax

__all__ = ["DEMO_STEPS", "register"]


def register(subparsers) -> None:
    """The losses add demo steps only."""


def _fmt(a) -> str:
    return np.array2string(np.asarray(a), precision=4, max_line_width=100)


def _step_cross_entropy(out: TextIO) -> None:
    # The stable cross-entropy notebook: logits up to 1e5.
    logits = np.linspace(-1, 1e5, 500).reshape([50, 10])
    answers = np.arange(50) % 10
    n = len(logits)
    with np.errstate(all="ignore"):  # the textbook formulas, on purpose
        naive = -logits[np.arange(n), answers] + np.log(np.sum(np.exp(logits), axis=-1))
        e = np.exp(logits)
        naive_grad = e / e.sum(axis=-1, keepdims=True)
        naive_grad[np.arange(n), answers] -= 1
        naive_grad /= n
    per = cross_entropy(logits, answers, reduction="none")
    _, grad = cross_entropy(logits, answers, return_grad=True)
    out.write("Losses 1. Cross-entropy from logits up to 1e5 (the notebook's batch of 50)\n")
    out.write(f"   naive -x_t + log(sum(exp(x)))        = {_fmt(naive[:3])}\n")
    out.write(f"   softmaxkit.cross_entropy             = {_fmt(per[:3])}\n")
    cols = [0, 4, 8, 9]
    out.write(f"   naive gradient, row 0, cols {cols} = {_fmt(naive_grad[0, cols])}\n")
    out.write(f"   softmaxkit gradient, same entries        = {_fmt(grad[0, cols])}\n")
    ign = cross_entropy(logits[:2], [-100, -100], ignore_index=-100)
    out.write(f"   every target ignored: mean = {float(ign)!r} (PyTorch: nan)\n")


def _step_max_margin(out: TextIO) -> None:
    scores = np.array([0.5, 0.2, -0.1, 1.0, -0.5, 0.3])  # B = 2 groups of 1 + N = 2
    out.write("Losses 2. Max-margin loss with negative samples (B = 2, N = 2, interleaved)\n")
    out.write(f"   scores = {scores.tolist()}\n")
    # The question's while-loop kept a loss variable that was never reset: a second
    # evaluation adds onto the first.
    acc = 0.0
    for _ in range(2):
        for b in range(2):
            for j in range(1, 3):
                acc += max(0.0, 1.0 - scores[3 * b] + scores[3 * b + j])
    pairs = max_margin_loss_split(scores[[0, 3]], scores[[1, 2, 4, 5]].reshape(2, 2),
                                  reduction="none")  # fmt: skip
    loss, grad = max_margin_loss(scores, 2, return_grad=True)
    out.write(f"   un-reset accumulator after two evaluations = {acc:.4g}\n")
    out.write(
        f"   pair losses max(0, 1 - s+ + s-)            = {_fmt(pairs).replace(chr(10), '')}\n"
    )
    out.write(f"   softmaxkit.max_margin_loss(scores, 2)      = {float(loss):.4g}\n")
    out.write(f"   its gradient                               = {_fmt(grad)}\n")
    try:
        max_margin_loss(scores, 3)
    except ValueError as exc:
        out.write(f"   num_negatives=3: ValueError: {exc}\n")


def _step_gradients(out: TextIO) -> None:
    x = np.array([[1.0, 2.0, 0.5], [-np.inf, -np.inf, -np.inf]])
    g = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    y = softmax(x)
    layer = Softmax()
    layer.forward(x)
    out.write("Losses 3. The softmax layer's backward: pass-through vs the true gradient\n")
    out.write(f"   pass-through shortcut  = {_fmt(g[0])}\n")
    out.write(f"   Softmax().backward(g)  = {_fmt(layer.backward(g)[0])}\n")
    with np.errstate(all="ignore"):
        e = np.exp(x[1] - np.max(x[1]))
        p = e / e.sum()
        naive = p * (g[1] - np.sum(g[1] * p))
    out.write(
        f"   all -inf row: naive gradient {_fmt(naive)}, softmax_vjp {_fmt(softmax_vjp(y, g)[1])}\n"
    )


DEMO_STEPS = [_step_cross_entropy, _step_max_margin, _step_gradients]
