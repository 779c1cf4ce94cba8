"""In-register transposes of short rows, for the short-row tiles (``rows/tiles.py``).

The tile kernels run SIMD lanes across rows: a tile of rows of ``n`` values is copied
transposed into an L1 buffer ``tb[n, rows]``, and the result is copied back row-major.
Done with strided scalar loads and stores, the copy in alone took 4.3-4.5 ms of a 16
ms float32 softmax of [10^6, 10] on one thread. Here a block of ``L`` rows (``L`` = 16
float32, 8 float64: one 64-byte vector per column) moves as ``n`` whole vectors: ``n``
vector loads, then per output vector one two-source shuffle for each pair of source
vectors it draws from (``vpermt2ps`` / ``vpermt2pd`` on AVX-512) merged by constant
blends, then ``n`` vector stores. The shuffle masks depend on ``n``, so the IR has one
unrolled body per ``n`` in ``2..NMAX`` behind a switch on ``n`` (one compiled function
per dtype and direction; an ``n`` outside the range does nothing). Numba compiles a
helper again inside every jitted function that calls it, so only the range kernels
should call these (the tile helpers in between are ``inline="always"``).

Measured (one thread, CPU time, a 400 x 10 tile in L1): float32 rows in 0.34-0.42 ->
0.21-0.30 ns per value, back out 0.34-0.49 -> 0.17-0.26; float64 0.60-0.65 -> 0.27-0.31
in, 0.44-0.63 -> 0.27-0.33 out.

The shuffles are plain LLVM ``shufflevector`` instructions, correct on every CPU;
only on AVX-512 do they become one instruction each, so the tile kernels use them
where :data:`HW_TRANSPOSE` is true and the strided loops elsewhere.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .hostcpu import host_has

__all__ = ["HW_TRANSPOSE", "NMAX32", "NMAX64", "cols_to_rows", "rows_to_cols"]

# the longest rows moved this way: float32 rows of 16+ (float64 11+) copy as fast a
# row at a time (``rows/tiles.py``), and the unrolled bodies grow as n^2
NMAX32 = 15
NMAX64 = 10
# software prefetch of the rows this many bytes ahead: the hardware prefetcher alone
# kept a thread at 9 GB/s here (one thread, 10^6 rows of 10 float32 to columns:
# 4.2-4.6 ms without, 2.9-3.9 ms with 4 KiB ahead; 1 KiB: 3.5-4.0 ms)
PREFETCH_BYTES = 4096


# AVX-512 makes each shuffle one instruction (see the module docstring)
HW_TRANSPOSE = host_has("avx512f")


def _shuffle(builder, a, b, mask):
    i32 = ir.IntType(32)
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, len(mask)), mask))


def _gather(builder, srcs, where, L):
    """One vector whose lane ``l`` is lane ``where[l][1]`` of ``srcs[where[l][0]]``.

    Lanes are grouped by pair of sources (``2q``, ``2q + 1``); each pair is one
    two-source shuffle, and the pairs' results are merged by constant blends."""
    groups: dict[int, dict[int, int]] = {}
    for lane, (s, k) in enumerate(where):
        groups.setdefault(s // 2, {})[lane] = k + L * (s & 1)
    acc = None
    for q in sorted(groups):
        lm = groups[q]
        a = srcs[2 * q]
        b = srcs[2 * q + 1] if 2 * q + 1 < len(srcs) else ir.Constant(a.type, None)
        part = _shuffle(builder, a, b, [lm.get(lane, 0) for lane in range(L)])
        if acc is None:
            acc = part
        else:
            acc = _shuffle(builder, acc, part, [L + i if i in lm else i for i in range(L)])
    return acc


def _make(to_cols: bool):
    def impl(typingctx, src, soff, sstride, nb, dst, doff, dstride, n):
        if not (
            isinstance(src, types.Array)
            and isinstance(dst, types.Array)
            and all(isinstance(t, types.Integer) for t in (soff, sstride, nb, doff, dstride, n))
        ):
            return None
        sig = types.void(
            src, types.intp, types.intp, types.intp, dst, types.intp, types.intp, types.intp
        )
        if not (src.dtype == dst.dtype and src.dtype in (types.float32, types.float64)):
            # other dtypes (float16 bits) never take this path; typed so that a caller's
            # untaken branch still compiles
            return sig, lambda context, builder, sig, args: context.get_dummy_value()

        def codegen(context, builder, sig, args):
            src_, so, ss, nb_, dst_, do, ds, n_ = args
            sa = context.make_array(sig.args[0])(context, builder, src_)
            da = context.make_array(sig.args[4])(context, builder, dst_)
            ety = context.get_data_type(sig.args[0].dtype)
            is32 = sig.args[0].dtype == types.float32
            L, size = (16, 4) if is32 else (8, 8)
            vp = ir.VectorType(ety, L).as_pointer()
            intp = so.type

            def c(v):
                return ir.Constant(intp, v)

            def vload(arr, off):
                return builder.load(builder.bitcast(builder.gep(arr.data, [off]), vp), align=size)

            def vstore(v, arr, off):
                builder.store(v, builder.bitcast(builder.gep(arr.data, [off]), vp), align=size)

            pf = builder.module.declare_intrinsic(
                "llvm.prefetch",
                fnty=ir.FunctionType(
                    ir.VoidType(),
                    [ir.PointerType(ir.IntType(8)), ir.IntType(32), ir.IntType(32), ir.IntType(32)],
                ),
            )

            def prefetch(arr, off):
                p = builder.bitcast(builder.gep(arr.data, [off]), ir.PointerType(ir.IntType(8)))
                i32 = ir.IntType(32)
                builder.call(pf, [p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])

            end = builder.append_basic_block("tr.end")
            sw = builder.switch(n_, end)
            for nn in range(2, (NMAX32 if is32 else NMAX64) + 1):
                bb = builder.append_basic_block(f"tr.n{nn}")
                sw.add_case(c(nn), bb)
                builder.position_at_end(bb)
                with cgutils.for_range(builder, nb_) as loop:
                    b = loop.index
                    if to_cols:
                        # rows: nn vectors of flat positions; column j, lane k: j + k*nn
                        base = builder.add(so, builder.mul(b, c(L * nn)))
                        vs = [vload(sa, builder.add(base, c(s * L))) for s in range(nn)]
                        # one prefetch per 64-byte line of the block (nn lines)
                        for s in range(nn):
                            prefetch(sa, builder.add(base, c(s * L + PREFETCH_BYTES // size)))
                        top = builder.add(do, builder.mul(b, c(L)))
                        for j in range(nn):
                            where = [divmod(j + k * nn, L) for k in range(L)]
                            off = builder.add(top, builder.mul(c(j), ds))
                            vstore(_gather(builder, vs, where, L), da, off)
                    else:
                        # columns: lane k of column j is row k; flat position p: (p // nn, p % nn)
                        top = builder.add(so, builder.mul(b, c(L)))
                        cs = [vload(sa, builder.add(top, builder.mul(c(j), ss))) for j in range(nn)]
                        base = builder.add(do, builder.mul(b, c(L * nn)))
                        for s in range(nn):
                            where = [divmod(s * L + lane, nn)[::-1] for lane in range(L)]
                            vstore(_gather(builder, cs, where, L), da, builder.add(base, c(s * L)))
                builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        return sig, codegen

    return impl


_to_cols = intrinsic(_make(True))
_to_rows = intrinsic(_make(False))


@njit(cache=True)
def rows_to_cols(xf, x0, nb, n, tf, ts):
    """``tf[j * ts + r] = xf[x0 + r * n + j]`` for ``r < L * nb``, ``j < n``.

    ``xf`` holds row-major rows of ``n`` values from flat offset ``x0``; ``tf`` is a
    flat ``[n, ts]`` buffer.  ``L`` = 16 (float32) or 8 (float64); ``2 <= n <= NMAX``
    (else nothing is copied)."""
    _to_cols(xf, x0, 0, nb, tf, 0, ts, n)


@njit(cache=True)
def cols_to_rows(tf, ts, nb, n, of, o0):
    """``of[o0 + r * n + j] = tf[j * ts + r]`` for ``r < L * nb``, ``j < n``: the inverse
    of :func:`rows_to_cols`."""
    _to_rows(tf, 0, ts, nb, of, o0, 0, n)
