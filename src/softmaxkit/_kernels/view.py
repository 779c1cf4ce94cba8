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

Masks reach the kernels in one Numba type whatever their layout (``any_layout``,
``unit_last``): a strided (``'A'``) array whose last axis has unit stride, read through
``mrow`` / ``mslice`` as contiguous 1-D views, so the mask loops vectorise as they did
for a C-contiguous mask.
"""

from __future__ import annotations

import numpy as np
from numba import typeof as numba_typeof
from numba import types
from numba._dispatcher import compute_fingerprint as _fingerprint
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


def _contiguous(a) -> bool:
    f = a.flags
    return f.c_contiguous or f.f_contiguous


_ENTRIES: dict = {}  # (kernel, positions, ranged, fingerprints) -> compiled entry point


def any_layout(kernel, args: tuple, positions: tuple[int, ...], ranged: bool = True):
    """``kernel``, or its compiled entry point for ``args`` with the arrays at
    ``positions`` typed as strided arrays of any layout (Numba's ``'A'``).

    Numba compiles a kernel once per argument type, and a C-contiguous, an
    F-contiguous and a strided (broadcast) array are three types.  A mask comes in all
    three (a full mask, a transposed one, a row mask broadcast over the rows), and every
    kernel that takes one was compiled up to three times with otherwise equal
    arguments: 245 of the 813 s a cold test run spent compiling (weights keep their
    layout: rows/entry.py).  So the entry points hand masks over as ``'A'`` arrays
    with a unit last stride (``unit_last``; the kernels read their rows through
    ``mrow`` / ``mslice``): the placeholder used when there is no mask is itself
    strided (``_DUMMY_MASK``), and a contiguous mask goes through here:
    ``kernel.compile`` for the signature with those positions typed ``'A'`` (loaded
    from the cache, compiled once, or handed to the background compile like any first
    call) and that signature's entry point, which accepts the
    contiguous array as it is.  ``ranged``: the call appends two ``int64`` bounds
    (``_parallel.run``).  The entry point is looked up by Numba's C type fingerprints
    of the arguments (about 1 us for ten of them).
    """
    if not any(_contiguous(args[i]) for i in positions):
        return kernel  # already strided: Numba's own dispatch finds the same variant
    key = (kernel, positions, ranged, tuple(map(_fingerprint, args)))
    entry = _ENTRIES.get(key)
    if entry is None:
        tys = [numba_typeof(a) for a in args]
        for i in positions:
            tys[i] = tys[i].copy(layout="A")
        if ranged:
            tys += [types.int64, types.int64]
        entry = kernel.compile(tuple(tys))
        _ENTRIES[key] = entry
    return entry


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
        off = builder.mul(idx, builder.extract_value(arr.strides, 0))
        n = builder.extract_value(arr.shape, 1)
        return _view(context, builder, rty, arr, off, n, builder.extract_value(arr.strides, 1))

    return rty(a, i), codegen


@intrinsic
def mrow(typingctx, a, i):
    """Row ``i`` of the 2-D array ``a`` as a contiguous 1-D view, whatever ``a``'s
    layout: the caller guarantees a unit stride along the last axis (the masks the
    entry points hand over, ``unit_last``), the row stride may be anything (0 for a
    row mask broadcast over the rows).  Not bounds-checked."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(i, types.Integer)):
        return None
    rty = types.Array(a.dtype, 1, "C", readonly=not a.mutable, aligned=a.aligned)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        off = builder.mul(idx, builder.extract_value(arr.strides, 0))
        n = builder.extract_value(arr.shape, 1)
        return _view(context, builder, rty, arr, off, n, arr.itemsize)

    return rty(a, i), codegen


@intrinsic
def mslice(typingctx, a, p, j, q0, q1):
    """``a[p, j, q0:q1]`` of the 3-D array ``a`` as a contiguous 1-D view, whatever
    ``a``'s layout (a unit stride along the last axis guaranteed by the caller, as for
    ``mrow``).  ``0 <= q0 <= q1 <= a.shape[2]``, not checked."""
    ints = (p, j, q0, q1)
    if not (isinstance(a, types.Array) and a.ndim == 3):
        return None
    if not all(isinstance(t, types.Integer) for t in ints):
        return None
    rty = types.Array(a.dtype, 1, "C", readonly=not a.mutable, aligned=a.aligned)

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ip, ij, i0, i1 = (
            context.cast(builder, v, t, types.intp)
            for v, t in zip(args[1:], sig.args[1:], strict=True)
        )
        off = builder.add(
            builder.mul(ip, builder.extract_value(arr.strides, 0)),
            builder.mul(ij, builder.extract_value(arr.strides, 1)),
        )
        off = builder.add(off, builder.mul(i0, arr.itemsize))
        return _view(context, builder, rty, arr, off, builder.sub(i1, i0), arr.itemsize)

    return rty(a, p, j, q0, q1), codegen


def _view(context, builder, rty, arr, off, length, stride):
    """The 1-D view ``rty`` of ``length`` values, ``stride`` bytes apart, starting
    ``off`` bytes into ``arr``'s data, with no meminfo (see the module docstring)."""
    base = builder.bitcast(arr.data, cgutils.voidptr_t)
    data = builder.bitcast(builder.gep(base, [off]), arr.data.type)
    view = context.make_array(rty)(context, builder)
    context.populate_array(
        view,
        data=data,
        shape=cgutils.pack_array(builder, [length]),
        strides=cgutils.pack_array(builder, [stride]),
        itemsize=arr.itemsize,
        meminfo=None,
    )
    return view._getvalue()


def unit_last(a: np.ndarray) -> np.ndarray:
    """``a``, or a C-contiguous copy when its last axis is longer than 1 and not of
    unit stride (the condition of ``mrow`` / ``mslice``): a transposed mask, or one
    broadcast along the reduced axis.  For bool masks the copy is 1 byte per value."""
    if a.ndim and a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
        return np.ascontiguousarray(a)
    return a


def _row_alias(lhs, args, alias_map, arg_aliases):
    ir_utils._add_alias(lhs, args[0].name, alias_map, arg_aliases)


ir_utils.alias_func_extensions[("row", __name__)] = _row_alias
ir_utils.alias_func_extensions[("mrow", __name__)] = _row_alias
ir_utils.alias_func_extensions[("mslice", __name__)] = _row_alias
