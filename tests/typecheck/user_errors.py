"""Calls that mypy must reject (``tests/test_typing.py``): each line marked ``# E: code``
must get exactly that error code, and no other line an error.  Never executed."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

import softmaxkit as sk
import softmaxkit.reference as ref

F = NDArray[np.floating[Any]]


def wrong(x: F, t: NDArray[np.int64]) -> None:
    sk.softmax(x, axis="a")  # E: arg-type
    sk.log_softmax(x, temperature="hot")  # E: arg-type
    sk.softmax(x, -1, 1.0)  # E: call-arg
    sk.logcumsumexp(x, axis=(0, 1))  # E: arg-type
    sk.kl_divergence(x, x, reduction="avg")  # E: call-overload
    sk.kl_divergence(x, x, direction="backward")  # E: call-overload
    ref.cross_entropy(x, t, reduction="avg")  # E: call-overload
    sk.sample(x, seed="42")  # E: call-overload
    lse: F = sk.logsumexp(x, return_sign=True)  # E: assignment
    loss: F = sk.jensen_shannon(x, x, return_grad=True)  # E: assignment
    y, dy, extra = sk.softmax_jvp(x, x)  # E: misc
    sk.Softmax(axis=-1).forward(x).no_such_method()  # E: attr-defined
    print(lse, loss, y, dy, extra)
