"""Shared test data: the dtype policy, tolerances, array builders and hypothesis strategies.

Any test module can ``from strategies import ...``: pytest puts ``tests/`` on
``sys.path`` (rootdir ``conftest.py``, default "prepend" import mode).  Fixtures
built on these live in ``conftest.py``.

Tolerances (``tolerance``) are the accuracy contract of docs/dense.md applied to
"fast path vs float64 reference on the same input values":

* float64 (and integer/bool input, computed in float64): ``rtol=1e-12``;
* float32: softmax ``rtol=2e-6, atol=1e-12``; log_softmax/logsumexp
  ``1e-6 * (1 + |v|)``;
* float16: softmax ``rtol=2e-3, atol=1e-6``; log_softmax/logsumexp ``2e-3 * (1 + |v|)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit
from softmaxkit import reference

__all__ = [
    "FLOAT_DTYPES",
    "INPUT_DTYPES",
    "OPS",
    "arrays_with_axis",
    "assert_close",
    "axis_for",
    "call",
    "call_reference",
    "finite_rows",
    "lse_cancellation",
    "make_array",
    "masks_for",
    "result_dtype",
    "tolerance",
]

OPS = ("softmax", "log_softmax", "logsumexp")
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
INPUT_DTYPES = (np.float16, np.float32, np.float64, np.int64, np.int8, np.bool_)


# --------------------------------------------------------------------------- dtype policy


def result_dtype(in_dtype: Any, dtype: Any = None) -> np.dtype:
    """The documented output dtype: ``dtype`` if given; floats kept; ints/bool -> float64."""
    if dtype is not None:
        return np.dtype(dtype)
    d = np.dtype(in_dtype)
    return d if d.kind == "f" else np.dtype(np.float64)


def tolerance(op: str, dtype: Any) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing an output of dtype ``dtype`` with the reference."""
    d = np.dtype(dtype)
    if d == np.float16:
        return (2e-3, 1e-6) if op == "softmax" else (2e-3, 2e-3)
    if d == np.float32:
        return (2e-6, 1e-12) if op == "softmax" else (1e-6, 1e-6)
    return (1e-12, 1e-300) if op != "logsumexp" else (1e-12, 1e-13)


def assert_close(got: Any, want: Any, op: str, dtype: Any, err_msg: str = "") -> None:
    """Compare with the reference at ``dtype``'s tolerance; NaN and +-inf must match exactly."""
    rtol, atol = tolerance(op, dtype)
    got = np.asarray(got, dtype=np.float64)
    with np.errstate(all="ignore"):  # the ideal result is the reference rounded to dtype
        want = np.asarray(want, dtype=np.float64).astype(dtype).astype(np.float64)
    assert got.shape == want.shape, (got.shape, want.shape, err_msg)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=err_msg)


# --------------------------------------------------------------------------- calling


def call(op: str, x: Any, axis: Any = -1, **kw: Any) -> Any:
    """Call the public op ``op``."""
    return getattr(softmaxkit, op)(x, axis=axis, **kw)


def call_reference(op: str, x: Any, axis: Any = -1, **kw: Any) -> Any:
    """Call the reference twin, dropping the options it does not have (``dtype``, ``out``)."""
    kw = {k: v for k, v in kw.items() if k not in ("dtype", "out")}
    return getattr(reference, op)(x, axis=axis, **kw)


def lse_cancellation(x: Any, b: Any, axis: Any = -1, **kw: Any) -> np.ndarray:
    """Condition ``sum|b e^x| / |sum b e^x|`` of each signed-weight logsumexp output.

    From the float64 reference.  log|S| is only known to ``~eps`` times this,
    absolutely; ``inf`` where the reference sum rounds to 0 (not even the sign is
    known), NaN where ``sum|b e^x|`` is not finite (special rows: compare exactly).
    """
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        la = np.asarray(call_reference("logsumexp", x64, axis, b=np.abs(b), **kw))
        ls = np.asarray(call_reference("logsumexp", x64, axis, b=b, return_sign=True, **kw)[0])
        return np.where(np.isfinite(la), np.exp(la - ls), np.nan)


# --------------------------------------------------------------------------- arrays


def make_array(
    shape: tuple[int, ...],
    dtype: Any,
    order: str = "C",
    seed: int = 0,
    scale: float = 3.0,
) -> np.ndarray:
    """A deterministic test array: normal(0, scale) floats, small ints, random bools."""
    rng = np.random.default_rng(seed)
    d = np.dtype(dtype)
    if d.kind == "b":
        a = rng.random(shape) < 0.5
    elif d.kind in "iu":
        a = rng.integers(-5 if d.kind == "i" else 0, 6, size=shape).astype(d)
    else:
        a = (rng.standard_normal(shape) * scale).astype(d)
    return np.array(a, dtype=d, order=order)  # (ascontiguousarray would make 0-d 1-d)


def finite_rows(
    dtype: Any = np.float64,
    *,
    rows: st.SearchStrategy[int] | None = None,
    min_len: int = 1,
    max_len: int = 12,
    bound: float = 50.0,
) -> st.SearchStrategy[np.ndarray]:
    """2-D arrays of finite values in ``[-bound, bound]`` (rows are the reductions)."""
    rows = rows if rows is not None else st.integers(1, 4)
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)
    return st.tuples(rows, st.integers(min_len, max_len)).flatmap(
        lambda s: hnp.arrays(np.float64, s, elements=elements).map(lambda a: a.astype(dtype))
    )


def axis_for(ndim: int) -> st.SearchStrategy[Any]:
    """A valid ``axis`` for ``ndim``: an int (negative too), a tuple of distinct ints, or None."""
    if ndim == 0:
        return st.sampled_from([None, -1, 0, ()])
    ints = st.integers(-ndim, ndim - 1)
    tuples = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).flatmap(
        lambda ax: st.tuples(*[st.sampled_from([a, a - ndim]) for a in ax])
    )
    return st.one_of(ints, tuples, st.none())


def arrays_with_axis(
    dtype: Any = np.float64, max_dims: int = 3, max_side: int = 5, bound: float = 30.0
) -> st.SearchStrategy[tuple[np.ndarray, Any]]:
    """``(x, axis)``: arrays of 0..max_dims dims (sides may be 0) with a valid axis."""
    shapes = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)
    arrays = shapes.flatmap(
        lambda s: hnp.arrays(np.float64, s, elements=elements).map(lambda a: a.astype(dtype))
    )
    return arrays.flatmap(lambda a: st.tuples(st.just(a), axis_for(a.ndim)))


def masks_for(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Boolean masks of exactly ``shape``."""
    return hnp.arrays(np.bool_, shape)
