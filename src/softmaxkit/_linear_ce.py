"""``linear_cross_entropy``: cross-entropy of ``hidden @ W.T + b`` without the logits.

Public layer (the public path is ``softmaxkit.losses.linear_cross_entropy``, also
``softmaxkit.linear_cross_entropy``): validate, then walk the vocabulary in chunks
(the loss alone, or gradients with ``strategy="vocab"``) or the rows in blocks
(``_lce_rows``, gradients).  The per-token outputs go to ``softmaxkit._vocab``.
Maths and memory in ``docs/losses.md``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Unpack, overload

import numpy as np

from . import _vocab
from ._core import ce as _ce
from ._core import coldstart
from ._core.losscommon import class_weights, parse_target
from ._core.losskw import LCEAny, LCEKeywords, LCEOutputs
from ._core.routes import foreign, route
from ._core.typing import Array, ArrayLike, Reduction
from ._core.validate import resolve_dtype, validate_temperature, validate_where
from ._vocab import CrossEntropyOutput

__all__ = ["linear_cross_entropy"]


LCEGrads = tuple[Array, Array, Array | None]  # (d_hidden, d_weight, d_bias or None)


def _logits_size(hidden: Any, linear_weight: Any, *args: Any, **kwargs: Any) -> int:
    """The logits' number of values ``N * V`` (what the cold-start twin forms)."""
    hs, ws = np.shape(hidden), np.shape(linear_weight)
    return int(math.prod(hs[:-1])) * int(ws[0])


def _out_dtype(hidden: Any, linear_weight: Any, *args: Any, **kwargs: Any) -> Any:
    dt = np.result_type(np.asarray(hidden).dtype, np.asarray(linear_weight).dtype)
    return resolve_dtype(dt, None)[1]


@overload
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    return_grad: Literal[False] = False,
    **kw: Unpack[LCEKeywords],
) -> Array: ...
@overload
def linear_cross_entropy(  # type: ignore[overload-overlap]  # (the first match wins)
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    return_grad: Literal[True],
    **kw: Unpack[LCEKeywords],
) -> tuple[Array, LCEGrads]: ...
@overload
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    return_grad: bool,
    **kw: Unpack[LCEKeywords],
) -> Array | tuple[Array, LCEGrads]: ...
@overload
def linear_cross_entropy(
    hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, /, **kw: Unpack[LCEOutputs]
) -> CrossEntropyOutput: ...
@overload
def linear_cross_entropy(
    hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, /, **kw: Unpack[LCEAny]
) -> Array | tuple[Array, LCEGrads] | CrossEntropyOutput: ...


