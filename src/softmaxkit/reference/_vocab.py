"""Float64 twins of the per-token vocabulary outputs (``softmaxkit._vocab``).

Materialised, whole-array NumPy: ``v = softcap(x) / T`` over the full logits,
then each output by its definition (docs/vocab_outputs.md).  The test oracle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.typing import ArrayLike, FloatArray, Reduction
from ._losses import cross_entropy as _ce

__all__ = ["transformed_logits", "vocab_loss", "vocab_outputs"]


def transformed_logits(
    logits: ArrayLike, *, temperature: ArrayLike = 1.0, softcap: float | None = None
) -> FloatArray:
    """``v = c tanh(x / c) / T`` (class axis last; ``T`` scalar or one per row)."""
    x = np.asarray(logits, dtype=np.float64)
    if softcap:
        x = softcap * np.tanh(x / softcap)
    T = np.asarray(temperature, dtype=np.float64)
    return x / (T[..., None] if T.ndim else T)


def vocab_outputs(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    softcap: float | None = None,
    where: ArrayLike | None = None,
    topk: int | None = None,
    ignore_index: int | None = None,
) -> dict[str, Any]:
    """dict of lse, logprob, entropy, argmax, topk_logprobs, topk_ids (class axis last).

    Edge cases: masked entries are excluded; a row with no included entry above
    -inf has lse -inf, entropy 0, logprob -inf, and argmax its first included
    entry (-1 when nothing is included); a row with k > 0 entries at +inf puts mass
    1/k on each (lse +inf, entropy log k); a NaN makes the row's outputs NaN (argmax:
    the first NaN); an ignored target has logprob 0.
    """
    v = transformed_logits(logits, temperature=temperature, softcap=softcap)
    shape = v.shape
    V = shape[-1]
    v = v.reshape(-1, V)
    R = v.shape[0]
    inc = (
        np.ones_like(v, dtype=bool)
        if where is None
        else np.broadcast_to(np.asarray(where, bool), shape).reshape(-1, V)
    )
    t = np.asarray(target).reshape(-1).astype(np.int64)
    out = {k: np.empty(R) for k in ("lse", "logprob", "entropy")}
    amax = np.empty(R, dtype=np.int64)
    K = topk or 0
    tv = np.empty((R, K))
    ti = np.empty((R, K), dtype=np.int64)
    for i in range(R):
        row = np.where(inc[i], v[i], -np.inf)
        idx = np.flatnonzero(inc[i])
        if np.isnan(row[idx]).any():
            am = idx[np.isnan(row[idx])][0]
        elif idx.size:
            am = idx[np.argmax(row[idx])]
        else:
            am = -1
        amax[i] = am
        ignored = ignore_index is not None and t[i] == ignore_index
        tt = 0 if ignored else t[i]
        # stable ranking: NaN first, then by value descending, ties by index
        order = np.lexsort(
            (np.arange(V), -np.nan_to_num(row, nan=0.0, posinf=np.inf, neginf=-np.inf))
        )
        nanfirst = np.concatenate([np.flatnonzero(np.isnan(row)), order[~np.isnan(row[order])]])
        ti[i] = nanfirst[:K]
        if np.isnan(row).any():
            lse = H = lpt = np.nan
            lp = np.full(V, np.nan)
        elif (row == np.inf).any():
            k = int((row == np.inf).sum())
            lse, H = np.inf, np.log(k)
            lp = np.where(row == np.inf, -np.log(k), -np.inf)
            lpt = lp[tt]
        elif (row == -np.inf).all():
            lse, H, lpt = -np.inf, 0.0, -np.inf
            lp = np.full(V, -np.inf)
        else:
            m = row.max()
            with np.errstate(invalid="ignore"):  # NaN-free: -inf - m = -inf
                lse = m + np.log(np.sum(np.exp(row - m)))
            lp = row - lse
            p = np.exp(lp)
            with np.errstate(invalid="ignore"):  # 0 * -inf terms: 0
                H = -np.sum(np.where(p > 0, p * lp, 0.0))
            lpt = lp[tt]
        out["lse"][i] = lse
        out["entropy"][i] = H
        out["logprob"][i] = 0.0 if ignored else lpt
        tv[i] = lp[ti[i]]
    b = shape[:-1]
    return dict(
        lse=out["lse"].reshape(b),
        logprob=out["logprob"].reshape(b),
        entropy=out["entropy"].reshape(b),
        argmax=amax.reshape(b),
        topk_logprobs=tv.reshape(*b, K),
        topk_ids=ti.reshape(*b, K),
    )


def vocab_loss(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    softcap: float | None = None,
    where: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
    entropy_weight: ArrayLike | None = None,
    logprob_weight: ArrayLike | None = None,
) -> FloatArray:
    """The loss of ``cross_entropy`` with softcap, per-token temperature and the
    entropy / log-prob terms: ``CE(v) + sum_i b_i (beta_i H_i + alpha_i log p_{i,t_i})``
    over the counted tokens, ``b_i`` = 1 ("sum"/"none") or 1 / count ("mean")."""
    v = transformed_logits(logits, temperature=temperature, softcap=softcap)
    ce = _ce(v, target, weight=weight, ignore_index=ignore_index, where=where,
             label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss)  # fmt: skip
    o = vocab_outputs(logits, target, temperature=temperature, softcap=softcap, where=where,
                      ignore_index=ignore_index)  # fmt: skip
    t = np.asarray(target)
    inc = np.ones(v.shape, bool) if where is None else np.broadcast_to(where, v.shape)
    active = inc.any(-1) & (np.where(inc, v, -np.inf) > -np.inf).any(-1)
    if ignore_index is not None:
        active &= t != ignore_index
    extra = np.zeros(t.shape)
    if entropy_weight is not None:
        extra = extra + np.where(active, np.broadcast_to(entropy_weight, t.shape) * o["entropy"], 0)
    if logprob_weight is not None:
        extra = extra + np.where(active, np.broadcast_to(logprob_weight, t.shape) * o["logprob"], 0)
    if reduction == "none":
        return ce + extra
    if reduction == "sum":
        return ce + extra.sum()
    n = int(active.sum())
    return ce + (extra.sum() / n if n else 0.0)
