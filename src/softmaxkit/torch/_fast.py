"""Eager fast path of ``softmaxkit.torch.softmax`` / ``log_softmax`` / ``logsumexp``.

A plain eager call that records no gradient runs the operator's body directly:
the ``torch.library.custom_op`` dispatcher (autograd layer, backend layer, the
dynamo-disable wrapper) costs ~30 us a call, more than a small softmax.  Every
other call (gradients, ``torch.compile``, fake / meta tensors, dispatch and
function modes, ``vmap`` / ``grad``, the profiler, ``torch.jit`` tracing, tensor
subclasses) goes through the ``softmaxkit::`` operator as before.
"""

import math

import numpy as np
import torch

from .._core import coldstart
from .._core.buffers import ALIGN_MIN_BYTES as _SMALL
from ._alloc import _new

_FAST_DTYPES = (torch.bfloat16, torch.float32, torch.float64)


def _plain_eager() -> bool:
    """No tracing, mode, transform or profiler that must see the operator itself."""
    from torch.utils import _python_dispatch

    return not (
        torch.compiler.is_compiling()
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._len_torch_dispatch_stack() > 0
        or _python_dispatch._is_in_torch_dispatch_mode
        or torch._C._functorch.peek_interpreter_stack() is not None
        or torch._C._autograd._profiler_enabled()
        or torch._C._get_tracing_state() is not None
    )


_K: dict = {}  # the kernel modules, imported on the first fast call


def _kernels():
    if not _K:
        from .._kernels import _parallel, bf16

        _K.update(parallel=_parallel, bf16=bf16)
    return _K


def _fast(x, axis, temperature, log: bool, npf):
    """The operator's result for a plain eager call, or None.

    Applies to a contiguous CPU bfloat16 / float32 / float64 ``torch.Tensor`` (not a
    subclass) reduced over its last axis (an int ``axis``), without ``where`` /
    ``dtype``, when nothing that must see the ``softmaxkit::`` operator is active
    (:func:`_plain_eager`).  It runs the same code as the operator's body without
    the dispatcher (custom_op's autograd and backend layers, ~30 us a call);
    bfloat16 also skips the tensor checks of the operator path.  [1, 1000] softmax,
    one thread, CPU time: bfloat16 46 -> ~11 us, float32 63 -> ~27 us (its NumPy
    function's own validation stays), against torch's ~3 us.  When a gradient is
    recorded, :class:`_Dense` (a plain autograd function) carries it: backward is
    the same VJP kernel, and the differentiable ``softmaxkit::`` backward operator
    under ``create_graph``.  Anything else returns None and takes the operator.
    ``npf``: the NumPy function (``softmax`` or ``log_softmax``) for float32/64.
    """
    t = _eligible(x, axis, temperature, _FAST_DTYPES)
    if t is None:
        return None
    if x.requires_grad and torch.is_grad_enabled():
        return _Dense.apply(x, t, log, npf)
    return _body(x, t, log, npf)


def _eligible(x, axis, temperature, dtypes):
    """``float(temperature)`` when a fast path applies to this call, else None: a
    contiguous, non-empty CPU ``torch.Tensor`` (not a subclass) of one of ``dtypes``,
    reduced over its last axis (an int ``axis``), a finite ``temperature > 0``, and
    nothing active that must see the operator (:func:`_plain_eager`)."""
    if (
        type(x) is not torch.Tensor
        or x.dtype not in dtypes
        or x.device.type != "cpu"
        or type(axis) is not int
        or type(temperature) not in (float, int)
        or not _plain_eager()
    ):
        return None
    shape = x.shape
    nd = len(shape)
    if nd == 0 or axis not in (-1, nd - 1) or not x.is_contiguous():
        return None
    t = float(temperature)
    if not (0.0 < t < math.inf) or x.numel() == 0 or shape[-1] == 0:
        return None
    return t


