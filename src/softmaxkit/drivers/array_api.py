"""Array API driver: the dense ops for torch, CuPy, JAX and ``array_api_strict`` arrays.

One generic implementation written against the Array API standard (through
``array-api-compat``), with the NumPy path's semantics and edge-case contract.
Results are arrays of the caller's namespace on the caller's device; nothing
is copied to the host.  NumPy input never comes here (it keeps the Numba path).

Fast path: without ``where``/``b``, when every row has a finite max (one check on
the batch-sized max), six passes: ``m``, ``d = v - m``, ``e = exp(d)``, then
``e / sum e`` (torch, one axis: ``torch.softmax``), ``d - log sum e`` or
``m + log sum e`` with the log1p split below.

General path (whole-array, three reductions over ``axes`` with ``keepdims``):

* ``include = where & (b != 0)``; a row is NaN if an included ``x / T`` or ``b`` is NaN;
* ``m = max(x / T)`` over included entries (-inf for none);
* ``c = sum of the weights of the entries equal to m`` (their count without ``b``;
  for a ``+inf`` row this is the weight of the ``+inf`` entries), and
  ``r = sum_{x_j/T < m} w_j exp(x_j/T - m)``;
* ``log sum = log|c| + log1p(r / c)`` when ``-1 < r / c <= 1`` (full relative
  accuracy when the maxima dominate, as in the NumPy kernels), else ``log|c + r|``.

Contract cells are assigned, never computed from ``inf - inf``: empty / all
``-inf`` / fully masked rows give -inf (logsumexp, sign 0), 0 (softmax), -inf
(log_softmax); ``+inf`` rows give +inf (NaN if the weights of the +inf entries
cancel), ``1/c`` at the +inf entries, ``-log c``; NaN rows give NaN.

Dtypes: float16 is computed in float32 and returned as float16; float32 and
float64 are computed in their own dtype (no float64 accumulation for float32, so
devices without float64 work); integer and bool input is computed in float64, or
in the device's default floating dtype where float64 is not available (e.g.
``array_api_strict``'s ``no_float64`` device, Apple MPS).  ``dtype=`` accepts the
namespace's dtypes or NumPy-style names (``"float32"``, ``np.float32``).

``out=``: accepted for arrays that support ``out[...] = value`` (torch, CuPy,
``array_api_strict``): shape and dtype are checked and the result is written
into it.  JAX arrays are immutable, so ``out=`` raises ``TypeError`` for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.validate import normalize_axis, validate_temperature

__all__ = ["log_softmax", "logsumexp", "softmax"]

_NAMES = ("float16", "float32", "float64")


def _compat():
    """array_api_compat, or an ImportError that says which extra provides it."""
    try:
        import array_api_compat
    except ModuleNotFoundError:
        raise ImportError(
            "softmaxkit needs the package array_api_compat for this array type (torch on "
            "a non-CPU device or without softmaxkit.torch, CuPy, JAX, array_api_strict): "
            'pip install "softmaxkit[array-api]"'
        ) from None
    return array_api_compat


def is_torch_namespace(xp) -> bool:
    return _compat().is_torch_namespace(xp)


def _namespace(x: Any):
    _compat()
    from array_api_compat import array_namespace, device

    return array_namespace(x), device(x)


def _has_float64(xp, dev) -> bool:
    try:
        info = xp.__array_namespace_info__()
        return "float64" in info.dtypes(device=dev, kind="real floating")
    except (AttributeError, TypeError):  # namespaces predating the inspection API
        return hasattr(xp, "float64")


def _dtype_name(xp, dt) -> str | None:
    for name in _NAMES:
        if getattr(xp, name, None) is not None and dt == getattr(xp, name):
            return name
    return None


def _resolve_dtypes(xp, dev, x, dtype):
    """(compute, out) dtypes of the namespace, following the NumPy path's policy."""
    name = _dtype_name(xp, x.dtype)
    if name is None:
        if xp.isdtype(x.dtype, ("integral", "bool")):
            name = "float64" if _has_float64(xp, dev) else None
            if name is None:
                out = xp.__array_namespace_info__().default_dtypes(device=dev)["real floating"]
                return out, out
        else:
            raise TypeError(
                f"x must have a real floating, integer or bool dtype; got dtype {x.dtype}"
            )
    if dtype is not None:
        dname = _dtype_name(xp, dtype)
        if dname is None:
            try:
                dname = np.dtype(dtype).name
            except TypeError:
                dname = None
        if dname not in _NAMES or getattr(xp, dname, None) is None:
            raise TypeError(
                f"dtype must be one of float16, float32, float64 (available in {xp.__name__}); "
                f"got {dtype!r}"
            )
        name = dname
    out = getattr(xp, name)
    compute = xp.float32 if name == "float16" else out
    return compute, out


