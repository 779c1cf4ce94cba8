"""Losses built on the softmax: cross-entropy, linear cross-entropy, margin losses.

Public layer: validate, lay the class axis out as contiguous rows, call the fused
Numba kernels of ``softmaxkit._kernels.losses``.  Maths, derivations and the
choices that differ from peers are in ``docs/losses.md``.

With ``return_grad=True`` every loss returns ``(loss, grad)``; with
``reduction="none"`` the gradient is that of the *sum* of the per-sample losses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _vocab
from ._core.losscommon import (
    check_int_or_none,
    check_prob_target,
    check_real,
    check_reduction,
    class_axis,
    class_weights,
    parse_target,
)
from ._core.validate import (
    as_input_array,
    check_out,
    resolve_dtype,
    validate_temperature,
    validate_where,
)
from .drivers.eager import direct_rows, rows_view, same_memory
from .softmax import _foreign, _torch_route

__all__ = [
    "cross_entropy",
    "linear_cross_entropy",
    "max_margin_loss",
    "max_margin_loss_split",
    "multiclass_hinge_loss",
]


def _k():
    from ._kernels import losses

    return losses


def _scalar(v, dtype):
    return np.dtype(dtype).type(v)


def _inv_temperature(T, compute):
    """(x_scale, invT): ``invT = 1/T`` when it is a normal number of ``compute``;
    else ``(T, 1.0)``: the caller divides the logits by ``T`` in float64 and the
    gradient by ``T`` afterwards (the dense driver's rule for a tiny or huge T)."""
    with np.errstate(over="ignore", divide="ignore"):
        inv = np.float64(1.0) / np.float64(T)
        inv_c = np.dtype(compute).type(inv)
    if np.isfinite(inv_c) and inv_c >= np.finfo(compute).tiny:
        return None, float(inv)
    return float(T), 1.0


def _lim(compute):
    return _k().LIM32 if np.dtype(compute) == np.float32 else _k().LIM64


def _scales(kind, wt, active, reduction, z):
    """Per-row scales (a, b) of the CE part and the z-loss part, and the denominators."""
    count = int(np.count_nonzero(active))
    if kind == "index":
        wsum = float(np.sum(wt[active])) if count else 0.0
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
    if reduction == "mean":
        a = np.where(active, wt / wsum, 0.0) if wsum != 0 else np.zeros_like(wt)
        b = np.where(active, 1.0 / count, 0.0) if count else np.zeros_like(wt)
    else:
        a = np.where(active, wt, 0.0)
        b = active.astype(np.float64)
    return a, b, wsum, count


def _row_losses(kind, wt, ce, lse, active, z):
    """Per-row (weighted CE part, z part), 0 on inactive rows, no 0 * inf NaN."""
    if kind == "index":
        part = np.where(active & (wt != 0), wt * np.where(active, ce, 0.0), 0.0)
    else:
        part = np.where(active, ce, 0.0)
    if z > 0:
        with np.errstate(over="ignore"):  # lse^2 past 1.8e308: +inf, as it should
            zp = np.where(active, z * np.square(np.where(active, lse, 0.0)), 0.0)
    else:
        zp = np.zeros_like(part)
    return part, zp


def _compose(part, zp, reduction, wsum, count, batch, out_dtype):
    # sums past float64's range and casts past the output dtype's round to +-inf:
    # that is the correctly rounded loss (x / T at T = 1e-40 in float32), no warning
    with np.errstate(over="ignore"):
        return _compose_sums(part, zp, reduction, wsum, count, batch, out_dtype)


def _compose_sums(part, zp, reduction, wsum, count, batch, out_dtype):
    if reduction == "none":
        loss: Any = (part + zp).reshape(batch).astype(out_dtype)
        return loss[()] if loss.ndim == 0 else loss
    if reduction == "sum":
        return _scalar(np.sum(part) + np.sum(zp), out_dtype)
    val = (np.sum(part) / wsum if wsum != 0 else 0.0) + (np.sum(zp) / count if count else 0.0)
    return _scalar(val, out_dtype)


def cross_entropy(
    logits,
    target,
    /,
    *,
    axis=-1,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    reduction="mean",
    z_loss=0.0,
    temperature=1.0,
    where=None,
    return_grad=False,
    out=None,
    return_lse=False,
    return_logprob=False,
    return_entropy=False,
    return_argmax=False,
    topk=None,
    softcap=None,
    entropy_weight=None,
    logprob_weight=None,
):
    r"""Softmax cross-entropy from logits, with its gradient in the same fused pass.

    With ``v = logits / T``, ``p = softmax(v)`` over ``axis`` and ``lse = logsumexp(v)``,
    the loss of one sample with class-index target ``t`` is

    .. math::

        \ell = w_t \Big[(1 - \varepsilon)(\mathrm{lse} - v_t)
               + \frac{\varepsilon}{C}\sum_c (\mathrm{lse} - v_c)\Big]
               + z\,\mathrm{lse}^2

    i.e. ``w_t * H(q, p) + z lse^2`` with the smoothed target
    ``q = (1 - eps) onehot(t) + eps / C``.  With probability targets ``y`` it is
    ``sum_c w_c q_c (lse - v_c) + z lse^2`` with ``q = (1 - eps) y + eps / C``.

    The gradient with respect to the logits is ``(w_t (p - q) + 2 z lse p) / T``
    (index targets) or ``((sum_c w_c q_c) p - w * q + 2 z lse p) / T`` (probabilities),
    times the reduction's scale.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores; the classes lie along ``axis``.  float16 is computed in
        float32; integer input in float64.
    target : array_like
        Either class indices, with the logits' shape minus ``axis`` (integers, or
        floats holding integers), or class probabilities with the logits' shape.
        The shape decides which.
    axis : int, default -1
        The class axis (PyTorch uses dimension 1; pass ``axis=1`` for its layout).
    weight : array_like, optional
        Per-class weights, shape ``(C,)``.
    ignore_index : int, optional
        Index targets equal to it contribute no loss and no gradient and are not
        counted by ``"mean"``.  Default None: every target must be a class index
        (PyTorch's default is -100).
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution over the included classes.
        With class weights, an index-target sample is weighted by ``w_t`` as a whole
        (the smoothed distribution is not re-weighted per class); PyTorch weights
        each smoothing term by its class' weight, which moves the loss minimum away
        from ``q`` (pytorch#104776).  Probability targets: as PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the weighted sum by the sum of ``w_t`` over the counted
        index targets (PyTorch's convention), or by the number of counted samples for
        probability targets; the z-loss term is averaged over the counted samples.
        If nothing is counted (every target ignored) the mean is 0.0 with a zero
        gradient (PyTorch returns NaN, pytorch#70348); class weights of the counted
        targets summing to 0 make the mean 0/0 and raise ``ValueError``.
    z_loss : float >= 0, default 0
        Adds ``z * lse^2`` per counted sample (PaLM's z-loss, Liger's
        ``lse_square_scale``); not multiplied by the class weight.
    temperature : float > 0, default 1
        The loss acts on ``logits / T``.
    where : array_like of bool, optional
        Mask broadcastable to the logits: masked-out classes take no part (as if
        their logit were -inf), and smoothing spreads only over included classes.
    return_grad : bool, default False
        Also return the gradient with respect to ``logits`` (same shape).
    out : ndarray, optional
        Where to write the gradient (only with ``return_grad``); ``out=logits`` is
        allowed and saves the gradient's memory (as Liger does).
    return_lse, return_logprob, return_entropy, return_argmax : bool, default False
        Also return the per-token log-normaliser, log-probability of the target
        (0 for an ignored target), entropy of ``softmax(v)`` and first argmax (int64,
        -1 for a row with nothing included), from the same pass.  With any of them
        (or ``topk``) the result is a ``CrossEntropyOutput`` NamedTuple (fields
        ``loss, lse, logprob, entropy, argmax, topk_logprobs, topk_ids, grad``;
        unrequested ones None; ``grad`` filled by ``return_grad``).
    topk : int in [1, C], optional
        Also return the ``topk`` largest log-probabilities and their ids per token.
    softcap : float >= 0, optional
        Logits -> ``c tanh(logits / c)`` before the temperature (Gemma 2, Liger).
        ``temperature`` may also be an array of one value per token.
    entropy_weight, logprob_weight : float or array per token, optional
        Add ``b_i (beta_i H_i + alpha_i log p_{i,t})`` to the loss (``b_i`` the
        z-loss' reduction scale), with their gradients; for a policy-gradient loss
        pass ``logprob_weight=-A``.  Formulas, signs and edge cases:
        docs/vocab_outputs.md.  These options take index targets and NumPy inputs.

    Returns
    -------
    loss : scalar or ndarray
        A scalar for "mean"/"sum"; the per-sample losses (target's index shape) for
        "none".  dtype: the logits' floating dtype (float64 for integers).
    grad : ndarray
        Only with ``return_grad``.

    Raises
    ------
    ValueError
        A class index out of ``[0, C)`` (other than ``ignore_index``) or a
        non-integral index target, naming the first bad position; a probability
        target with a NaN, inf or negative entry (naming it and its row); class
        weights summing to 0 over the counted targets with ``reduction="mean"``; a
        target of the wrong shape; options out of range.
    TypeError
        Non-numeric inputs or a bool/complex target.

    Notes
    -----
    Edge cases: a row whose included logits are all -inf (or fully masked by
    ``where``) is treated like an ignored target: loss 0, gradient 0, not counted.
    A target class with probability 0 (masked, or logit -inf) gives loss ``+inf``
    and a finite gradient; probability-target mass on a masked class counts as
    on a -inf logit.  Extreme ``x / T`` follow the dense ops' contract
    (docs/losses.md, "Extreme magnitudes and temperatures").  A NaN logit makes
    that sample's loss and gradient NaN.

    Pass structure: one pre-scan (stops at each row's first finite logit), then per
    row max, sum of exponentials and gradient write, fused; the row stays in cache.
    Peak extra memory: O(rows) float64 per-row values, plus the gradient unless
    ``out`` is given, plus one copy of the logits when ``axis`` is not the last,
    contiguous axis.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import cross_entropy
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
    >>> round(float(cross_entropy(logits, [0, 1])), 6)
    0.314291
    >>> loss, grad = cross_entropy(np.array([[1e5, 0.0]]), [1], return_grad=True)
    >>> float(loss), grad.tolist()
    (100000.0, [[1.0, -1.0]])
    >>> float(cross_entropy(logits, [-100, -100], ignore_index=-100))  # all ignored
    0.0
    >>> r = cross_entropy(logits, [0, 1], return_entropy=True, topk=2)  # one pass
    >>> r.topk_ids.tolist(), np.round(r.entropy, 4).tolist(), r.lse is None
    ([[0, 1], [1, 0]], [0.8467, 0.6172], True)
    """
    if _vocab.requested(locals()):  # per-token outputs etc.: softmaxkit._vocab
        return _vocab.cross_entropy(locals())
    if _foreign(logits) == "torch":
        return _torch_route("cross_entropy", _vocab.strip(locals()))
    if _foreign(logits) == "dask":
        from .drivers import dask as _dask

        return _dask.cross_entropy(
            logits,
            target,
            axis=axis,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            reduction=reduction,
            z_loss=z_loss,
            temperature=temperature,
            where=where,
            return_grad=return_grad,
            out=out,
        )
    arr = as_input_array(logits, "logits")
    ax = class_axis(axis, arr.ndim)
    reduction = check_reduction(reduction)
    eps = check_real("label_smoothing", label_smoothing, 0.0, 1.0)
    z = check_real("z_loss", z_loss, 0.0)
    T = validate_temperature(temperature)
    ii = check_int_or_none("ignore_index", ignore_index)
    n_classes = arr.shape[ax]
    cw = class_weights(weight, n_classes)
    kind, tgt = parse_target(target, arr.shape, ax, ii)
    if kind == "prob":
        check_prob_target(tgt, ax)
    mask = validate_where(where, arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, None)
    pre_T, invT = _inv_temperature(T, compute)
    if pre_T is not None:
        # 1/T is not a normal number of the compute dtype: the kernels see x / T
        # (float64, overflow to +-inf as the reference's) with T = 1
        compute = np.dtype(np.float64)
    if out is not None:
        if not return_grad:
            raise ValueError("out is the gradient's buffer; it needs return_grad=True")
        check_out(out, arr.shape, out_dtype)

    axes = (ax,)
    x2 = np.ascontiguousarray(rows_view(arr, axes), dtype=compute)
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore"):
            x2 = x2 / pre_T
    if not x2.flags.writeable:
        # read-only input: the kernels are compiled for writeable arrays only (a
        # read-only array is another Numba type, i.e. another compile)
        x2 = x2.copy()
    R = x2.shape[0]
    mask2 = np.ascontiguousarray(rows_view(mask, axes)) if mask is not None else None
    if mask2 is not None and not mask2.flags.writeable:
        mask2 = mask2.copy()
    k = _k()
    dummy_mask = mask2 if mask2 is not None else np.ones((1, 1), dtype=np.bool_)
    if mask2 is None:
        dummy_mask = np.broadcast_to(dummy_mask, x2.shape)
    nonempty = np.empty(R, dtype=np.bool_)
    k.row_nonempty(x2, dummy_mask, mask2 is not None, nonempty)

    grad2 = None
    direct = False
    if return_grad:
        if out is None:
            out = np.empty(arr.shape, dtype=out_dtype)
        g2 = direct_rows(out, axes, compute)
        if g2 is not None and pre_T is None:
            direct = True
            grad2 = g2
            if np.may_share_memory(x2, g2) and not same_memory(x2, g2):
                x2 = x2.copy()  # overlapping in another layout: read a private copy
        if grad2 is None:
            grad2 = np.empty(x2.shape, dtype=compute)
    else:
        grad2 = np.empty((R, 0 if R == 0 else 1), dtype=compute)  # unused

    ce = np.empty(R, dtype=np.float64)
    lse = np.empty(R, dtype=np.float64)
    if kind == "index":
        t1 = tgt.reshape(-1)
        ignored = (t1 == ii) if ii is not None else np.zeros(R, dtype=np.bool_)
        active = nonempty & ~ignored
        tsafe = np.where(active, t1, 0)
        wt = cw[tsafe] if cw is not None else np.ones(R)
        a, b, wsum, count = _scales(kind, wt, active, reduction, z)
        k.ce_index_rows(
            x2, tsafe, dummy_mask, mask2 is not None, invT, eps, z, a, b, active,
            return_grad, grad2, ce, lse, bool(return_grad and same_memory(x2, grad2)),
            _lim(compute),
        )  # fmt: skip
    else:
        # float32 / float64 targets are read as they are (the kernel widens each
        # value exactly); converting a float32 target cost a float64 copy, twice
        # the logits' size
        tdt = tgt.dtype if tgt.dtype in (np.float32, np.float64) else np.float64
        y2 = np.ascontiguousarray(rows_view(tgt, axes), dtype=tdt)
        y2 = y2 if y2.flags.writeable else y2.copy()
        active = nonempty
        wt = np.ones(R)
        a, b, wsum, count = _scales(kind, wt, active, reduction, z)
        k.ce_prob_rows(
            x2, y2, cw if cw is not None else np.ones(n_classes), cw is not None,
            dummy_mask, mask2 is not None, invT, eps, z, a, b, active,
            return_grad, grad2, ce, lse,
        )  # fmt: skip

    part, zp = _row_losses(kind, wt, ce, lse, active, z)
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    loss = _compose(part, zp, reduction, wsum, count, batch, out_dtype)
    if not return_grad:
        return loss
    if pre_T is not None:
        with np.errstate(over="ignore", under="ignore"):
            grad2 /= pre_T  # d/dx = (d/dv) / T, overflowing to +-inf as it must
    if not direct:
        moved = np.moveaxis(out, ax, -1)
        with np.errstate(over="ignore"):  # (float64 x / T path: rounds to +-inf)
            moved[...] = grad2.reshape(moved.shape)
    return loss, out


# ---------------------------------------------------------------------------
# Linear cross-entropy
# ---------------------------------------------------------------------------

_CHUNK_BYTES = 32 * 2**20


def linear_cross_entropy(
    hidden,
    linear_weight,
    target,
    /,
    *,
    bias=None,
    chunk_size=None,
    strategy="auto",
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    reduction="mean",
    z_loss=0.0,
    temperature=1.0,
    where=None,
    return_grad=False,
    return_lse=False,
    return_logprob=False,
    return_entropy=False,
    return_argmax=False,
    topk=None,
    softcap=None,
    entropy_weight=None,
    logprob_weight=None,
):
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
    if _foreign(hidden) == "torch":
        return _torch_route("linear_cross_entropy", _vocab.strip(locals()))
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
    reduction = check_reduction(reduction)
    eps = check_real("label_smoothing", label_smoothing, 0.0, 1.0)
    z = check_real("z_loss", z_loss, 0.0)
    T = validate_temperature(temperature)
    ii = check_int_or_none("ignore_index", ignore_index)
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
    pre_T, invT = _inv_temperature(T, compute)
    if pre_T is not None:
        compute = np.dtype(np.float64)  # logits / T formed in float64 (see cross_entropy)
    # (reshape(-1, d) fails for d == 0: the logits are then the bias, or 0)
    h2 = np.ascontiguousarray(h.reshape(math.prod(h.shape[:-1]), d), dtype=compute)
    W2 = np.ascontiguousarray(W, dtype=compute)
    bvec = None
    if bias is not None:
        bvec = as_input_array(bias, "bias").astype(compute)
        if bvec.shape != (V,):
            raise ValueError(f"bias must have shape ({V},); got {bvec.shape}")
    mask2 = mask.reshape(-1, V) if mask is not None else None
    N = h2.shape[0]
    if chunk_size is None:
        chunk = max(128, _CHUNK_BYTES // max(1, N * compute.itemsize))
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise TypeError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        chunk = int(chunk_size)
    chunk = max(1, min(chunk, V))

    strategies = ("auto", "vocab", "rows")
    if strategy not in strategies:
        raise ValueError(f"strategy must be one of {strategies}; got {strategy!r}")
    k = _k()
    t1 = tgt.reshape(-1)
    ignored = (t1 == ii) if ii is not None else np.zeros(N, dtype=np.bool_)
    tsafe = np.where(ignored, 0, t1)
    if return_grad and strategy != "vocab":
        if strategy == "rows" and chunk_size is not None:
            rows = int(chunk_size)
        else:
            # at most N/16 rows, so the buffers stay >= 10x smaller than the logits;
            # up to 256 rows even past the 32 MiB budget (smaller blocks make the
            # matmuls measurably slower: 1.55x vs 1.25x materialised at V = 128000)
            rows = max(256, _CHUNK_BYTES // max(1, V * compute.itemsize))
            rows = min(rows, -(-N // 16))
        rows = max(1, min(rows, N))
        return _lce_rows(h2, W2, bvec, mask2, tsafe, ignored, cw, invT, eps, z, reduction,
                         rows, h.shape, out_dtype, pre_T)  # fmt: skip
    buf = np.empty(N * chunk, dtype=compute)
    ones_mask = np.ones((1, 1), dtype=np.bool_)

    def logits_chunk(v0, v1):
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
    a, b, wsum, count = _scales("index", wt, active, reduction, z)
    part, zp = _row_losses("index", wt, ce, lse, active, z)
    loss = _compose(part, zp, reduction, wsum, count, h.shape[:-1], out_dtype)
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


def _grads_out(d_h, d_W, d_b, hshape, out_dtype):
    return (
        d_h.reshape(hshape).astype(out_dtype, copy=False),
        d_W.astype(out_dtype, copy=False),
        d_b.astype(out_dtype, copy=False) if d_b is not None else None,
    )


def _lce_rows(h2, W2, bvec, mask2, tsafe, ignored, cw, invT, eps, z, reduction, rows, hshape,
              out_dtype, pre_T=None):  # fmt: skip
    """Row-blocked linear CE with gradients: 3 matmuls, no recomputation.

    Each block of ``rows`` samples gets its full-vocabulary logits ``[rows, V]`` from
    one matmul; the fused kernel turns them into dlogits in place; then
    ``d_h[block] = G W`` and ``d_W += G^T h[block]`` (in column slabs so no
    ``[V, d]`` temporary is made; the first block writes ``d_W`` directly).
    """
    N, d = h2.shape
    V = W2.shape[0]
    compute = h2.dtype
    k = _k()
    nonempty = mask2.any(axis=1) if mask2 is not None else np.ones(N, dtype=np.bool_)
    active = nonempty & ~ignored
    wt = cw[tsafe] if cw is not None else np.ones(N)
    a, b, wsum, count = _scales("index", wt, active, reduction, z)
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
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        zb = buf[: (r1 - r0) * V].reshape(r1 - r0, V)
        hb = h2[r0:r1]
        np.matmul(hb, W2.T, out=zb)
        if bvec is not None:
            zb += bvec
        if pre_T is not None:
            with np.errstate(over="ignore", under="ignore"):
                zb /= pre_T
        mb = mask2[r0:r1] if mask2 is not None else np.broadcast_to(ones_mask, zb.shape)
        k.ce_index_rows(
            zb, tsafe[r0:r1], mb, mask2 is not None, invT, eps, z, a[r0:r1], b[r0:r1],
            active[r0:r1], True, zb, ce[r0:r1], lse[r0:r1], True, _lim(compute),
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
    part, zp = _row_losses("index", wt, ce, lse, active, z)
    loss = _compose(part, zp, reduction, wsum, count, hshape[:-1], out_dtype)
    return loss, _grads_out(d_h, d_W, d_b, hshape, out_dtype)


# ---------------------------------------------------------------------------
# Max-margin and hinge losses
# ---------------------------------------------------------------------------


def _reduce(mat, reduction, dtype):
    if reduction == "none":
        return mat.astype(dtype)
    if reduction == "sum":
        return _scalar(np.sum(mat, dtype=np.float64), dtype)
    return _scalar(np.mean(mat, dtype=np.float64) if mat.size else 0.0, dtype)


def max_margin_loss_split(
    positive, negatives, /, *, margin=1.0, reduction="sum", return_grad=False
):
    r"""Max-margin (hinge ranking) loss with separate positive and negative scores.

    .. math::

        L = \sum_{b} \sum_{j} \max(0,\ \text{margin} - s^{+}_b + s^{-}_{bj})

    Parameters
    ----------
    positive : array_like, shape (..., B)
        The score of each positive example.
    negatives : array_like, shape (..., B, N)
        The scores of its ``N`` negative samples.
    margin : float, default 1.0
    reduction : {"sum", "mean", "none"}, default "sum"
        ``"mean"`` averages over the ``B * N`` pairs; ``"none"`` returns the
        ``[..., B, N]`` matrix of pair losses.
    return_grad : bool, default False
        Also return ``(d_positive, d_negatives)``.  At the kink (a pair loss of
        exactly 0) the subgradient 0 is used, as PyTorch's ``relu``.

    Returns
    -------
    loss, or (loss, (d_positive, d_negatives))

    Notes
    -----
    Peak extra memory: two arrays of the negatives' shape.

    Examples
    --------
    >>> from softmaxkit import max_margin_loss_split
    >>> round(float(max_margin_loss_split([0.5, 1.0], [[0.2, -0.1], [-0.5, 0.3]])), 12)
    1.4
    """
    pos = as_input_array(positive, "positive")
    neg = as_input_array(negatives, "negatives")
    reduction = check_reduction(reduction)
    mg = _margin(margin)
    if neg.ndim < 1 or pos.shape != neg.shape[:-1]:
        raise ValueError(
            f"negatives must have shape positive.shape + (N,); got positive {pos.shape} "
            f"and negatives {neg.shape}"
        )
    _, dtype = resolve_dtype(np.result_type(pos.dtype, neg.dtype), None)
    p64 = pos.astype(np.float64)
    n64 = neg.astype(np.float64)
    with np.errstate(over="ignore"):  # past 1.8e308: +inf, the rounded value
        viol = mg - p64[..., None] + n64
    mat = np.maximum(viol, 0.0)
    mat = np.where(np.isnan(viol), np.nan, mat)
    loss = _reduce(mat, reduction, dtype)
    if not return_grad:
        return loss
    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / mat.size if mat.size else 0.0
    with np.errstate(invalid="ignore"):
        gn = np.where(viol > 0, scale, 0.0)
    gn = np.where(np.isnan(viol), np.nan, gn)
    gp = -gn.sum(axis=-1)
    return loss, (gp.astype(dtype), gn.astype(dtype))


def _margin(margin):
    return check_real("margin", margin, -np.inf)


def max_margin_loss(scores, /, num_negatives, *, margin=1.0, reduction="sum", return_grad=False):
    r"""Max-margin loss for the interleaved layout ``[pos, neg_1..neg_N, pos, ...]``.

    ``scores`` holds ``B`` groups of ``N + 1`` scores along its last axis, the
    positive first in each group (the layout of the seed question): the loss is
    :func:`max_margin_loss_split` of ``scores[..., ::N+1]`` and the others,

    .. math::

        L = \sum_{b=0}^{B-1} \sum_{j=1}^{N} \max(0,\ \text{margin} - s_{b(N+1)} + s_{b(N+1)+j})

    Parameters
    ----------
    scores : array_like, shape (..., B * (N + 1))
    num_negatives : int >= 0
        ``N``; the last axis' length must be divisible by ``N + 1``.
    margin, reduction, return_grad
        As for :func:`max_margin_loss_split`; the gradient has the shape of ``scores``.

    Returns
    -------
    loss : float or ndarray
        The reduced loss (per group with ``reduction="none"``); with ``return_grad``
        the pair ``(loss, grad)``.

    Notes
    -----
    Peak extra memory: two float64 arrays of the negatives' shape (``B·N`` values),
    plus the gradient when asked for.

    Examples
    --------
    >>> from softmaxkit import max_margin_loss
    >>> loss, grad = max_margin_loss([0.5, 0.2, -0.1, 1.0, -0.5, 0.3], 2, return_grad=True)
    >>> round(float(loss), 12), grad.tolist()
    (1.4, [-2.0, 1.0, 1.0, -1.0, 0.0, 1.0])
    """
    if _foreign(scores) == "torch":
        return _torch_route("max_margin_loss", locals())
    s = as_input_array(scores, "scores")
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int | np.integer):
        raise TypeError(f"num_negatives must be an int; got {num_negatives!r}")
    nn = int(num_negatives)
    if nn < 0:
        raise ValueError(f"num_negatives must be >= 0; got {nn}")
    if s.ndim < 1:
        raise ValueError("scores must have at least one dimension; got a 0-d array")
    L = s.shape[-1]
    if L % (nn + 1):
        raise ValueError(
            f"scores' last axis has length {L}, which is not a multiple of "
            f"num_negatives + 1 = {nn + 1} (B groups of one positive and {nn} negatives)"
        )
    g = s.reshape(*s.shape[:-1], L // (nn + 1), nn + 1)
    res = max_margin_loss_split(
        g[..., 0], g[..., 1:], margin=margin, reduction=reduction, return_grad=return_grad
    )
    if not return_grad:
        return res
    loss, (gp, gn) = res
    grad = np.concatenate([gp[..., None], gn], axis=-1).reshape(s.shape)
    return loss, grad


def multiclass_hinge_loss(
    logits,
    target,
    /,
    *,
    margin=1.0,
    p=1,
    weight=None,
    reduction="mean",
    kind="weston_watkins",
    axis=-1,
    return_grad=False,
):
    r"""Multiclass hinge loss: Weston–Watkins (PyTorch's ``multi_margin_loss``) or Crammer–Singer.

    .. math::

        \text{weston\_watkins:}\quad \ell = \frac{w_y}{C}\sum_{j \ne y}
            \max(0, \text{margin} - x_y + x_j)^p

        \text{crammer\_singer:}\quad \ell = w_y \max\big(0,\ \text{margin}
            + \max_{j \ne y} x_j - x_y\big)^p

    Parameters
    ----------
    logits : array_like, classes along ``axis``
    target : array_like of int
        Class indices, the logits' shape without ``axis``.
    margin : float, default 1.0
    p : {1, 2}, default 1
    weight : array_like, shape (C,), optional
        Per-class weights ``w_y`` (of the target class).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of samples (PyTorch's convention for
        ``multi_margin_loss``, not the sum of the weights).
    kind : {"weston_watkins", "crammer_singer"}
        Crammer–Singer with ``margin=1, p=1`` is optax's ``multiclass_hinge_loss``
        and scikit-learn's multiclass ``hinge_loss``.
    axis : int, default -1
    return_grad : bool, default False
        Also return the (sub)gradient w.r.t. the logits; 0 at the kinks; for
        Crammer–Singer the first maximising ``j`` gets it.

    Returns
    -------
    loss : float or ndarray
        The reduced loss (per sample with ``reduction="none"``); with ``return_grad``
        the pair ``(loss, grad)``, ``grad`` of the logits' shape.

    Notes
    -----
    A Numba row kernel, float64 arithmetic for every dtype, rows in parallel:
    Weston–Watkins one pass over the row (two with the gradient), Crammer–Singer one
    pass for the maximum and a search for the first maximising class.

    Peak extra memory: the gradient (when asked for) and O(rows) float64 per-sample
    values; plus a copy of the logits when the class axis is not the last,
    contiguous one or the logits are read-only.

    Examples
    --------
    >>> from softmaxkit import multiclass_hinge_loss
    >>> x = [[0.1, 0.2, 0.4, 0.8]]
    >>> round(float(multiclass_hinge_loss(x, [3])), 6)  # PyTorch's doc example
    0.325
    >>> round(float(multiclass_hinge_loss(x, [3], kind="crammer_singer")), 6)
    0.6
    """
    if _foreign(logits) == "torch":
        return _torch_route("multiclass_hinge_loss", locals())
    arr = as_input_array(logits, "logits")
    ax = class_axis(axis, arr.ndim)
    reduction = check_reduction(reduction)
    mg = _margin(margin)
    if p not in (1, 2) or isinstance(p, bool):
        raise ValueError(f"p must be 1 or 2; got {p!r}")
    kinds = ("weston_watkins", "crammer_singer")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}; got {kind!r}")
    C = arr.shape[ax]
    cw = class_weights(weight, C)
    tk, tgt = parse_target(target, arr.shape, ax, None)
    if tk != "index":
        raise TypeError("multiclass_hinge_loss takes class-index targets")
    compute, dtype = resolve_dtype(arr.dtype, None)
    moved = np.moveaxis(arr, ax, -1)
    batch = moved.shape[:-1]
    R = math.prod(batch)  # (reshape(-1, C) fails for C == 0)
    x2 = np.ascontiguousarray(moved.reshape(R, C), dtype=compute)
    if not x2.flags.writeable:
        x2 = x2.copy()  # read-only arrays are another Numba type (another compile)
    t2 = np.ascontiguousarray(tgt.reshape(-1), dtype=np.int64)
    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / R if R else 0.0
    wt = cw[t2] if cw is not None else np.ones(R)
    per = np.empty(R)
    grad = np.empty(moved.shape, dtype=compute) if return_grad else None
    g2 = grad.reshape(R, C) if return_grad else np.empty((R, 0), dtype=compute)
    if R:
        _k().hinge_rows(
            x2, t2, wt, float(mg), int(p), kind == "crammer_singer", bool(return_grad),
            scale, per, g2,
        )  # fmt: skip
    if reduction == "none":
        loss: Any = per.reshape(batch).astype(dtype)
        loss = loss[()] if loss.ndim == 0 else loss
    elif reduction == "sum":
        loss = _scalar(np.sum(per), dtype)
    else:
        loss = _scalar(np.mean(per) if R else 0.0, dtype)
    if not return_grad:
        return loss
    return loss, np.moveaxis(grad.astype(dtype, copy=False), -1, ax)
