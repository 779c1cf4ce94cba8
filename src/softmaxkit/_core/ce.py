"""Cross-entropy plumbing shared by ``cross_entropy``, ``linear_cross_entropy`` and
the per-token outputs (``softmaxkit._vocab``): option checks, per-row scales, and
the composition of per-row losses into the reduced loss.

Private.  It sits below the three public-layer modules that use it (``losses``,
``_linear_ce``, ``_vocab``), so none of them imports another for these helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .blas import matmul
from .losscommon import check_int_or_none, check_real, check_reduction
from .validate import as_input_array, check_out, normal_inverse

#: The logits buffer of the blocked loss paths (``linear_cross_entropy``): 32 MiB.
CHUNK_BYTES = 32 * 2**20

F64 = NDArray[np.float64]


def kernels() -> ModuleType:
    """``softmaxkit._kernels.losses`` (imported on first use: Numba compiles lazily)."""
    from .._kernels import losses

    return losses


def lim(compute: Any) -> float:
    """The kernels' fast-path bound on ``|x| / T`` for the compute dtype."""
    k = kernels()
    return float(k.LIM32 if np.dtype(compute) == np.float32 else k.LIM64)


def scalar(v: Any, dtype: Any) -> Any:
    """``v`` as a NumPy scalar of ``dtype``."""
    return np.dtype(dtype).type(v)


def inv_temperature(T: float, compute: Any) -> tuple[float | None, float]:
    """(x_scale, invT): ``invT = 1/T`` when it is a normal number of ``compute``;
    else ``(T, 1.0)``: the caller divides the logits by ``T`` in float64 and the
    gradient by ``T`` afterwards (the dense driver's rule for a tiny or huge T)."""
    inv = normal_inverse(T, compute)
    return (None, inv) if inv is not None else (float(T), 1.0)


def loss_options(
    reduction: Any, label_smoothing: Any, z_loss: Any, ignore_index: Any
) -> tuple[str, float, float, int | None]:
    """The checked ``(reduction, eps, z, ignore_index)`` of every cross-entropy entry."""
    return (
        check_reduction(reduction),
        check_real("label_smoothing", label_smoothing, 0.0, 1.0),
        check_real("z_loss", z_loss, 0.0),
        check_int_or_none("ignore_index", ignore_index),
    )


def grad_out(out: Any, return_grad: Any, shape: tuple[int, ...], dtype: Any) -> None:
    """``out=`` is the gradient's buffer: it needs ``return_grad`` and the right shape."""
    if out is not None:
        if not return_grad:
            raise ValueError("out is the gradient's buffer; it needs return_grad=True")
        check_out(out, shape, dtype)


def linear_inputs(hidden: Any, linear_weight: Any) -> tuple[np.ndarray, np.ndarray]:
    """``hidden`` (..., d) and ``linear_weight`` (V, d) as arrays, shapes checked."""
    h = as_input_array(hidden, "hidden")
    W = as_input_array(linear_weight, "linear_weight")
    if h.ndim < 1 or W.ndim != 2:
        raise ValueError(
            f"hidden must have shape (..., d) and linear_weight (V, d); got {h.shape} and {W.shape}"
        )
    if h.shape[-1] != W.shape[1]:
        raise ValueError(
            f"hidden's last dimension {h.shape[-1]} does not match linear_weight's "
            f"second dimension {W.shape[1]} (shapes {h.shape} and {W.shape})"
        )
    return h, W


