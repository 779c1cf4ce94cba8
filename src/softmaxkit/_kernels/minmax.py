"""Float min / max intrinsics for the kernels' reductions (``llvm.maxnum``,
``llvm.maximum``, ``llvm.minimum``): Numba's ``max`` / ``min`` and a compare-and-select
do not vectorise as reductions; these do (re-exported by ``exp``)."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["fmax", "fmaximum", "fminimum"]


def _fp_type(ty):
    return ir.FloatType() if ty == types.float32 else ir.DoubleType()


@intrinsic
def fmax(typingctx, a, b):
    """``llvm.maxnum``: vectorises (Numba's ``max`` does not); ignores NaN operands."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, sig, args):
        fty = _fp_type(sig.args[0])
        fn = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(fty, [fty, fty]),
            "llvm.maxnum.f32" if sig.args[0] == types.float32 else "llvm.maxnum.f64",
        )
        return builder.call(fn, args)

    return a(a, b), codegen


def _fp_minmax(name):
    """An intrinsic ``f(a, b)`` calling ``llvm.<name>.f32`` / ``.f64`` on two floats of
    one type."""

    def typer(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, sig, args):
            fty = _fp_type(sig.args[0])
            suffix = "f32" if sig.args[0] == types.float32 else "f64"
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(fty, [fty, fty]), f"llvm.{name}.{suffix}"
            )
            return builder.call(fn, args)

        return a(a, b), codegen

    typer.__name__ = typer.__qualname__ = f"f{name}"
    return typer


fmaximum = intrinsic(_fp_minmax("maximum"))
fmaximum.__doc__ = """``llvm.maximum``: the larger of ``a`` and ``b``, NaN if either is NaN.
For max reductions: LLVM's vectorised ``maxnum`` reduction ends in a serial chain of 16
scalar max-and-NaN-fix-up steps, ``maximum``'s is a tree (max of 128 float32 from L1:
20 -> 9 ns).  A NaN max makes a non-finite row state: a NaN row, as before."""

fminimum = intrinsic(_fp_minmax("minimum"))
fminimum.__doc__ = """``llvm.minimum``: the smaller of ``a`` and ``b``, NaN if either is
NaN; vectorises as a reduction tree like :func:`fmaximum`."""