def _operand(xp, dev, a, shape, name):
    """``where`` / ``b`` as an array of the namespace on ``dev``, broadcast to ``shape``."""
    from array_api_compat import array_namespace

    try:
        same = array_namespace(a) is xp
    except TypeError:
        same = False
    if not same:
        arr = np.asarray(a)
        if name == "where" and arr.dtype != np.bool_:
            raise TypeError(f"where must be a boolean array; got dtype {arr.dtype}")
        if name == "b" and arr.dtype.kind not in "biuf":
            raise TypeError(f"b must have a real floating, integer or bool dtype; got {arr.dtype}")
        a = xp.asarray(arr, device=dev)
    elif name == "where" and a.dtype != xp.bool:
        raise TypeError(f"where must be a boolean array; got dtype {a.dtype}")
    try:
        if np.broadcast_shapes(tuple(a.shape), shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{name} with shape {tuple(a.shape)} cannot be broadcast to the input shape {shape}"
        ) from None
    return xp.broadcast_to(a, shape)


def _check_out(xp, out, shape, dtype):
    from array_api_compat import array_namespace, is_jax_array

    if is_jax_array(out):
        raise TypeError("out is not supported for JAX arrays (they are immutable); got a jax array")
    try:
        ok = array_namespace(out) is xp
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(f"out must be an array of the input's namespace; got {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}; expected {dtype}")


def _errstate():
    # NumPy-backed namespaces (array_api_strict) would warn on the intermediate
    # overflow of x / T and on the discarded branches of ``where``; every such value
    # is replaced by an assigned contract value (test_array_api.py::test_no_warnings).
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