def linear_options(
    strategy: Any, chunk_size: Any, bias: Any, V: int, compute: Any
) -> tuple[int | None, np.ndarray | None]:
    """``linear_cross_entropy``'s ``bias``, ``chunk_size`` and ``strategy`` checked (in
    that order); returns ``(chunk_size as an int or None, bias as a [V] array or None)``."""
    bvec = None
    if bias is not None:
        bvec = as_input_array(bias, "bias").astype(compute)
        if bvec.shape != (V,):
            raise ValueError(f"bias must have shape ({V},); got {bvec.shape}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise TypeError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        chunk_size = int(chunk_size)
    strategies = ("auto", "vocab", "rows")
    if strategy not in strategies:
        raise ValueError(f"strategy must be one of {strategies}; got {strategy!r}")
    return chunk_size, bvec


def logit_blocks(
    h2: np.ndarray, W2: np.ndarray, bvec: np.ndarray | None, rows: int, buf: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Blocks of ``rows`` rows of the logits ``h2 @ W2.T + bvec``, each formed in ``buf``
    (overwriting the previous one): yields ``(r0, r1, logits[r0:r1], h2[r0:r1])``."""
    N, V = h2.shape[0], W2.shape[0]
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        zb = buf[: (r1 - r0) * V].reshape(r1 - r0, V)
        hb = h2[r0:r1]
        matmul(hb, W2.T, out=zb)
        if bvec is not None:
            zb += bvec
        yield r0, r1, zb, hb


def scales(
    kind: str, wt: F64 | None, active: NDArray[np.bool_], reduction: str
) -> tuple[F64, F64, float, int]:
    """Per-row scales (a, b) of the CE part and the z-loss part, and the denominators
    (``wt`` None: unit weights, no per-row weight array)."""
    count = int(np.count_nonzero(active))
    every = count == active.size  # every row counted (the common case: no masks)
    if kind == "index" and wt is not None:
        wsum = (float(np.sum(wt)) if every else float(np.sum(wt[active]))) if count else 0.0
        if reduction == "mean" and count and wsum == 0:
            # 0 / 0: PyTorch returns NaN; we refuse rather than return a silent NaN or
            # a made-up 0 (docs/losses.md, "Class weights")
            raise ValueError(
                "weight: the class weights of the counted targets sum to 0, so "
                f"reduction='mean' (sum of w_t * loss / sum of w_t) is 0/0 over {count} "
                "counted target(s); use reduction='sum' or 'none', or nonzero weights"
            )
    else:
        wsum = float(count)
    R = active.size
    if every and count:  # the same values with one pass each ([65536] rows: 0.54 -> ~0.1 ms)
        if reduction == "mean":
            if wt is None:
                a = np.full(R, 1.0 / wsum)
            else:
                a = wt / wsum if wsum != 0 else np.zeros_like(wt)
            b = np.full(count, 1.0 / count)
        else:
            a = np.ones(R) if wt is None else np.array(wt, dtype=np.float64)
            b = np.ones(count)
        return a, b, wsum, count
    w = np.ones(R) if wt is None else wt
    if reduction == "mean":
        a = np.where(active, w / wsum, 0.0) if wsum != 0 else np.zeros_like(w)
        b = np.where(active, 1.0 / count, 0.0) if count else np.zeros_like(w)
    else:
        a = np.where(active, w, 0.0)
        b = active.astype(np.float64)
    return a, b, wsum, count


def row_losses(
    kind: str, wt: F64 | None, ce: F64, lse: F64, active: NDArray[np.bool_], z: float
) -> tuple[F64, F64]:
    """Per-row (weighted CE part, z part), 0 on inactive rows, no 0 * inf NaN (``wt``
    None: unit weights)."""
    w = wt if kind == "index" else None  # the probability kind's parts carry no weight
    if active.all():  # the same values in fewer passes ([65536] rows: 0.51 -> ~0.1 ms)
        if w is not None:
            part = w * ce
            zero = w == 0
            if zero.any():
                part[zero] = 0.0  # (0 * inf)
        else:
            part = ce
        if z > 0:
            with np.errstate(over="ignore"):
                return part, z * np.square(lse)
        return part, np.zeros(part.shape)  # (calloc: no pages written; compose only reads it)
    if w is not None:
        part = np.where(active & (w != 0), w * np.where(active, ce, 0.0), 0.0)
    else:
        part = np.where(active, ce, 0.0)
    if z > 0:
        with np.errstate(over="ignore"):  # lse^2 past 1.8e308: +inf, as it should
            return part, np.where(active, z * np.square(np.where(active, lse, 0.0)), 0.0)
    return part, np.zeros(part.shape)


def deferred_empty_rows(
    run: Any, counted: NDArray[np.bool_], nonempty: Any, defer: bool
) -> tuple[Any, NDArray[np.bool_]]:
    """``(run(active), active)`` with ``active``: the ``counted`` rows that are not
    empty (no entry above -inf), empty rows counting for nothing (docs/losses.md).

    ``run(active)`` runs the cross-entropy kernel over every row and returns a tuple
    whose first item is the per-row loss; ``nonempty(idx)`` tells which rows ``idx``
    (None: all) are not empty.  With ``defer`` (the logits stay intact through
    ``run``, so it may run twice) the emptiness is found after the kernel: an empty
    row, counted, comes out with a non-finite loss, so only those rows are scanned,
    and only when one of them is empty is every row scanned and the kernel run again.
    Scanning every row first reads a cache line a row (~1 ms at [65536, 128] with the
    logits out of cache).
    """
    if not defer:
        active = nonempty(None) & counted
        return run(active), active
    res = run(counted)
    bad = np.flatnonzero(~np.isfinite(res[0]) & counted)
    if bad.size and not nonempty(bad).all():
        active = nonempty(None) & counted
        return run(active), active
    return res, counted


def compose(
    part: F64,
    zp: F64,
    reduction: str,
    wsum: float,
    count: int,
    batch: tuple[int, ...],
    out_dtype: Any,
) -> Any:
    """The reduced loss from the per-row parts: a NumPy scalar, or the per-row array
    of shape ``batch`` for ``reduction="none"``."""
    # sums past float64's range and casts past the output dtype's round to +-inf:
    # that is the correctly rounded loss (x / T at T = 1e-40 in float32), no warning;
    # +inf + -inf (a target at -inf whose log-prob term has a positive weight) is NaN,
    # undefined, also without a warning (docs/vocab_outputs.md, "Edge cases")
    with np.errstate(over="ignore", invalid="ignore"):
        if reduction == "none":
            loss = (part + zp).reshape(batch).astype(out_dtype)
            return loss[()] if loss.ndim == 0 else loss
        if reduction == "sum":
            return scalar(np.sum(part) + np.sum(zp), out_dtype)
        val = (np.sum(part) / wsum if wsum != 0 else 0.0) + (np.sum(zp) / count if count else 0.0)
        return scalar(val, out_dtype)
