"""Regression tests for the dense / gradient / online defects of the hardening pass.

Each test is named after what it guards; each fails on the code before its fix.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.exceptions import AxisError

import softmaxkit as sk
from softmaxkit import reference as ref


def _tol(dtype):
    return {np.float16: 2e-3, np.float32: 2e-6, np.float64: 1e-13}[np.dtype(dtype).type]


@given(
    op=st.sampled_from(["softmax", "log_softmax"]),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    rows=st.integers(1, 5),
    cols=st.integers(1, 40),
    shift=st.integers(-7, 7),
    axis=st.sampled_from([0, -1]),
)
@example(op="log_softmax", dtype=np.float64, rows=1, cols=4000, shift=3, axis=-1)
@example(op="softmax", dtype=np.float16, rows=2, cols=2, shift=1, axis=0)
def test_out_partly_overlapping_x_is_exact(op, dtype, rows, cols, shift, axis):
    # out= a view of the same buffer as x, shifted by `shift` elements, same strides:
    # the result must equal the non-overlapping call (NumPy ufunc semantics)
    n = rows * cols
    buf = np.random.default_rng(1000 + n + shift).standard_normal(n + abs(shift)).astype(dtype)
    lo, hi = (0, shift) if shift >= 0 else (-shift, 0)
    x = buf[lo : lo + n].reshape(rows, cols)
    out = buf[hi : hi + n].reshape(rows, cols)
    expected = getattr(ref, op)(x.astype(np.float64), axis=axis)
    res = getattr(sk, op)(x, axis=axis, out=out)
    assert res is out
    np.testing.assert_allclose(res.astype(np.float64), expected, rtol=_tol(dtype), atol=_tol(dtype))


def test_out_overlapping_where_is_exact():
    buf = np.zeros(24)
    x = np.linspace(-2, 2, 12)
    mask = buf.view(np.bool_)[:12]  # the mask's bytes are the first bytes of out
    mask[:] = [True, False] * 6
    expected = ref.softmax(x, where=mask.copy())
    out = buf[:12]
    res = sk.softmax(x, where=mask, out=out)
    np.testing.assert_allclose(res, expected, rtol=1e-13, atol=1e-15)


def test_logsumexp_vjp_masked_entries_of_a_nan_row_are_zero():
    g = sk.logsumexp_vjp(np.array([np.nan, 1.0, 2.0]), 1.0, where=np.array([True, True, False]))
    assert np.isnan(g[0]) and np.isnan(g[1]) and g[2] == 0.0
    g2 = sk.logsumexp_vjp(
        np.array([[np.nan, 1.0, 2.0], [0.0, 1.0, 2.0]]), [1.0, 2.0], where=np.array([1, 1, 0], bool)
    )
    assert g2[0, 2] == 0.0 and g2[1, 2] == 0.0
    np.testing.assert_allclose(g2[1, :2], 2 * ref.softmax(np.array([0.0, 1.0])))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: sk.softmax(x, axis=0),
        lambda x: sk.log_softmax(x, axis=0),
        lambda x: sk.logsumexp(x, axis=0),
        lambda x: sk.logsumexp(x, axis=None),
        lambda x: sk.logsumexp_vjp(x, 1.0, axis=0),
        lambda x: sk.logsumexp_vjp(x, 1.0, axis=None),
        lambda x: sk.softmax_vjp(x, 1.0, axis=0),
        lambda x: sk.log_softmax_vjp(x, 1.0, axis=0),
        lambda x: sk.softmax_jvp(x, 1.0, axis=0)[1],
    ],
)
def test_zero_d_input_is_its_own_row(call):
    res = np.asarray(call(np.float64(1.5)))
    assert res.shape == ()
    assert np.isfinite(res)


def test_zero_d_values():
    assert sk.logsumexp_vjp(np.float64(1.5), 2.0, axis=0) == 2.0
    assert sk.softmax(np.float64(1.5)) == 1.0
    assert sk.log_softmax(np.float64(1.5)) == 0.0
    assert sk.logsumexp(np.float64(1.5)) == 1.5
    with pytest.raises(AxisError):
        sk.softmax(np.float64(1.5), axis=1)


_FRESH = """
import numpy as np, softmaxkit as sk
try:
    sk.{call}(np.ma.MaskedArray([1., 2., 1000.], mask=[0, 0, 1]))
except TypeError as e:
    assert "MaskedArray" in str(e) and "where" in str(e), e
    print("refused")
