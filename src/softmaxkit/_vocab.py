"""Per-token vocabulary outputs of ``cross_entropy`` / ``linear_cross_entropy``.

Public-layer helpers behind the keywords ``return_lse``, ``return_logprob``,
``return_entropy``, ``return_argmax``, ``topk``, ``softcap``, a per-token
``temperature`` array, ``entropy_weight`` and ``logprob_weight``.  Every output
comes from one pass over each row of logits (``_kernels/vocab.py``); formulas and
edge cases in ``docs/vocab_outputs.md``.
"""

from __future__ import annotations

import math
import numbers
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ._core import coldstart
from ._core.blas import matmul
from ._core.ce import (
    CHUNK_BYTES,
    F64,
    compose,
    grad_out,
    linear_inputs,
    linear_options,
    logit_blocks,
    loss_options,
    row_losses,
    scales,
)
from ._core.ce import (
    kernels as ce_kernels,
)
from ._core.losscommon import check_real, class_axis, class_weights, parse_target
from ._core.routes import foreign
from ._core.typing import Array, FloatArray, IntArray
from ._core.validate import all_true, as_input_array, resolve_dtype, validate_where
from .drivers.eager import rows_view

__all__ = ["CrossEntropyOutput"]


class CrossEntropyOutput(NamedTuple):
    """Result of ``cross_entropy`` / ``linear_cross_entropy`` when a ``return_*`` flag
    or ``topk`` is given.  Unrequested fields are None; per-token fields have the
    target's shape (``topk_*``: that shape plus ``(K,)``).

    Fields: ``loss`` (as without flags, following ``reduction``); ``lse`` (the
    log-normaliser of ``v = softcap(x) / T``); ``logprob`` (``log p_t = v_t - lse``
    of the target); ``entropy`` (``-sum_j p_j log p_j``); ``argmax`` (int64, first
    maximising class, -1 for a row with no included class); ``topk_logprobs`` and
    ``topk_ids`` (the K largest log-probabilities, descending, ties by index);
    ``grad`` (with ``return_grad``: the logits' gradient for ``cross_entropy``, the
    tuple ``(d_hidden, d_weight, d_bias)`` for ``linear_cross_entropy``).
    """

    loss: Array
    lse: FloatArray | None = None
    logprob: FloatArray | None = None
    entropy: FloatArray | None = None
    argmax: IntArray | None = None
    topk_logprobs: FloatArray | None = None
    topk_ids: IntArray | None = None
    grad: Array | tuple[Array, Array, Array | None] | None = None


NEW_KEYS = (
    "return_lse",
    "return_logprob",
    "return_entropy",
    "return_argmax",
    "topk",
    "softcap",
    "entropy_weight",
    "logprob_weight",
)


def _flag(name: str, v: Any) -> bool:
    if not isinstance(v, bool | np.bool_):
        raise TypeError(f"{name} must be a bool; got {v!r}")
    return bool(v)


def requested(args: dict[str, Any]) -> bool:
    """True when a call uses an option of this module (then it takes this path)."""
    if any(_flag(k, args[k]) for k in NEW_KEYS[:4]):
        return True
    if args["topk"] is not None or args["entropy_weight"] is not None:
        return True
    if args["logprob_weight"] is not None:
        return True
    sc = args["softcap"]
    if sc is not None and not (isinstance(sc, numbers.Real) and float(sc) == 0.0):
        return True
    t = args["temperature"]
    return not (isinstance(t, numbers.Real) or (isinstance(t, np.ndarray) and t.ndim == 0))


