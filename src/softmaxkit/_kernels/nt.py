"""Non-temporal (streaming) stores for outputs larger than the last-level cache.

A plain store to a line that is not in cache first reads the line from memory
(write-allocate), so writing an output costs two memory transfers per line.  A
non-temporal store (``vmovntps``) writes the line without reading it.  Measured here
(2 threads, float32): a copy of 128 MiB takes 32-35 ms with plain stores and 23 ms
with non-temporal ones; a 4 MB copy (cache resident) is faster with plain stores.

LLVM's loop vectoriser will not vectorise a loop of scalar non-temporal stores (it
cannot prove the 64-byte alignment the vector instruction needs), so
``_nt_store_vec`` stores one whole 64-byte vector, and :func:`nt_copy` streams a
cache-resident block (``src``, e.g. an L1 scratch block the kernels just wrote)
to ``dst`` with aligned vector stores and plain stores for the unaligned head and
tail.  The kernels use it for their write pass when the output is at least
``NT_MIN_BYTES`` (``rows/entry.py``); below that, the output is better left in cache for
whatever reads it next.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["NT_MIN_BYTES", "nt_copy"]

NT_MIN_BYTES = 32 << 20  # about the L3 size of the developer machine


@intrinsic
def _nt_store_vec(typingctx, dst, i, src, j):
    """``dst[i : i + L] = src[j : j + L]`` as one 64-byte non-temporal vector store.

    ``L = 64 / itemsize`` (16 float32, 8 float64, 32 float16 bits); ``dst + i`` must
    be 64-byte aligned.
    """
    if not (
        isinstance(dst, types.Array)
        and isinstance(src, types.Array)
        and dst.dtype == src.dtype
        and isinstance(dst.dtype, (types.Float, types.Integer))
    ):
        return None

    def codegen(context, builder, sig, args):
        d, ii, s, jj = args
        da = context.make_array(sig.args[0])(context, builder, d)
        sa = context.make_array(sig.args[2])(context, builder, s)
        ety = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(ety)
        vt = ir.VectorType(ety, 64 // size)
        sp = builder.bitcast(builder.gep(sa.data, [jj]), vt.as_pointer())
        v = builder.load(sp, align=size)
        dp = builder.bitcast(builder.gep(da.data, [ii]), vt.as_pointer())
        st = builder.store(v, dp, align=64)
        st.set_metadata(
            "nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        )
        return context.get_dummy_value()

    return types.void(dst, i, src, j), codegen


@intrinsic
def _sfence(typingctx):
    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic(
            "llvm.x86.sse.sfence", fnty=ir.FunctionType(ir.VoidType(), [])
        )
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True)
def nt_copy(src, dst, lo, hi):
    """``dst[lo:hi] = src[0 : hi - lo]`` with non-temporal stores where aligned.

    ``src`` and ``dst`` are contiguous 1-D arrays of the same numeric dtype.
    """
    size = dst.itemsize
    lanes = 64 // size
    head = ((64 - (dst.ctypes.data + lo * size) % 64) % 64) // size
    j = min(lo + head, hi)
    for k in range(lo, j):
        dst[k] = src[k - lo]
    while j + lanes <= hi:
        _nt_store_vec(dst, j, src, j - lo)
        j += lanes
    for k in range(j, hi):
        dst[k] = src[k - lo]
    _sfence()  # streaming stores are weakly ordered: order them before what follows