"""


@pytest.mark.parametrize("call", ["softmax", "log_softmax", "logsumexp"])
def test_masked_array_is_refused_in_a_fresh_process(call):
    r = subprocess.run(
        [sys.executable, "-c", _FRESH.format(call=call)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "refused"


@pytest.mark.parametrize(
    "call",
    [
        sk.softmax,
        sk.log_softmax,
        sk.logsumexp,
        lambda x: sk.cross_entropy(np.atleast_2d(x), np.zeros(np.atleast_2d(x).shape[0], int)),
        lambda x: sk.topk_softmax(x, 1),
        lambda x: sk.Normalizer.empty(()).update(x),
    ],
)
def test_masked_array_is_refused_after_earlier_calls(call):
    sk.softmax(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="MaskedArray"):
        call(np.ma.MaskedArray([1.0, 2.0, 1000.0], mask=[0, 0, 1]))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_matrix_and_subclasses_are_read_as_ndarray():
    m = np.matrix([[1.0, 2.0], [3.0, 5.0]])
    res = sk.softmax(m)
    assert type(res) is np.ndarray
    np.testing.assert_allclose(res, ref.softmax(np.asarray(m)))
    np.testing.assert_allclose(sk.logsumexp(m, axis=0), ref.logsumexp(np.asarray(m), axis=0))

    class Sub(np.ndarray):
        pass

    s = np.arange(6.0).reshape(2, 3).view(Sub)
    assert type(sk.log_softmax(s)) is np.ndarray


@pytest.mark.parametrize("n", [5, 17, 1000])
@pytest.mark.parametrize("dt", [">f8", ">f4", ">f2", ">i4"])
def test_big_endian_input_is_converted(n, dt):
    x = (np.arange(n, dtype=np.float64) / 7.0).astype(dt)
    xn = x.astype(np.float64)
    rtol = 2e-3 if dt == ">f2" else 1e-6
    for op in ("softmax", "log_softmax"):
        res = getattr(sk, op)(x)
        assert res.dtype.isnative
        np.testing.assert_allclose(res.astype(float), getattr(ref, op)(xn), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(float(sk.logsumexp(x)), ref.logsumexp(xn), rtol=rtol)
    st_ = sk.Normalizer.empty(()).update(x)
    np.testing.assert_allclose(float(st_.logsumexp()), ref.logsumexp(xn), rtol=rtol)
    np.testing.assert_allclose(
        sk.topk_softmax(x, 2)[0], np.sort(ref.softmax(xn))[::-1][:2], rtol=rtol
    )


def test_normalizer_softmax_of_float16_chunks():
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float16)
    st_ = sk.Normalizer.empty((3,)).update(x[:, :4]).update(x[:, 4:])
    for op in ("softmax", "log_softmax"):
        parts = [getattr(st_, op)(x[:, :4]), getattr(st_, op)(x[:, 4:])]
        assert parts[0].dtype == np.float16
        got = np.concatenate(parts, axis=1).astype(np.float64)
        np.testing.assert_allclose(
            got, getattr(ref, op)(x.astype(np.float64)), rtol=2e-3, atol=2e-3
        )


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: sk.logsumexp_vjp([1.0, 2.0], "a"), TypeError, "g "),
        (lambda: sk.logsumexp_vjp([1.0, 2.0], 1 + 2j), TypeError, "g "),
        (lambda: sk.softmax_jvp([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError, "v with shape"),
        (lambda: sk.softmax_jvp([1.0, 2.0], "a"), TypeError, "v "),
        (lambda: sk.softmax_jvp([1.0, 2.0], [1j, 2j]), TypeError, "v "),
        (lambda: sk.Normalizer.empty("12"), TypeError, "shape must be an int"),
        (lambda: sk.Normalizer.empty((2, "3")), TypeError, "shape must be an int"),
        (lambda: sk.Normalizer.empty((2.5,)), TypeError, "shape must be an int"),
    ],
)
def test_named_errors_for_gradients_and_state_shapes(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_logsumexp_result_dtype_follows_x_not_b():
    # the documented rule: the result dtype is x's (or dtype=); b is read in float64,
    # the accumulator, so a float64 b never rounds, but it does not widen the result
    x = np.array([0.0, 1.0, 2.0], np.float32)
    b = np.array([1.0, 0.5, 2.0], np.float64)
    res = sk.logsumexp(x, b=b)
    assert res.dtype == np.float32
    np.testing.assert_allclose(res, ref.logsumexp(x.astype(np.float64), b=b), rtol=1e-7)
    assert sk.logsumexp(x, b=b, dtype=np.float64).dtype == np.float64