def strip(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` without this module's keywords (for the framework routes)."""
    return {k: v for k, v in args.items() if k not in NEW_KEYS}


def _no_foreign(name: str, x: Any) -> None:
    f = foreign(x)
    if f is not None:
        raise TypeError(
            f"{name}: return_* / topk / softcap / per-token temperature / entropy_weight / "
            f"logprob_weight take NumPy arrays; got a {f} array"
        )


def _per_token(
    name: str, value: Any, batch: tuple[int, ...], R: int, *, positive: bool = False
) -> F64:
    """A scalar or an array broadcastable to the token shape ``batch`` -> float64 [R]."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a real number or an array of reals; got {value!r}")
    a = np.asarray(value)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real numbers; got dtype {a.dtype}")
    try:
        a = np.broadcast_to(a.astype(np.float64), batch)
    except ValueError:
        raise ValueError(
            f"{name} must be a scalar or have the tokens' shape {batch} (one value per "
            f"token); got shape {a.shape}"
        ) from None
    a = a.reshape(R)
    bad = ~np.isfinite(a) | (a <= 0) if positive else ~np.isfinite(a)
    if bad.any():
        j = int(np.argmax(bad))
        need = "finite and > 0" if positive else "finite"
        raise ValueError(f"{name} must be {need}; token {j} has {a[j]!r}")
    return np.ascontiguousarray(a)


def _topk(topk: Any, V: int) -> int:
    if topk is None:
        return 0
    if isinstance(topk, bool) or not isinstance(topk, numbers.Integral):
        raise TypeError(f"topk must be a positive int or None; got {topk!r}")
    if not 1 <= int(topk) <= V:
        raise ValueError(f"topk must be in [1, {V}] (the number of classes); got {topk}")
    return int(topk)


def _softcap(softcap: Any) -> float:
    if softcap is None:
        return 0.0
    return check_real("softcap", softcap, 0.0)  # 0: no cap


def _k() -> ModuleType:
    from ._kernels import vocab

    return vocab


class _Opts:
    """Validated options shared by both entry points."""

    def __init__(self, a: dict[str, Any], batch: tuple[int, ...], R: int, V: int) -> None:
        self.reduction, self.eps, self.z, self.ii = loss_options(
            a["reduction"], a["label_smoothing"], a["z_loss"], a["ignore_index"]
        )
        self.T = _per_token("temperature", a["temperature"], batch, R, positive=True)
        self.cap = _softcap(a["softcap"])
        self.k = _topk(a["topk"], V)
        ew, lw = a["entropy_weight"], a["logprob_weight"]
        self.ew = _per_token("entropy_weight", ew, batch, R) if ew is not None else None
        self.lw = _per_token("logprob_weight", lw, batch, R) if lw is not None else None
        self.flags = {k: _flag(k, a[k]) for k in NEW_KEYS[:4]}
        self.tuple_out = any(self.flags.values()) or self.k > 0
        self.cw = class_weights(a["weight"], V)


def _prepare(o: _Opts, tgt: np.ndarray, nonempty: Any, R: int) -> tuple[Any, ...]:
    """Per-row targets, activity and the gradient coefficients."""
    t1 = tgt.reshape(-1)
    ignored = (t1 == o.ii) if o.ii is not None else np.zeros(R, dtype=np.bool_)
    active = nonempty & ~ignored
    tsafe = np.ascontiguousarray(np.where(ignored, 0, t1), dtype=np.int64)
    wt = o.cw[np.where(active, tsafe, 0)] if o.cw is not None else np.ones(R)
    a, b, wsum, count = scales("index", wt, active, o.reduction)
    be = o.ew * b if o.ew is not None else np.zeros(R)
    al = o.lw * b if o.lw is not None else np.zeros(R)
    return tsafe, ignored, active, wt, (a, b, wsum, count), be, al


def _run(k: ModuleType, x2: np.ndarray, mask2: np.ndarray | None, o: _Opts, tsafe: np.ndarray,
         active: np.ndarray, want_grad: bool, coef: tuple[Any, ...], be: F64, al: F64,
         grad2: np.ndarray, st: F64, amax: np.ndarray, topv: F64,
         topi: np.ndarray) -> None:  # fmt: skip
    from ._kernels.view import readonly  # (k, a kernel module, has imported Numba)

    a, b = coef[0], coef[1]
    mk = mask2 if mask2 is not None else all_true(x2.shape)
    args = (
        readonly(x2), mk, mask2 is not None, readonly(o.T), o.cap, tsafe, active, o.eps, o.k, st,
        amax, topv, topi, want_grad, np.ascontiguousarray(2.0 * o.z * b), np.ascontiguousarray(a),
        np.ascontiguousarray(be), np.ascontiguousarray(al), grad2, False,
    )  # fmt: skip
    k.vocab_rows(*args)  # the mask reaches the kernel strided (over_rows(strided=))


def _finish(o: _Opts, st: F64, amax: np.ndarray, topv: F64, topi: np.ndarray, ignored: np.ndarray,
            active: np.ndarray, wt: F64, coef: tuple[Any, ...], batch: tuple[int, ...],
            out_dtype: Any, grad: Any) -> Any:  # fmt: skip
    k = _k()
    wsum, count = coef[2], coef[3]
    ce = st[:, k.CE]
    lse = st[:, k.LSE]
    lp = np.where(ignored, 0.0, st[:, k.LP])
    H = st[:, k.ENT]
    part, zp = row_losses("index", wt, ce, lse, active, o.z)
    with np.errstate(invalid="ignore", over="ignore"):
        if o.ew is not None:  # (a 0 weight adds nothing, even to a NaN/inf entropy)
            zp = zp + np.where(active & (o.ew != 0), o.ew * np.where(active, H, 0.0), 0.0)
        if o.lw is not None:
            zp = zp + np.where(active & (o.lw != 0), o.lw * np.where(active, lp, 0.0), 0.0)
    loss = compose(part, zp, o.reduction, wsum, count, batch, out_dtype)
    if not o.tuple_out:
        return loss if grad is None else (loss, grad)
    f = o.flags

    def per(v: Any, dt: Any = out_dtype) -> Any:
        r = np.asarray(v).reshape(batch).astype(dt)
        return r[()] if r.ndim == 0 else r

    return CrossEntropyOutput(
        loss=loss,
        lse=per(lse) if f["return_lse"] else None,
        logprob=per(lp) if f["return_logprob"] else None,
        entropy=per(H) if f["return_entropy"] else None,
        argmax=per(amax, np.int64) if f["return_argmax"] else None,
        topk_logprobs=topv.reshape(*batch, o.k).astype(out_dtype) if o.k else None,
        topk_ids=topi.reshape(*batch, o.k) if o.k else None,
        grad=grad,
    )


def _outputs(R: int, k: int) -> tuple[F64, np.ndarray, F64, np.ndarray]:
    kk = _k()
    return (
        np.empty((R, kk.NST)),
        np.empty(R, dtype=np.int64),
        np.empty((R, k)),
        np.empty((R, k), dtype=np.int64),
    )


def cross_entropy(args: dict[str, Any]) -> Any:
    """``softmaxkit.cross_entropy`` with this module's options (``args``: its locals)."""
    a = args
    _no_foreign("cross_entropy", a["logits"])
    arr = as_input_array(a["logits"], "logits")
    ax = class_axis(a["axis"], arr.ndim)
    V = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    R = math.prod(batch)
    o = _Opts(a, batch, R, V)
    kind, tgt = parse_target(a["target"], arr.shape, ax, o.ii)
    if kind != "index":
        raise TypeError(
            "the per-token outputs, softcap, per-token temperature and entropy/logprob "
            f"weights take class-index targets of shape {batch}; got probabilities"
        )
    mask = validate_where(a["where"], arr.shape)
    compute, out_dtype = resolve_dtype(arr.dtype, None)
    out = a["out"]
    grad_out(out, a["return_grad"], arr.shape, out_dtype)
    from ._kernels.view import readonly  # (imports Numba: not at module level)

    # the kernels take x2 and the mask read-only: no copy of a read-only input
    x2 = readonly(np.ascontiguousarray(rows_view(arr, (ax,)), dtype=compute))
    mask2 = np.ascontiguousarray(rows_view(mask, (ax,))) if mask is not None else None
    mask2 = None if mask2 is None else readonly(mask2)
    # rows with an included entry above -inf, each scanned up to its first one (a
    # NumPy ``(x2 != -inf).any(axis=1)`` made a bool temporary of the logits' shape
    # and read them whole)
    nonempty = np.zeros(R, np.bool_)
    if R and V:
        mk = mask2 if mask2 is not None else all_true(x2.shape)
        ce_kernels().row_nonempty(x2, mk, mask2 is not None, nonempty)
    tsafe, ignored, active, wt, coef, be, al = _prepare(o, tgt, nonempty, R)
    want_grad = bool(a["return_grad"])
    grad2 = np.empty(x2.shape if want_grad else (R, 0), dtype=compute)
    st, amax, topv, topi = _outputs(R, o.k)
    if R and V:
        try:
            with coldstart.allow(x2.size):
                _run(_k(), x2, mask2, o, tsafe, active, want_grad, coef, be, al, grad2, st,
                     amax, topv, topi)  # fmt: skip
        except coldstart.ColdKernel:
            # the kernel compiles in the background: its float64 NumPy twin
            from ._core.vocab64 import vocab_rows_float64

            vocab_rows_float64(
                x2, mask2, o.T, o.cap, tsafe, active, o.eps, o.k, st, amax, topv, topi,
                want_grad, 2.0 * o.z * coef[1], coef[0], be, al, grad2,
            )  # fmt: skip
    grad = None
    if want_grad:
        if out is None:
            out = np.empty(arr.shape, dtype=out_dtype)
        np.moveaxis(out, ax, -1)[...] = grad2.reshape(*batch, V)
        grad = out
    return _finish(o, st, amax, topv, topi, ignored, active, wt, coef, batch, out_dtype, grad)


def linear_cross_entropy(args: dict[str, Any]) -> Any:
    """``softmaxkit.linear_cross_entropy`` with this module's options.

    Row blocks: each block of ``rows`` tokens gets its logits ``[rows, V]`` from one
    matmul (``rows * V`` values, 32 MiB by default, as the loss-alone buffer); the
    kernel reads them once for every output and, with ``return_grad``, turns them
    into ``dlogits`` in place; then ``d_h[block] = G W`` and ``d_W += G^T h[block]``.
    """
    a = args
    _no_foreign("linear_cross_entropy", a["hidden"])
    h, W = linear_inputs(a["hidden"], a["linear_weight"])
    V, d = W.shape
    batch = h.shape[:-1]
    N = math.prod(batch)
    o = _Opts(a, batch, N, V)
    logits_shape = (*batch, V)
    kind, tgt = parse_target(a["target"], logits_shape, len(logits_shape) - 1, o.ii)
    if kind != "index":
        raise TypeError(
            f"linear_cross_entropy takes class-index targets of shape {batch}; got "
            f"probabilities of shape {logits_shape}"
        )
    mask = validate_where(a["where"], logits_shape)
    compute, out_dtype = resolve_dtype(np.result_type(h.dtype, W.dtype), None)
    h2 = np.ascontiguousarray(h.reshape(N, d), dtype=compute)
    W2 = np.ascontiguousarray(W, dtype=compute)
    cs, bvec = linear_options(a["strategy"], a["chunk_size"], a["bias"], V, compute)
    mask2 = mask.reshape(N, V) if mask is not None else None
    if cs is None:
        rows = max(1, CHUNK_BYTES // max(1, V * compute.itemsize))
    else:
        rows = cs  # rows per block on this path
    rows = max(1, min(rows, N))
    want_grad = bool(a["return_grad"])
    # "nonempty" needs the logits: a row with a mask is empty when nothing is
    # included; an unmasked row of finite h W^T + b never is (a -inf row of logits
    # from infinite weights is handled by the kernel as lse = -inf)
    nonempty = mask2.any(axis=1) if mask2 is not None else np.ones(N, dtype=np.bool_)
    tsafe, ignored, active, wt, coef, be, al = _prepare(o, tgt, nonempty, N)
    st, amax, topv, topi = _outputs(N, o.k)
    buf = np.empty(rows * V, dtype=compute)
    if want_grad:
        d_h = np.empty((N, d), dtype=compute)
        d_W = np.zeros((V, d), dtype=compute)
        d_b = np.zeros(V, dtype=compute) if bvec is not None else None
        slab = max(1, min(V, rows * V // max(1, 4 * d)))  # scratch <= 1/4 of the buffer
        tmp = np.empty(slab * d, dtype=compute)
    kern = _k()
    from ._kernels.view import readonly

    b2z = np.ascontiguousarray(2.0 * o.z * coef[1])
    ca = np.ascontiguousarray(coef[0])
    for r0, r1, zb, hb in logit_blocks(h2, W2, bvec, rows, buf):
        mb = mask2[r0:r1] if mask2 is not None else None
        mk = mb if mb is not None else all_true(zb.shape)
        kargs = (
            readonly(zb), mk, mb is not None, readonly(o.T[r0:r1]), o.cap, tsafe[r0:r1],
            active[r0:r1], o.eps, o.k, st[r0:r1], amax[r0:r1], topv[r0:r1], topi[r0:r1], want_grad,
            b2z[r0:r1], ca[r0:r1], be[r0:r1], al[r0:r1], zb if want_grad else buf[:0].reshape(0, 0),
            want_grad,
        )  # fmt: skip
        kern.vocab_rows(*kargs)
        if want_grad:
            matmul(zb, W2, out=d_h[r0:r1])
            for v0 in range(0, V, slab):  # d_W += G^T h, no [V, d] temporary
                v1 = min(V, v0 + slab)
                t = tmp[: (v1 - v0) * d].reshape(v1 - v0, d)
                matmul(zb[:, v0:v1].T, hb, out=t)
                d_W[v0:v1] += t
            if d_b is not None:
                d_b += zb.sum(axis=0)
    grad = None
    if want_grad:
        grad = (
            d_h.reshape(h.shape).astype(out_dtype, copy=False),
            d_W.astype(out_dtype, copy=False),
            d_b.astype(out_dtype, copy=False) if d_b is not None else None,
        )
    return _finish(o, st, amax, topv, topi, ignored, active, wt, coef, batch, out_dtype, grad)