class _Prep:
    """Validated inputs and the per-row statistics shared by the three ops."""

    def __init__(self, x, axis, temperature, where, dtype, b=None):
        xp, dev = _namespace(x)
        self.xp, self.dev = xp, dev
        self.shape = tuple(x.shape)
        self.axes = normalize_axis(axis, x.ndim)
        t = validate_temperature(temperature)
        self.compute, self.out_dtype = _resolve_dtypes(xp, dev, x, dtype)
        self.empty = any(self.shape[a] == 0 for a in self.axes)
        v = xp.astype(x, self.compute, copy=False)
        if t != 1.0:
            v = v / t
        self.v = v
        inc = None
        if where is not None:
            inc = _operand(xp, dev, where, self.shape, "where")
        w = None
        if b is not None:
            w = xp.astype(_operand(xp, dev, b, self.shape, "b"), self.compute)
            nz = w != 0
            inc = nz if inc is None else inc & nz
        self.include, self.w = inc, w

    def const(self, value):
        return self.xp.asarray(value, dtype=self.compute, device=self.dev)

    def _red(self, fn, a):
        if not self.axes:
            return a
        return fn(a, axis=self.axes, keepdims=True)

    def fast(self):
        """The row max ``m`` (0 for empty rows) of an unweighted call whose every row
        has a finite max or is empty (all -inf or fully masked), else None.

        Such calls take a path of at most seven passes (one more with ``where``: the
        masked entries become -inf in ``self.vf``) instead of the ~25 passes of
        :meth:`stats`; the one check on ``m`` (batch-sized) decides, so a masked or
        all -inf row costs no more than a regular one.  ``self.empty_rows`` is the
        batch-shaped mask of empty rows, or None when there are none.  NaN and +inf
        rows take the general path.  Under a tracing JIT (``jax.jit``) the check cannot
        be made and the general path is taken.
        """
        if self.w is not None:
            return None
        xp = self.xp
        v = self.v
        if self.include is not None:
            v = xp.where(self.include, v, self.const(-np.inf))
        m = self._red(xp.max, v)  # NaN propagates into m
        try:
            finite = xp.isfinite(m)
            empty = m == -np.inf
            ok = bool(xp.all(finite | empty))
            any_empty = ok and bool(xp.any(empty))
        except Exception:  # a tracer (jax.jit): take the general path
            ok = False
        if not ok:
            return None
        self.vf = v
        self.empty_rows = empty if any_empty else None
        return xp.where(empty, self.const(0.0), m) if any_empty else m

    def fast_logabs(self, d, e):
        """log of the row sums of ``e``, split at the maxima (``d == 0``) for log1p."""
        xp = self.xp
        at = d == 0
        c = self._red(xp.sum, xp.astype(at, self.compute))
        r = self._red(xp.sum, xp.where(at, self.const(0.0), e))
        return self.logabs(c, r)[0]

    def stats(self):
        """(vals, m, c, r, at_max, nan_row) with keepdims-shaped row statistics."""
        xp, v = self.xp, self.v
        isnan_v = xp.isnan(v)
        bad = isnan_v if self.w is None else (isnan_v | xp.isnan(self.w))
        if self.include is not None:
            bad = bad & self.include
        ok = ~isnan_v if self.include is None else (self.include & ~isnan_v)
        ninf = self.const(-np.inf)
        zero = self.const(0.0)
        vals = xp.where(ok, v, ninf)
        if self.axes:
            nan_row = xp.any(bad, axis=self.axes, keepdims=True)
        else:
            nan_row = bad
        m = self._red(xp.max, vals)
        finite_m = xp.isfinite(m)
        d = xp.where(finite_m, vals - xp.where(finite_m, m, zero), ninf)
        e = xp.exp(d)
        at_max = (vals == m) & ok
        ones = self.const(1.0)
        wt = ones if self.w is None else self.w
        c = self._red(xp.sum, xp.where(at_max, wt, zero))
        terms = e if self.w is None else xp.where(ok, e * self.w, zero)
        r = self._red(xp.sum, xp.where(at_max, zero, terms))
        return vals, m, c, r, at_max, nan_row

    def logabs(self, c, r):
        """log|c + r| with the log1p split when the maxima dominate."""
        xp = self.xp
        zero, one = self.const(0.0), self.const(1.0)
        safe_c = xp.where(c != 0, c, one)
        ratio = r / safe_c
        good = (c != 0) & (ratio > -1.0) & (ratio <= 1.0)
        total = c + r
        split = xp.log(xp.abs(safe_c)) + xp.log1p(xp.where(good, ratio, zero))
        plain = xp.log(xp.abs(xp.where(total != 0, total, one)))
        return xp.where(good, split, plain), total


def _finish(p: _Prep, res, out):
    xp = p.xp
    res = xp.astype(res, p.out_dtype)
    if out is None:
        return res
    _check_out(xp, out, tuple(res.shape), p.out_dtype)
    out[...] = res
    return out