def _body(x, t: float, log: bool, npf, alloc=_new):
    """(log_)softmax of ``x`` (checked by :func:`_fast`) over its last axis.

    ``alloc(shape, dtype)`` makes a large output (4 MiB and more): ``_new`` (the
    output cache) for a plain call, ``_gradbuf.grad_buffer`` for an output saved for
    backward (:class:`_Dense`).
    """
    shape = x.shape
    n = shape[-1]
    size = x.numel()
    K = _K or _kernels()
    if x.dtype == torch.bfloat16:
        try:  # (the kernel may still be compiling: coldstart, docs/performance.md)
            with coldstart.allow(size):
                return _body_bf16(x, t, log, K, n, size, alloc)
        except coldstart.ColdKernel:  # compiling in the background: float32 (cold path)
            return _body(x.float(), t, log, npf).to(torch.bfloat16)
    xa = x.numpy()
    if size * xa.itemsize < _SMALL:
        oa = np.empty(shape, dtype=xa.dtype)
        out = torch.from_numpy(oa)
    else:
        out = alloc(shape, x.dtype)
        oa = out.numpy()
    npf(xa, axis=-1, temperature=t, out=oa)
    return out


def _body_bf16(x, t: float, log: bool, K, n: int, size: int, alloc=_new):
    """The bfloat16 bits kernel of :func:`_body`."""
    shape = x.shape
    par = K["parallel"]
    xb = bits(x, n)
    # empty_like: contiguous as x is (0.9 us; torch.empty(shape, dtype=) 2.1 us)
    out = torch.empty_like(x) if 2 * size < _SMALL else alloc(shape, torch.bfloat16)
    ob = bits(out, n)
    nt = par.threads_for(size)
    if nt == 1:
        K["bf16"].softmax_range(xb, 1.0 / t, log, ob, 0, xb.shape[0])
    else:
        par.run(K["bf16"].softmax_range, xb.shape[0], nt, xb, 1.0 / t, log, ob,
                chunks=chunks_for(size, nt))  # fmt: skip
    return out


# Values per range of a parallel bfloat16 call (~0.1 ms of work).  The ranges are
# taken from a shared counter (``_kernels/_parallel.run``); next to torch, whose
# OpenMP worker spins on the other core for milliseconds after each parallel op, our
# worker starts late and runs slowly, and the caller then waits for its last range:
# small ranges bound that wait.  [65536, 128] bfloat16 softmax / log_softmax, 2
# threads, interleaved with torch's in one process, medians of 41 (load 5):
# 4 ranges a thread 20.4-22.5 ms, 16: 15.4-17.6, 32: 10.5-14.5, 64: 11.9-13.6
# (torch 11.5-15.9; the same run's minima 3.4-11 ms: the machine was shared).
CHUNK_VALUES = 1 << 17
MAX_CHUNKS = 64


