"""Every documented error of the dense ops: its type and its message.

Messages must name the argument, the constraint and the offending value.  The
reference twin shares the argument checks, so it is held to the same messages
(except for ``dtype=`` and ``out=``, which it does not have).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.exceptions import AxisError
from strategies import OPS, call, call_reference

from softmaxkit import log_softmax, logsumexp, softmax

X = np.arange(6.0).reshape(2, 3)


@pytest.fixture(params=["fast", "reference"])
def caller(request):
    return call if request.param == "fast" else call_reference


# --------------------------------------------------------------------------- axis


@pytest.mark.parametrize(
    ("x", "axis", "pattern"),
    [
        (X, 2, "axis 2 is out of bounds for array of dimension 2"),
        (X, -3, "axis -3 is out of bounds for array of dimension 2"),
        (X, (0, 5), "axis 5 is out of bounds for array of dimension 2"),
        (np.ones(4), 1, "axis 1 is out of bounds for array of dimension 1"),
        (np.float64(1.0), 1, "axis 1 is out of bounds for array of dimension 0"),
        (np.float64(1.0), (0,), "axis 0 is out of bounds for array of dimension 0"),
        (np.float64(1.0), -2, "axis -2 is out of bounds for array of dimension 0"),
    ],
)
def test_axis_out_of_range(caller, op, x, axis, pattern):
    with pytest.raises(AxisError, match=pattern):
        caller(op, x, axis)


@pytest.mark.parametrize("axis", [(0, 0), (1, -1), (0, 1, -2)])
def test_axis_repeated(caller, op, axis):
    with pytest.raises(ValueError, match=r"axis contains a repeated axis: .*\(ndim 2\)") as e:
        caller(op, X, axis)
    assert not isinstance(e.value, AxisError)
    assert str(axis) in str(e.value)


@pytest.mark.parametrize("axis", [1.0, "0", True, (0, 1.5), [0, None], np.float64(0.0)])
def test_axis_not_an_int(caller, op, axis):
    with pytest.raises(TypeError, match=r"axis must be an int, a tuple of ints or None; got"):
        caller(op, X, axis)


@pytest.mark.parametrize("axis", [np.int64(1), np.int8(-1), (np.int32(0), 1), [0, 1]])
def test_axis_integer_likes_accepted(op, axis):
    want = call(op, X, tuple(int(a) for a in axis) if isinstance(axis, tuple | list) else int(axis))
    np.testing.assert_array_equal(call(op, X, axis), want)


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("t", [0, 0.0, -1.0, -0.0, np.nan, np.inf, -np.inf, np.float32(0)])
def test_temperature_value(caller, op, t):
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0; got"):
        caller(op, X, -1, temperature=t)


@pytest.mark.parametrize("t", ["1", None, 1j, True, [1.0], np.ones(2)])
def test_temperature_type(caller, op, t):
    with pytest.raises(TypeError, match=r"temperature must be a real number; got"):
        caller(op, X, -1, temperature=t)


@pytest.mark.parametrize("t", [2, np.float32(2.0), np.array(2.0), np.int64(2)])
def test_temperature_number_likes_accepted(op, t):
    np.testing.assert_array_equal(call(op, X, -1, temperature=t), call(op, X, -1, temperature=2.0))


# --------------------------------------------------------------------------- input dtype


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (np.array([1 + 2j, 3.0]), "x must have a real floating, integer or bool dtype; got dtype "
         "complex128"),
        (np.array([1.0, 2.0], dtype=object), "got dtype object"),
        (np.array(["a", "b"]), "got dtype <U1"),
        (["a", "b"], "got dtype <U1"),
        (np.array([b"a"]), "got dtype |S1"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "got dtype datetime64"),
        ([[1.0, 2.0], [3.0]], "x must be array-like with a numeric dtype"),
        (np.array([1.0], dtype=np.longdouble), "unsupported floating dtype"),
    ],
)  # fmt: skip
def test_input_dtype_rejected(caller, op, x, pattern):
    if getattr(x, "dtype", None) == np.longdouble and np.dtype(np.longdouble) == np.float64:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match=re.escape(pattern)):
        caller(op, x, -1)


def test_weights_dtype_rejected():
    with pytest.raises(TypeError, match=r"b must have a real floating, integer or bool dtype"):
        logsumexp(X, b=np.array([1j, 1, 1]))


# --------------------------------------------------------------------------- where and b


@pytest.mark.parametrize("where", [np.ones(3, dtype=int), np.ones((2, 3)), [1, 0, 1]])
def test_where_dtype(caller, op, where):
    with pytest.raises(TypeError, match=r"where must be a boolean array; got dtype"):
        caller(op, X, -1, where=where)


@pytest.mark.parametrize("shape", [(2,), (3, 3), (2, 3, 1), (4,)])
def test_where_shape(caller, op, shape):
    where = np.ones(shape, dtype=bool)
    pattern = rf"where with shape \({shape[0]},.*cannot be broadcast to the input shape \(2, 3\)"
    with pytest.raises(ValueError, match=pattern):
        caller(op, X, -1, where=where)


@pytest.mark.parametrize("shape", [(2,), (3, 3), (4,)])
def test_weights_shape(caller, shape):
    pattern = rf"b with shape \({shape[0]},.*cannot be broadcast to the input shape \(2, 3\)"
    with pytest.raises(ValueError, match=pattern):
        caller("logsumexp", X, -1, b=np.ones(shape))


# --------------------------------------------------------------------------- out=


def _out_shape(op, keepdims=False):
    if op != "logsumexp":
        return (2, 3)
    return (2, 1) if keepdims else (2,)


def test_out_not_an_array(op):
    with pytest.raises(TypeError, match=r"out must be a numpy.ndarray; got list"):
        call(op, X, -1, out=[0.0] * 6)


@pytest.mark.parametrize("bad", [(3, 2), (6,), (1, 2, 3), ()])
def test_out_shape(op, bad):
    want = _out_shape(op)
    with pytest.raises(ValueError, match=re.escape(f"out has shape {bad}; expected {want}")):
        call(op, X, -1, out=np.empty(bad))


def test_out_shape_keepdims():
    with pytest.raises(ValueError, match=r"out has shape \(2,\); expected \(2, 1\)"):
        logsumexp(X, keepdims=True, out=np.empty(2))


@pytest.mark.parametrize(
    ("x", "kw", "out_dtype", "expected"),
    [
        (X, {}, np.float32, "float64"),
        (X.astype(np.float16), {}, np.float32, "float16"),
        (X.astype(np.int64), {}, np.int64, "float64"),
        (X, {"dtype": np.float32}, np.float64, "float32"),
    ],
)
def test_out_dtype(op, x, kw, out_dtype, expected):
    out = np.empty(_out_shape(op), dtype=out_dtype)
    with pytest.raises(
        TypeError, match=rf"out has dtype {np.dtype(out_dtype)}; expected {expected}"
    ):
        call(op, x, -1, out=out, **kw)


def test_out_read_only(op):
    out = np.empty(_out_shape(op))
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out is read-only; it must be writeable"):
        call(op, X, -1, out=out)
    # out=x with a read-only x
    x = X.copy()
    x.flags.writeable = False
    if op != "logsumexp":
        with pytest.raises(ValueError, match=r"out is read-only"):
            call(op, x, -1, out=x)


def test_out_is_int_x_rejected():
    x = np.arange(6).reshape(2, 3)
    with pytest.raises(TypeError, match=r"out has dtype int64; expected float64"):
        softmax(x, out=x)


# --------------------------------------------------------------------------- dtype=


@pytest.mark.parametrize(
    ("dtype", "pattern"),
    [
        (np.int64, r"dtype must be one of float16, float32, float64; got int64"),
        ("complex64", r"dtype must be one of float16, float32, float64; got complex64"),
        (bool, r"got bool"),
        (np.longdouble, r"dtype must be one of float16, float32, float64"),
        ("not-a-dtype", r"dtype must be a floating dtype; got 'not-a-dtype'"),
        (object, r"got object"),
    ],
)
def test_dtype_argument_rejected(op, dtype, pattern):
    if dtype is np.longdouble and np.dtype(np.longdouble) == np.float64:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match=pattern):
        call(op, X, -1, dtype=dtype)


# --------------------------------------------------------------------------- call forms


@pytest.mark.parametrize("fn", [softmax, log_softmax, logsumexp])
def test_data_is_positional_only_and_options_keyword_only(fn):
    with pytest.raises(TypeError):
        fn(x=X)
    with pytest.raises(TypeError):
        fn(X, -1, 2.0)  # temperature (softmax) / b (logsumexp) must be keywords
    assert np.shape(fn(X, 0)) == np.shape(fn(X, axis=0))


@pytest.mark.parametrize("op", OPS)
def test_errors_before_any_output_is_written(op):
    # a failing call must not have half-written out=
    out = np.full(_out_shape(op), 5.0)
    with pytest.raises(ValueError):
        call(op, X, -1, out=out, temperature=0.0)
    assert np.all(out == 5.0)
