"""CLI plugin for the dense ops: the demo steps of the foundation."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ..softmax import log_softmax, logsumexp, softmax

__all__ = ["DEMO_STEPS", "register"]


def register(subparsers) -> None:
    """The dense ops' file commands live in the online plugin (streaming)."""


def _fmt(a) -> str:
    return np.array2string(np.asarray(a), precision=4, suppress_small=False, max_line_width=100)


def _naive(x, axis=None):
    # The textbook formula, on purpose: warnings silenced so the demo stays readable.
    with np.errstate(all="ignore"):
        e = np.exp(x)
        return e / e.sum(axis=axis, keepdims=axis is not None)


def _step_overflow(out: TextIO) -> None:
    x = np.array([2, 4, 1, 300, 400, 500, 600, 700, 800, 900, 100000], dtype=np.float64)
    out.write("1. Overflow: exp(x) / sum(exp(x)) with large logits\n")
    out.write(f"   x                      = {x.astype(int).tolist()}\n")
    out.write(f"   naive                  = {_fmt(_naive(x))}\n")
    out.write(f"   softmaxkit.softmax     = {_fmt(softmax(x))}\n")
    out.write(f"   softmaxkit.logsumexp   = {float(logsumexp(x))!r} (naive: inf)\n")


def _step_axis(out: TextIO) -> None:
    x = np.array([[1, 2, 3, 6], [2, 4, 5, 6], [1, 2, 3, 6]], dtype=np.float64)
    out.write("2. The axis mistake on a batch of 3 samples (rows 0 and 2 are the same sample)\n")
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x))
        global_norm = e / e.sum()
    out.write("   naive, normalised over the whole batch (rows do not sum to 1):\n")
    out.write("   " + _fmt(global_norm).replace("\n", "\n   ") + "\n")
    out.write("   softmaxkit.softmax(x)  (axis=-1: one distribution per sample):\n")
    out.write("   " + _fmt(softmax(x)).replace("\n", "\n   ") + "\n")
    sums = (_fmt(global_norm.sum(axis=1)), _fmt(softmax(x).sum(axis=1)))
    out.write(f"   row sums: naive {sums[0]}, ours {sums[1]}\n")


def _step_mask(out: TextIO) -> None:
    x = np.array([[0.5, 1.5, -0.3], [2.0, 0.1, 0.7]])
    where = np.array([[True, True, False], [False, False, False]])
    masked = np.where(where, x, -np.inf)
    out.write("3. A fully masked row (e.g. a padding-only sequence in attention)\n")
    out.write("   naive on x with -inf at masked positions:\n")
    with np.errstate(all="ignore"):
        naive = _naive(masked - masked.max(1, keepdims=True), axis=1)
    out.write("   " + _fmt(naive).replace("\n", "\n   ") + "\n")
    out.write("   softmaxkit.softmax(x, where=mask): zeros, not NaN, for the empty row\n")
    out.write("   " + _fmt(softmax(x, where=where)).replace("\n", "\n   ") + "\n")


def _step_log(out: TextIO) -> None:
    x = np.array([0.0, -40.0, -50.0])
    with np.errstate(all="ignore"):
        naive = np.log(_naive(x))
    out.write("4. log(softmax(x)) loses the dominant entry; log_softmax keeps it\n")
    out.write(f"   log(softmax(x))[0]          = {float(naive[0])!r}\n")
    out.write(f"   softmaxkit.log_softmax(x)[0] = {float(log_softmax(x)[0])!r}\n")


DEMO_STEPS = [_step_overflow, _step_axis, _step_mask, _step_log]