def chunks_for(size: int, nt: int) -> int:
    """Ranges per thread for a parallel bfloat16 kernel over ``size`` values."""
    return max(4, min(MAX_CHUNKS, size // (CHUNK_VALUES * max(1, nt))))


def bits(t, n: int) -> np.ndarray:
    """A contiguous CPU bfloat16 tensor's storage as ``uint16`` rows of ``n`` (no copy)."""
    return t.detach().view(torch.int16).numpy().view(np.uint16).reshape(-1, n)


def bits_run(kernel, out, *args):
    """Run a bits range kernel ``kernel(*args, out_bits, t0, t1)`` over the rows of
    ``args[0]`` (``[R, n]`` bits) on the kernel threads, writing the bfloat16 tensor
    ``out``; returns ``out``."""
    par = (_K or _kernels())["parallel"]
    o2 = bits(out, args[0].shape[1])
    nt = par.threads_for(o2.size)
    par.run(kernel, o2.shape[0], nt, *args, o2, chunks=chunks_for(o2.size, nt))
    return out


# the backward operators and their body, registered by ``_ops_dense`` (which imports
# this module: no import back)
BACKWARD: dict = {}


class _Dense(torch.autograd.Function):
    """softmax / log_softmax of a :func:`_fast` call that records a gradient.

    The ``softmaxkit::`` operators' autograd formulas without their dispatch
    (~30 us forward, ~200 us forward + backward at [32, 128]): the output is saved,
    backward runs the fused VJP (``_ops_dense._vjp_impl``, the backward operators'
    body); with ``create_graph`` it calls the backward operator itself, which has
    its own derivative, so double backward works as through the operator.

    Memory: the saved output and the gradient (``_vjp_impl``) come from the cache of
    released gradient buffers (``_gradbuf``, 1 GiB by default), not the output
    cache: both are released within a training step (the output when the graph is
    freed, the gradient once accumulated), and the next step takes their buffers
    back with their pages mapped.  (A [4096, 32000] float32 output or gradient is
    524 MB: with the output cache's former 256 MiB limit each forward + backward
    faulted in 1 GB of fresh pages; torch eager: 1.5 GB, its output, its gradient
    and the caller's ``ones_like``.)
    """

    @staticmethod
    def forward(ctx, x, t, log, npf):
        from ._gradbuf import grad_buffer

        y = _body(x.detach(), t, log, npf, grad_buffer)
        ctx.save_for_backward(y)
        ctx.t, ctx.log = t, log
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the differentiable operator
            op = BACKWARD["log_softmax_op" if ctx.log else "softmax_op"]
            return op(y, g, [-1], ctx.t, None), None, None, None
        if y.dtype == torch.bfloat16 and not g.is_contiguous():
            # the bits kernel wants contiguous rows (``loss = y.sum()`` hands an
            # expanded g); else both would be widened to float32 copies
            g = g.contiguous()
        return BACKWARD["vjp"](y, g, [-1], ctx.t, None, ctx.log), None, None, None


def lse_fast(x, axis, temperature, keepdims):
    """The result of a plain eager ``logsumexp`` of a bfloat16 tensor, or None.

    Applies as :func:`_fast` does (a contiguous CPU ``torch.Tensor``, the last axis,
    nothing active that must see the operator), to bfloat16 only.  The forward is
    the operator's (``lse_range``: float32 row values, rounded once).  With a
    gradient, :class:`_LSE` keeps those float32 values (4 bytes a row) so that
    backward is one pass over ``x`` (``lse_vjp_range``) instead of the operator's
    softmax, written out, and a scaling pass over it.
    """
    t = _eligible(x, axis, temperature, (torch.bfloat16,))
    if t is None:
        return None
    shape = x.shape
    lse = lse32_rows(bits(x, shape[-1]), t)
    if lse is None:
        return None  # compiling in the background: the operator's path
    if x.requires_grad and torch.is_grad_enabled():
        return _LSE.apply(x, lse, t, bool(keepdims))
    return _lse_out(lse, shape, bool(keepdims))


def lse32_rows(xb, t: float):
    """float32 logsumexp of each row of the bfloat16 bits ``xb`` (``[R, n]``) over
    ``t``, by the bits kernel, as a tensor; None while the kernel is compiling in the
    background (``coldstart``)."""
    K = _K or _kernels()
    par = K["parallel"]
    lse = torch.empty(xb.shape[0], dtype=torch.float32)
    nt = par.threads_for(xb.size)
    try:
        with coldstart.allow(xb.size):
            par.run(K["bf16"].lse_range, xb.shape[0], nt, xb, 1.0 / t, lse.numpy(),
                    chunks=chunks_for(xb.size, nt))  # fmt: skip
    except coldstart.ColdKernel:
        return None
    return lse


def _lse_out(lse, shape, keepdims: bool):
    return lse.to(torch.bfloat16).reshape(tuple(shape[:-1]) + ((1,) if keepdims else ()))


class _LSE(torch.autograd.Function):
    """bfloat16 logsumexp of a :func:`lse_fast` call that records a gradient.

    Saves ``x`` and the float32 row values; first-order backward writes
    ``exp(x / T - lse) g / T`` rounded once into a buffer from ``_gradbuf`` (one
    read of ``x``, one write); with ``create_graph``, ``softmax(x / T) * (g / T)``
    through the softmax operator, differentiable again (the operator path's
    formula).
    """

    @staticmethod
    def forward(ctx, x, lse, t, keepdims):
        ctx.save_for_backward(x, lse)
        ctx.t = t
        return _lse_out(lse, x.shape, keepdims)

    @staticmethod
    def backward(ctx, g):
        x, lse = ctx.saved_tensors
        t = ctx.t
        gk = g.reshape((*x.shape[:-1], 1))
        if torch.is_grad_enabled():
            p = BACKWARD["softmax_fwd_op"](x, [x.ndim - 1], t, None)
            return p * (gk / t), None, None, None
        from ._gradbuf import grad_buffer

        gs = (gk.reshape(-1).to(torch.float32) / t).contiguous()
        out = grad_buffer(x.shape, torch.bfloat16)
        kernel = (_K or _kernels())["bf16"].lse_vjp_range
        bits_run(kernel, out, bits(x, x.shape[-1]), 1.0 / t, lse.numpy(), gs.numpy())
        return out, None, None, None