@coldstart.fallback("softmaxkit.reference._losses:linear_cross_entropy", _out_dtype, _logits_size)
def linear_cross_entropy(
    hidden: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    strategy: Literal["auto", "vocab", "rows"] = "auto",
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    z_loss: float = 0.0,
    temperature: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    return_grad: bool = False,
    return_lse: bool = False,
    return_logprob: bool = False,
    return_entropy: bool = False,
    return_argmax: bool = False,
    topk: int | None = None,
    softcap: float | None = None,
    entropy_weight: ArrayLike | None = None,
    logprob_weight: ArrayLike | None = None,
) -> Array | tuple[Array, LCEGrads] | CrossEntropyOutput:
    r"""Cross-entropy of ``hidden @ linear_weight.T + bias`` without forming the logits.

    Equal to ``cross_entropy(hidden @ linear_weight.T + bias, target, ...)`` (same
    options and conventions, class axis last) but the vocabulary is walked in chunks
    of ``chunk_size`` classes: pass 1 folds each logits chunk ``[N, chunk]`` into the
    online normalizer state ``(m, s)`` (merge as in ``softmaxkit._core.state``) and gives
    ``lse``; with ``return_grad`` (``strategy="vocab"``) pass 2 recomputes each
    chunk, turns it into ``dlogits`` in place and accumulates

    .. math::

        \partial h \mathrel{+}= G_c W_c, \qquad \partial W_c = G_c^\top h,
        \qquad \partial b_c = \textstyle\sum_n G_c

    Parameters
    ----------
    hidden : array_like, shape (..., d)
        Hidden states; float32 or float64 (float16/integers are computed in float32/64).
    linear_weight : array_like, shape (V, d)
        The output projection (``torch.nn.Linear`` layout).
    target : array_like of int, shape (...)
        Class indices in ``[0, V)`` (probability targets are not supported here:
        they would be as large as the logits).
    bias : array_like, shape (V,), optional
    chunk_size : int, optional
        The block size: classes per vocabulary chunk (``strategy="vocab"``) or
        samples per row block (``"rows"``).  Default: as many as fit a 32 MiB
        logits buffer (vocab: at least 128 classes; rows: at most N/16, at least 256 rows when
        N allows).
    strategy : {"auto", "vocab", "rows"}, default "auto"
        ``"vocab"``: walk the vocabulary in chunks ``[N, chunk]`` with the online
        ``(m, s)`` merge; with ``return_grad`` a second walk recomputes each chunk
        (4 matmuls of size ``N V d`` in all).  ``"rows"`` (gradients only): blocks
        of rows with their full-vocabulary logits ``[rows, V]``, turned into dlogits
        in place by the fused cross-entropy kernel: 3 matmuls, no recomputation.
        ``"auto"``: "vocab" for the loss alone (1 matmul), "rows" with
        ``return_grad``.
    weight, ignore_index, label_smoothing, reduction, z_loss, temperature, where
        As for :func:`cross_entropy`; ``where`` must broadcast to ``(..., V)``.
    return_grad : bool, default False
        Also return ``(d_hidden, d_weight, d_bias)`` (``d_bias`` is None without a bias).
    return_lse, return_logprob, return_entropy, return_argmax, topk, softcap
        As for :func:`cross_entropy`, and so are ``entropy_weight`` and
        ``logprob_weight`` (the result is a ``CrossEntropyOutput`` whose ``grad`` is the
        tuple above).  With any of them the logits are formed in blocks of rows
        (``chunk_size`` rows, default a 32 MiB ``[rows, V]`` buffer) and each block
        is read once for every output (and turned into its gradient in place).

    Returns
    -------
    loss : scalar or ndarray
    grads : tuple
        Only with ``return_grad``.

    Notes
    -----
    Peak extra memory: one logits buffer (``[N, chunk]`` or ``[rows, V]``, 32 MiB
    by default), an ``[N, d]`` scratch (vocab) or a ``[slab, d]`` one a quarter of
    the buffer (rows), and O(N) float64 row state -- never the ``[N, V]`` logits
    or their gradient.  Time: 1 matmul of size ``N V d`` for the loss alone, 3
    with gradients ("rows"; 4 with "vocab"), as many as materialising.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import cross_entropy, linear_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> h, W = rng.normal(size=(4, 3)), rng.normal(size=(10, 3))
    >>> t = np.array([1, 0, 9, 3])
    >>> a = linear_cross_entropy(h, W, t, chunk_size=4)
    >>> bool(np.isclose(a, cross_entropy(h @ W.T, t)))
    True
    """
    if _vocab.requested(locals()):  # per-token outputs etc.: softmaxkit._vocab
        return _vocab.linear_cross_entropy(locals())
    if foreign(hidden) == "torch":
        return route("torch", "linear_cross_entropy", _vocab.strip(locals()))
    h, W = _ce.linear_inputs(hidden, linear_weight)
    red, eps, z, ii = _ce.loss_options(reduction, label_smoothing, z_loss, ignore_index)
    T = validate_temperature(temperature)
    V, d = W.shape
    cw = class_weights(weight, V)
    logits_shape = (*h.shape[:-1], V)
    kind, tgt = parse_target(target, logits_shape, len(logits_shape) - 1, ii)
    if kind != "index":
        raise TypeError(
            "linear_cross_entropy takes class-index targets of shape "
            f"{h.shape[:-1]}; got probabilities of shape {logits_shape}"
        )
    mask = validate_where(where, logits_shape)
    compute, out_dtype = resolve_dtype(np.result_type(h.dtype, W.dtype), None)
    pre_T, invT = _ce.inv_temperature(T, compute)
    if pre_T is not None:
        compute = np.dtype(np.float64)  # logits / T formed in float64 (see cross_entropy)
    # (reshape(-1, d) fails for d == 0: the logits are then the bias, or 0)
    h2 = np.ascontiguousarray(h.reshape(math.prod(h.shape[:-1]), d), dtype=compute)
    W2 = np.ascontiguousarray(W, dtype=compute)
    chunk_size, bvec = _ce.linear_options(strategy, chunk_size, bias, V, compute)
    mask2 = mask.reshape(-1, V) if mask is not None else None
    N = h2.shape[0]
    if chunk_size is None:
        chunk = max(128, _ce.CHUNK_BYTES // max(1, N * compute.itemsize))
    else:
        chunk = chunk_size
    chunk = max(1, min(chunk, V))
    k = _ce.kernels()
    t1 = tgt.reshape(-1)
    ignored = (t1 == ii) if ii is not None else np.zeros(N, dtype=np.bool_)
    tsafe = np.where(ignored, 0, t1)
    if return_grad and strategy != "vocab":
        if strategy == "rows" and chunk_size is not None:
            rows = chunk_size
        else:
            # at most N/16 rows, so the buffers stay >= 10x smaller than the logits;
            # up to 256 rows even past the 32 MiB budget (smaller blocks make the
            # matmuls measurably slower: 1.55x vs 1.25x materialised at V = 128000)
            rows = max(256, _ce.CHUNK_BYTES // max(1, V * compute.itemsize))
            rows = min(rows, -(-N // 16))
        rows = max(1, min(rows, N))
        return _lce_rows(h2, W2, bvec, mask2, tsafe, ignored, cw, invT, eps, z, red,
                         rows, h.shape, out_dtype, pre_T)  # fmt: skip
    buf = np.empty(N * chunk, dtype=compute)
    ones_mask = np.ones((1, 1), dtype=np.bool_)

    def logits_chunk(v0: int, v1: int) -> tuple[np.ndarray, np.ndarray, bool]:
        zc = buf[: N * (v1 - v0)].reshape(N, v1 - v0)
        np.matmul(h2, W2[v0:v1].T, out=zc)
        if bvec is not None:
            zc += bvec[v0:v1]
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore"):
                zc /= pre_T
        if mask2 is not None:
            mc = mask2[:, v0:v1]
            return zc, mc, True
        return zc, np.broadcast_to(ones_mask, zc.shape), False

    m = np.full(N, -np.inf)
    s = np.zeros(N)
    sd = np.zeros(N)
    cnt = np.zeros(N, dtype=np.int64)
    vt = np.zeros(N)  # the target's v, taken from the same logits chunk as the max
    for v0 in range(0, V, chunk):
        v1 = min(V, v0 + chunk)
        zc, mc, hm = logits_chunk(v0, v1)
        tl = np.where((tsafe >= v0) & (tsafe < v1), tsafe - v0, -1)
        k.lce_state_update(zc, mc, hm, invT, m, s, sd, cnt, tl, vt)

    t_in = mask2[np.arange(N), tsafe] if mask2 is not None else np.ones(N, dtype=np.bool_)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nonempty = (s > 0) | np.isnan(s)
        active = nonempty & ~ignored
        ls = np.log(np.where(nonempty, s, 1.0))
        lse = np.where(nonempty, m + ls, -np.inf)
        ce = np.zeros(N)
        if eps < 1:
            ce += (1 - eps) * np.where(t_in, ls - (vt - m), np.inf)
        if eps > 0:
            ce += eps * (ls - (sd / np.maximum(cnt, 1)) / k.SD_SCALE)
        ce = np.where(np.isinf(m) & (m > 0), np.nan, ce)  # +inf logits: undefined here
    wt = cw[tsafe] if cw is not None else np.ones(N)
    a, b, wsum, count = _ce.scales("index", wt, active, red)
    part, zp = _ce.row_losses("index", wt, ce, lse, active, z)
    loss = _ce.compose(part, zp, red, wsum, count, h.shape[:-1], out_dtype)
    if not return_grad:
        return loss

    d_h = np.zeros((N, d), dtype=compute)
    scratch = np.empty((N, d), dtype=compute)
    d_W = np.empty((V, d), dtype=compute)
    d_b = np.empty(V, dtype=compute) if bvec is not None else None
    cntf = cnt.astype(np.float64)
    for v0 in range(0, V, chunk):
        v1 = min(V, v0 + chunk)
        zc, mc, hm = logits_chunk(v0, v1)
        tloc = np.where((tsafe >= v0) & (tsafe < v1) & active, tsafe - v0, -1)
        k.lce_grad_chunk(zc, mc, hm, tloc, invT, eps, lse, cntf, a, b, z, active, zc)
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore"):
                zc /= pre_T  # d/dlogits = (d/dv) / T
        np.matmul(zc, W2[v0:v1], out=scratch)
        d_h += scratch
        np.matmul(zc.T, h2, out=d_W[v0:v1])
        if d_b is not None:
            np.sum(zc, axis=0, out=d_b[v0:v1])
    return loss, _grads_out(d_h, d_W, d_b, h.shape, out_dtype)


def _grads_out(
    d_h: np.ndarray,
    d_W: np.ndarray,
    d_b: np.ndarray | None,
    hshape: tuple[int, ...],
    out_dtype: Any,
) -> LCEGrads:
    return (
        d_h.reshape(hshape).astype(out_dtype, copy=False),
        d_W.astype(out_dtype, copy=False),
        d_b.astype(out_dtype, copy=False) if d_b is not None else None,
    )


def _lce_rows(
    h2: np.ndarray,
    W2: np.ndarray,
    bvec: np.ndarray | None,
    mask2: np.ndarray | None,
    tsafe: np.ndarray,
    ignored: np.ndarray,
    cw: np.ndarray | None,
    invT: float,
    eps: float,
    z: float,
    reduction: str,
    rows: int,
    hshape: tuple[int, ...],
    out_dtype: Any,
    pre_T: float | None = None,
) -> tuple[Array, LCEGrads]:
    """Row-blocked linear CE with gradients: 3 matmuls, no recomputation.

    Each block of ``rows`` samples gets its full-vocabulary logits ``[rows, V]`` from
    one matmul; the fused kernel turns them into dlogits in place; then
    ``d_h[block] = G W`` and ``d_W += G^T h[block]`` (in column slabs so no
    ``[V, d]`` temporary is made; the first block writes ``d_W`` directly).
    """
    N, d = h2.shape
    V = W2.shape[0]
    compute = h2.dtype
    k = _ce.kernels()
    nonempty = mask2.any(axis=1) if mask2 is not None else np.ones(N, dtype=np.bool_)
    active = nonempty & ~ignored
    wt = cw[tsafe] if cw is not None else np.ones(N)
    a, b, wsum, count = _ce.scales("index", wt, active, reduction)
    buf = np.empty(rows * V, dtype=compute)
    ones_mask = np.ones((1, 1), dtype=np.bool_)
    d_h = np.empty((N, d), dtype=compute)
    # the first block writes d_W / d_b directly: zeros only when there is no block
    alloc = np.zeros if N == 0 else np.empty
    d_W = alloc((V, d), dtype=compute)
    d_b = alloc(V, dtype=compute) if bvec is not None else None
    slab = max(1, min(V, rows * V // max(1, 4 * d)))  # slab scratch <= 1/4 logits block
    tmp = np.empty(slab * d, dtype=compute)
    ce = np.empty(N)
    lse = np.empty(N)
    for r0, r1, zb, hb in _ce.logit_blocks(h2, W2, bvec, rows, buf):
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore"):
                zb /= pre_T
        mb = mask2[r0:r1] if mask2 is not None else np.broadcast_to(ones_mask, zb.shape)
        k.ce_index_rows(
            zb, tsafe[r0:r1], mb, mask2 is not None, invT, eps, z, a[r0:r1], b[r0:r1],
            active[r0:r1], True, zb, ce[r0:r1], lse[r0:r1], True, _ce.lim(compute),
        )  # fmt: skip
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore"):
                zb /= pre_T
        # d_h block = G W, computed as (W^T G^T)^T: OpenBLAS was measured ~3x
        # faster on this transposed form of the small-output, long-K product
        d_h[r0:r1] = (W2.T @ zb.T).T
        for v0 in range(0, V, slab):
            v1 = min(V, v0 + slab)
            if r0 == 0:
                # first block: straight into d_W (no zero fill, no add pass); in
                # slabs too, as one [V, d] product was measured ~10 % slower
                np.matmul(zb[:, v0:v1].T, hb, out=d_W[v0:v1])
                continue
            t = tmp[: (v1 - v0) * d].reshape(v1 - v0, d)
            np.matmul(zb[:, v0:v1].T, hb, out=t)
            d_W[v0:v1] += t
        if d_b is not None:
            if r0 == 0:
                np.sum(zb, axis=0, out=d_b)
            else:
                d_b += zb.sum(axis=0)
    part, zp = _ce.row_losses("index", wt, ce, lse, active, z)
    loss = _ce.compose(part, zp, reduction, wsum, count, hshape[:-1], out_dtype)
    return loss, _grads_out(d_h, d_W, d_b, hshape, out_dtype)