def _softmax(x, axis, temperature, where, dtype, out, log):
    with _errstate():
        p = _Prep(x, axis, temperature, where, dtype)
        xp = p.xp
        if p.empty:
            return _finish(p, xp.zeros(p.shape, dtype=p.compute, device=p.dev), out)
        m = p.fast()
        if m is not None:
            native = p.include is None and p.empty_rows is None
            if native and not log and len(p.axes) == 1 and is_torch_namespace(xp):
                # torch's native softmax: same result on rows with a finite max (the
                # contract cells all have a non-finite max and take the path below)
                import torch

                return _finish(p, torch.softmax(p.v, dim=p.axes[0]), out)
            d = p.vf - m
            e = xp.exp(d)
            if log:
                res = d - p.fast_logabs(d, e)  # empty rows: -inf - log 1
            else:
                tot = p._red(xp.sum, e)  # 0 only in empty rows (their e is all 0)
                res = e / (tot if p.empty_rows is None else xp.where(tot > 0, tot, 1.0))
            return _finish(p, res, out)
        vals, m, c, r, at_max, nan_row = p.stats()
        ninf, zero, nan = p.const(-np.inf), p.const(0.0), p.const(np.nan)
        finite_m = xp.isfinite(m)
        mm = xp.where(finite_m, m, zero)
        if log:
            la, _ = p.logabs(c, r)
            regular = (vals - mm) - la
            safe_c = xp.where(c > 0, c, p.const(1.0))
            infrow = xp.where(at_max, -xp.log(safe_c), ninf)
            res = xp.where(finite_m, regular, xp.where(m == np.inf, infrow, ninf))
        else:
            total = c + r
            safe_t = xp.where(total > 0, total, p.const(1.0))
            regular = xp.exp(xp.where(finite_m, vals - mm, ninf)) / safe_t
            infrow = xp.where(at_max, 1.0 / xp.where(c > 0, c, p.const(1.0)), zero)
            res = xp.where(finite_m, regular, xp.where(m == np.inf, infrow, zero))
        res = xp.where(nan_row, nan, res)
    return _finish(p, res, out)


def softmax(x, /, axis=-1, *, temperature=1.0, where=None, dtype=None, out=None):
    """:func:`softmaxkit.softmax` for any Array API array (see the module docstring)."""
    return _softmax(x, axis, temperature, where, dtype, out, log=False)


def log_softmax(x, /, axis=-1, *, temperature=1.0, where=None, dtype=None, out=None):
    """:func:`softmaxkit.log_softmax` for any Array API array."""
    return _softmax(x, axis, temperature, where, dtype, out, log=True)


def logsumexp(
    x,
    /,
    axis=-1,
    *,
    b=None,
    keepdims=False,
    return_sign=False,
    temperature=1.0,
    where=None,
    dtype=None,
    out=None,
):
    """:func:`softmaxkit.logsumexp` for any Array API array; 0-d results stay arrays."""
    with _errstate():
        p = _Prep(x, axis, temperature, where, dtype, b)
        xp = p.xp
        kshape = tuple(1 if i in p.axes else n for i, n in enumerate(p.shape))
        if p.empty:
            lse = xp.full(kshape, -np.inf, dtype=p.compute, device=p.dev)
            sign = xp.zeros(kshape, dtype=p.compute, device=p.dev)
        elif (m := p.fast()) is not None:
            d = p.vf - m
            lse = m + p.fast_logabs(d, xp.exp(d))
            sign = xp.ones(lse.shape, dtype=p.compute, device=p.dev)
            if p.empty_rows is not None:
                lse = xp.where(p.empty_rows, p.const(-np.inf), lse)
                sign = xp.where(p.empty_rows, p.const(0.0), sign)
        else:
            _, m, c, r, _, nan_row = p.stats()
            ninf, zero, nan = p.const(-np.inf), p.const(0.0), p.const(np.nan)
            la, total = p.logabs(c, r)
            finite_m = xp.isfinite(m)
            lse = xp.where(total == 0, ninf, xp.where(finite_m, m, zero) + la)
            sign = xp.sign(total)
            # +inf rows: +inf with the sign of the +inf entries' weight; NaN if it cancels
            posinf = m == np.inf
            lse = xp.where(posinf, xp.where(c == 0, nan, p.const(np.inf)), lse)
            sign = xp.where(posinf, xp.where(c == 0, nan, xp.sign(c)), sign)
            lse = xp.where(m == -np.inf, ninf, lse)
            sign = xp.where(m == -np.inf, zero, sign)
            lse = xp.where(nan_row, nan, lse)
            sign = xp.where(nan_row, nan, sign)
        if not return_sign:
            lse = xp.where(sign < 0, p.const(np.nan), lse)  # SciPy: log of a negative sum
        if not keepdims and p.axes:
            lse = xp.squeeze(lse, axis=p.axes)
            sign = xp.squeeze(sign, axis=p.axes)
    res = _finish(p, lse, out)
    if return_sign:
        return res, xp.astype(sign, p.out_dtype)
    return res
