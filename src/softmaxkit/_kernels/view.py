"""``row(a, i)``: row ``i`` of a 2-D array as a 1-D view that holds no reference.

Inside a kernel ``a[i]`` builds a view that shares ``a``'s meminfo, so Numba
increments and decrements that reference count (``NRT_incref`` / ``NRT_decref``,
atomic, not inlined) around every helper call that receives it: per row of a short-row
kernel this cost more than the row's own write loop (rows of 128 float32, one
thread, cache-resident: the log_softmax write loop 25.8 ns per row through
``x[i]`` / ``out[i]`` views, 10.2 through ``row``).  The view built here has no
meminfo (its reference counting is a null check), so it must not outlive ``a``:
kernels only pass it down to helpers, never return or store it.

Numba's dead-code elimination (run in ``parallel=True`` kernels) drops a store
through an array it does not know to alias a live one: ``row`` is registered as
returning an alias of its first argument (``ir_utils.alias_func_extensions``);
without that, ``gr = row(grad, i); gr[t] -= c`` as the last statement of a ``prange``
body was removed (tests/test_kernels.py::test_row_view_in_a_parfor).  The alias is only
seen through a plain assignment: give each view its own statement.  With
``yr, orow = row(y, i), row(out, i)`` (a tuple unpacked) Numba 0.68 lost it again and
dropped ``orow[:] = 0.0`` in a ``prange`` body (found in ``softmax_vjp_rows``; guarded
by tests/test_grad.py::test_vjp_long_rows_with_special_entries).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core import cgutils, ir_utils
from numba.extending import intrinsic


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view (``a`` itself when it is read-only already).

    Numba compiles a kernel once per argument type, and a read-only array is another
    type than a writable one.  The entry points hand the arrays a kernel only reads
    over read-only, so one compiled variant serves a caller's writable array, a
    read-only memory map, a broadcast view and a JAX buffer alike: in a cold run of
    the test suite, 19% of the compile time (186 of 993 s) went to variants that
    differed only in that flag.  Writes still go through the output arguments, which
    may share memory with the input (``out=x``).
    """
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


@intrinsic
def row(typingctx, a, i):
    """Row ``i`` (``0 <= i < a.shape[0]``, not checked) of the 2-D array ``a``."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(i, types.Integer)):
        return None
    layout = "C" if a.layout == "C" else "A"
    rty = types.Array(a.dtype, 1, layout, readonly=not a.mutable, aligned=a.aligned)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        stride0 = builder.extract_value(arr.strides, 0)
        stride1 = builder.extract_value(arr.strides, 1)
        base = builder.bitcast(arr.data, cgutils.voidptr_t)
        data = builder.gep(base, [builder.mul(idx, stride0)])
        data = builder.bitcast(data, arr.data.type)
        view = context.make_array(rty)(context, builder)
        context.populate_array(
            view,
            data=data,
            shape=cgutils.pack_array(builder, [builder.extract_value(arr.shape, 1)]),
            strides=cgutils.pack_array(builder, [stride1]),
            itemsize=arr.itemsize,
            meminfo=None,
        )
        return view._getvalue()

    return rty(a, i), codegen


def _row_alias(lhs, args, alias_map, arg_aliases):
    ir_utils._add_alias(lhs, args[0].name, alias_map, arg_aliases)


ir_utils.alias_func_extensions[("row", __name__)] = _row_alias
