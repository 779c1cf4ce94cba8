"""``linear_cross_entropy``: cross-entropy of ``hidden @ W.T + b`` without the logits.

Public layer (the public path is ``softmaxkit.losses.linear_cross_entropy``, also
``softmaxkit.linear_cross_entropy``): validate, then walk the vocabulary in chunks
(the loss alone, or gradients with ``strategy="vocab"``) or the rows in blocks
(``_lce_rows``, gradients).  The per-token outputs go to ``softmaxkit._vocab``.
Maths and memory in ``docs/losses.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Iterator
from typing import Any, Literal, Unpack, overload

import numpy as np

from . import _vocab
from ._core import ce as _ce
from ._core import coldstart
from ._core.blas import matmul
from ._core.losscommon import class_weights, parse_target
from ._core.losskw import LCEAny, LCEKeywords, LCEOutputs
from ._core.routes import foreign, route
from ._core.typing import Array, ArrayLike, Reduction
from ._core.validate import resolve_dtype, validate_temperature, validate_where
from ._vocab import CrossEntropyOutput

__all__ = ["linear_cross_entropy"]


LCEGrads = tuple[Array, Array, Array | None]  # (d_hidden, d_weight, d_bias or None)

# Which BLAS runs the matmuls: NumPy's (default) or PyTorch's (set by the
# ``softmaxkit::linear_cross_entropy`` operator through :func:`torch_blas`).
_BLAS: contextvars.ContextVar[str] = contextvars.ContextVar("softmaxkit_lce_blas", default="numpy")


@contextlib.contextmanager
def torch_blas() -> Iterator[None]:
    """Run this thread's ``linear_cross_entropy`` matmuls with PyTorch's BLAS."""
    token = _BLAS.set("torch")
    try:
        yield
    finally:
        _BLAS.reset(token)


def _mm(a: np.ndarray, b: np.ndarray, out: np.ndarray, acc: bool = False) -> None:
    """``out = a @ b`` (``out += a @ b`` with ``acc``), with the selected BLAS."""
    if _BLAS.get() == "torch":
        import torch

        ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        if acc:
            to.addmm_(ta, tb)
        else:
            torch.mm(ta, tb, out=to)
        return
    if acc:
        out += matmul(a, b)
    else:
        matmul(a, b, out=out)


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
    if mask2 is not None:
        from ._kernels.view import unit_last  # (imports Numba: not at module level)

        mask2 = unit_last(mask2)  # the kernels read mask rows with a unit stride
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
        _mm(h2, W2[v0:v1].T, zc)
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
    torch_gemm = _BLAS.get() == "torch"
    scratch = np.empty((0 if torch_gemm else N, d), dtype=compute)
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
        if torch_gemm:
            _mm(zc, W2[v0:v1], d_h, acc=True)
        else:
            matmul(zc, W2[v0:v1], out=scratch)
            d_h += scratch
        _mm(zc.T, h2, d_W[v0:v1])
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
    tmp = np.empty(0 if _BLAS.get() == "torch" else slab * d, dtype=compute)
    ce = np.empty(N)
    lse = np.empty(N)
    torch_gemm = _BLAS.get() == "torch"
    P = _split_threads(N, V, d, rows) if torch_gemm else 1
    if P > 1:
        _rows_split(P, h2, W2, bvec, mask2, tsafe, a, b, active, invT, eps, z, pre_T,
                    buf.reshape(rows, V), d_h, d_W, d_b, ce, lse)  # fmt: skip
    for r0 in range(0, N if P == 1 else 0, rows):
        r1 = min(N, r0 + rows)
        zb = buf[: (r1 - r0) * V].reshape(r1 - r0, V)
        hb = h2[r0:r1]
        _mm(hb, W2.T, zb)
        if bvec is not None:
            zb += bvec
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
        if torch_gemm:
            # PyTorch's BLAS: d_h block = G W; d_W += G^T h accumulated by the
            # matmul itself (beta = 1: no temporary, no add pass)
            _mm(zb, W2, d_h[r0:r1])
            _mm(zb.T, hb, d_W, acc=r0 > 0)
        else:
            # d_h block = G W, computed as (W^T G^T)^T: OpenBLAS was measured ~3x
            # faster on this transposed form of the small-output, long-K product
            d_h[r0:r1] = matmul(W2.T, zb.T).T
            for v0 in range(0, V, slab):
                v1 = min(V, v0 + slab)
                if r0 == 0:
                    # first block: straight into d_W (no zero fill, no add pass); in
                    # slabs too, as one [V, d] product was measured ~10 % slower
                    matmul(zb[:, v0:v1].T, hb, out=d_W[v0:v1])
                    continue
                t = tmp[: (v1 - v0) * d].reshape(v1 - v0, d)
                matmul(zb[:, v0:v1].T, hb, out=t)
                d_W[v0:v1] += t
        if d_b is not None:
            if r0 == 0:
                np.sum(zb, axis=0, out=d_b)
            else:
                d_b += zb.sum(axis=0)
    part, zp = _ce.row_losses("index", wt, ce, lse, active, z)
    loss = _ce.compose(part, zp, reduction, wsum, count, hshape[:-1], out_dtype)
    return loss, _grads_out(d_h, d_W, d_b, hshape, out_dtype)


# Below this many multiply-adds per row block (rows * V * d) the split's thread
# hand-offs are not worth it: one thread, or PyTorch's own threading, runs the block.
_SPLIT_MIN = 1 << 24


def _split_threads(N: int, V: int, d: int, rows: int) -> int:
    """Threads for :func:`_rows_split`: PyTorch's intra-op count, at most ``V``; 1 when
    the blocks are small (or PyTorch uses one thread)."""
    import torch

    P = min(int(torch.get_num_threads()), V)
    return P if P > 1 and min(rows, N) * V * d >= _SPLIT_MIN else 1


def _rows_split(
    P: int,
    h2: np.ndarray,
    W2: np.ndarray,
    bvec: np.ndarray | None,
    mask2: np.ndarray | None,
    tsafe: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    active: np.ndarray,
    invT: float,
    eps: float,
    z: float,
    pre_T: float | None,
    zbuf: np.ndarray,
    d_h: np.ndarray,
    d_W: np.ndarray,
    d_b: np.ndarray | None,
    ce: np.ndarray,
    lse: np.ndarray,
) -> None:
    """:func:`_lce_rows`' block loop on ``P`` threads, each owning a slice of the
    vocabulary, with one-thread PyTorch matmuls.

    Per block of rows: (A) thread ``i`` forms its logits columns ``z[:, V_i] = h W_i^T``;
    barrier; (B) each thread runs the fused cross-entropy kernel over its share of the
    block's rows (full rows: the ``lse`` needs every class) and sums its rows of the
    previous block's ``d_h`` partials; barrier; (C) thread ``i`` forms its partial
    ``G[:, V_i] W_i`` of ``d_h`` and accumulates ``d_W[V_i] += G[:, V_i]^T h``.  Phase C
    and the next block's phase A touch only the thread's own columns, so two barriers
    per block; PyTorch's threaded matmuls (a fork/join each, 3 per block, and the
    kernel's) were measured much slower on small blocks of the loaded 2-core VM.
    ``zbuf`` is the ``[rows, V]`` buffer (a fixed row stride, so a thread's columns
    stay in place for the last, shorter block).  Writes ``d_h``, ``d_W``, ``d_b``,
    ``ce``, ``lse``.
    """
    import torch

    N, d = h2.shape
    V = W2.shape[0]
    rows = zbuf.shape[0]
    kern = _ce.kernels().ce_index_rows.kernel
    lim = _ce.lim(h2.dtype)
    vb = [V * i // P for i in range(P + 1)]
    part = np.empty((P, rows, d), dtype=h2.dtype)
    blocks = [(r0, min(N, r0 + rows)) for r0 in range(0, N, rows)]
    ones = np.ones((1, 1), dtype=np.bool_)
    th, tW, tdW = torch.from_numpy(h2), torch.from_numpy(W2), torch.from_numpy(d_W)
    barrier = threading.Barrier(P)

    def sum_rows(i: int, r0: int, r1: int) -> None:
        q0, q1 = (r1 - r0) * i // P, (r1 - r0) * (i + 1) // P
        np.sum(part[:, q0:q1], axis=0, out=d_h[r0 + q0 : r0 + q1])

    def blocks_of(i: int) -> None:
        torch.set_num_threads(1)  # this thread's matmuls (thread-local setting)
        v0, v1 = vb[i], vb[i + 1]
        Wi = tW[v0:v1]
        prev = None
        for r0, r1 in blocks:
            R = r1 - r0
            zb = zbuf[:R]
            zi = zb[:, v0:v1]
            torch.mm(th[r0:r1], Wi.T, out=torch.from_numpy(zi))
            if bvec is not None:
                zi += bvec[v0:v1]
            if pre_T is not None:
                with np.errstate(over="ignore", under="ignore"):
                    zi /= pre_T
            barrier.wait()
            if prev is not None:
                sum_rows(i, *prev)
            q0, q1 = R * i // P, R * (i + 1) // P
            mb = mask2[r0:r1] if mask2 is not None else np.broadcast_to(ones, zb.shape)
            kern(
                zb, tsafe[r0:r1], mb, mask2 is not None, invT, eps, z, a[r0:r1], b[r0:r1],
                active[r0:r1], True, zb, ce[r0:r1], lse[r0:r1], True, lim, q0, q1,
            )  # fmt: skip
            if pre_T is not None:
                with np.errstate(over="ignore", under="ignore"):
                    zb[q0:q1] /= pre_T
            barrier.wait()
            tz = torch.from_numpy(zi)
            torch.mm(tz, Wi, out=torch.from_numpy(part[i, :R]))
            if r0 == 0:
                torch.mm(tz.T, th[r0:r1], out=tdW[v0:v1])
            else:
                tdW[v0:v1].addmm_(tz.T, th[r0:r1])
            if d_b is not None:
                if r0 == 0:
                    np.sum(zi, axis=0, out=d_b[v0:v1])
                else:
                    d_b[v0:v1] += zi.sum(axis=0)
            prev = (r0, r1)
        barrier.wait()
        if prev is not None:
            sum_rows(i, *prev)

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            blocks_of(i)
        except BaseException as e:
            errors.append(e)
            barrier.abort()  # the other threads raise BrokenBarrierError, not hang

    # compile (or raise ColdKernel) on this thread first, before any thread waits
    kern(zbuf[:0], tsafe[:0], ones, False, invT, eps, z, a[:0], b[:0], active[:0], True,
         zbuf[:0], ce[:0], lse[:0], True, lim, 0, 0)  # fmt: skip
    n_main = torch.get_num_threads()
    workers = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(1, P)]
    try:
        for w in workers:
            w.start()
        guarded(0)
    finally:
        for w in workers:
            w.join()
        # set_num_threads(1) on a thread also sets PyTorch's default for new threads:
        # put back this thread's count (and that default)
        torch.set_num_threads(n_main)
    if errors:  # the first error that is not a consequence of another's abort
        broken = threading.BrokenBarrierError
        raise next((e for e in errors if not isinstance(e, broken)), errors[0])
