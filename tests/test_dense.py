"""The dense ops against their float64 reference twin, over the whole option grid.

Every op x every input dtype x shapes (0-d, 0-size, 1-element, odd) x every axis
form (negative, tuple, None, ()) x C/F order, then ``keepdims``, ``out=`` (in place
too), ``where``, ``temperature``, ``dtype=`` and ``b``; and the edge-case contract
of docs/dense.md, cell by cell, for every op and float dtype.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from strategies import (
    FLOAT_DTYPES,
    INPUT_DTYPES,
    OPS,
    assert_close,
    call,
    call_reference,
    make_array,
    result_dtype,
)

import softmaxkit
from softmaxkit import log_softmax, logsumexp, reference, softmax

inf, nan = np.inf, np.nan

# (shape, axis): 0-d, 0-size, 1-element and odd shapes with every form of axis.
GRID = [
    ((), -1),
    ((), 0),
    ((), None),
    ((0,), -1),
    ((1,), 0),
    ((7,), -1),
    ((1, 1), None),
    ((3, 0), -1),
    ((3, 0), 0),
    ((0, 5), -1),
    ((0, 5), None),
    ((3, 5), 0),
    ((3, 5), 1),
    ((3, 5), -2),
    ((3, 5), (0, 1)),
    ((3, 5), (-1, 0)),
    ((2, 3, 5), 1),
    ((2, 3, 5), (0, 2)),
    ((2, 3, 5), (-1, -3)),
    ((2, 3, 5), None),
    ((2, 3, 5), ()),
    ((4, 1, 3), (1,)),
    ((2, 1, 3, 4), (1, 3)),
]
GRID_IDS = [f"{s}-ax{a}" for s, a in GRID]
# F order only differs from C order for 2+ dimensions
GRID_ORDERS = [
    pytest.param(s, a, o, id=f"{s}-ax{a}-{o}") for s, a in GRID for o in "CF"[: 1 + (len(s) > 1)]
]
GRID_DTYPES = (np.float16, np.float32, np.float64, np.int64, np.bool_)


def _reduced_shape(shape, axis, keepdims=False):
    return np.sum(np.zeros(shape), axis=axis, keepdims=keepdims).shape


def _check_kind(res, shape, dtype):
    """0-d results are NumPy scalars (like NumPy reductions), others ndarrays."""
    if shape == ():
        assert isinstance(res, np.generic), type(res)
    else:
        assert isinstance(res, np.ndarray), type(res)
    assert res.shape == shape
    assert res.dtype == dtype


@pytest.mark.parametrize(("shape", "axis", "order"), GRID_ORDERS)
@pytest.mark.parametrize("dtype", GRID_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_matches_reference(op, dtype, shape, axis, order):
    x = make_array(shape, dtype, order, seed=len(shape) * 7 + sum(shape))
    rd = result_dtype(dtype)
    got = call(op, x, axis)
    want = call_reference(op, x, axis)
    expected_shape = shape if op != "logsumexp" else _reduced_shape(shape, axis)
    _check_kind(got, expected_shape, rd)
    assert_close(got, want, op, rd)
    if op == "logsumexp":
        kept = logsumexp(x, axis=axis, keepdims=True)
        kshape = _reduced_shape(shape, axis, keepdims=True)
        _check_kind(kept, kshape, rd)
        assert_close(kept, reference.logsumexp(x, axis=axis, keepdims=True), op, rd)
        assert_close(np.reshape(kept, expected_shape), got, op, rd)


@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_read_only_inputs(op, dtype):
    x = make_array((4, 6), dtype, "F", seed=3)
    where = np.ones((1, 6), dtype=bool)
    where[0, 2] = False
    kw = {"where": where}
    if op == "logsumexp":
        kw["b"] = np.linspace(0.5, 2.0, 6)
        kw["b"].flags.writeable = False
    where.flags.writeable = False
    expected = call(op, x.copy(), 0, **{k: np.array(v) for k, v in kw.items()})
    x.flags.writeable = False
    got = call(op, x, 0, **kw)
    rd = result_dtype(dtype)
    assert_close(got, expected, op, rd)
    assert_close(got, call_reference(op, x, 0, **kw), op, rd)


def test_array_likes():
    assert_close(softmax([[1, 2], [3, 5]]), reference.softmax(np.array([[1.0, 2], [3, 5]])),
                 "softmax", np.float64)  # fmt: skip
    assert softmax((1, 2, 3)).dtype == np.float64
    assert log_softmax([True, False]).dtype == np.float64
    assert logsumexp([[1, 2], [3, 5]], axis=None) == pytest.approx(math.log(sum(
        math.exp(v) for v in (1, 2, 3, 5))), rel=1e-15)  # fmt: skip
    assert softmax(np.float32(3.0)) == np.float32(1.0)


def test_zero_d_results_are_numpy_scalars():
    r = softmax(5.0)
    assert type(r) is np.float64 and r == 1.0
    r = log_softmax(np.float32(2.0))
    assert type(r) is np.float32 and r == 0.0
    r = logsumexp(np.float16([1.0, 2.0]))
    assert type(r) is np.float16
    r = logsumexp([[1.0, 2.0], [3.0, 4.0]], axis=None)
    assert type(r) is np.float64
    lse, sign = logsumexp([1.0, 2.0], b=[1.0, -2.0], return_sign=True)
    assert type(lse) is np.float64 and type(sign) is np.float64 and sign == -1.0
    # keepdims keeps an array; out= returns out itself, even when 0-d
    assert logsumexp([1.0, 2.0], keepdims=True).shape == (1,)
    out = np.empty((), dtype=np.float64)
    assert logsumexp([1.0, 2.0], out=out) is out
    out = np.empty((), dtype=np.float64)
    assert softmax(3.0, out=out) is out and out[()] == 1.0


# --------------------------------------------------------------------------- out=

OUT_GRID = [((3, 5), -1), ((3, 5), 0), ((2, 3, 5), (0, 2)), ((2, 3, 5), None), ((7,), 0)]


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(("shape", "axis"), OUT_GRID, ids=[str(g) for g in OUT_GRID])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_out(op, dtype, shape, axis, order):
    x = make_array(shape, np.float64, seed=5)
    oshape = shape if op != "logsumexp" else _reduced_shape(shape, axis)
    out = np.full(oshape, 7.0, dtype=dtype, order=order)
    res = call(op, x, axis, dtype=dtype, out=out)
    assert res is out
    assert_close(out, call_reference(op, x, axis), op, dtype)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(("shape", "axis"), OUT_GRID, ids=[str(g) for g in OUT_GRID])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_out_is_x_in_place(op, dtype, shape, axis, order):
    x = make_array(shape, dtype, order, seed=6)
    want = call_reference(op, x, axis)
    before = call(op, x.copy(), axis)
    res = call(op, x, axis, out=x)
    assert res is x
    assert_close(x, want, op, dtype)
    assert_close(x, before, op, dtype)


@pytest.mark.parametrize("axis", [0, 1, None])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_out_overlapping_input_in_another_layout(op, axis):
    # out is the transpose of x: same memory, different strides; the result must be
    # the op of the original x, not of a half-overwritten one.
    x = make_array((5, 5), np.float64, seed=7)
    want = call_reference(op, x.copy(), axis)
    res = call(op, x, axis, out=x.T)
    assert_close(res, want, op, np.float64)
    # out a reversed view of x
    x = make_array((4, 6), np.float64, seed=8)
    want = call_reference(op, x.copy(), axis)
    res = call(op, x, axis, out=x[::-1, ::-1])
    assert_close(res, want, op, np.float64)


@pytest.mark.parametrize("op", OPS)
def test_out_non_contiguous_view(op):
    x = make_array((3, 5), np.float32, seed=9)
    base = np.zeros((3, 10) if op != "logsumexp" else (6,), dtype=np.float32)
    out = base[:, ::2] if op != "logsumexp" else base[::2]
    res = call(op, x, -1, out=out)
    assert res is out
    assert_close(out, call_reference(op, x, -1), op, np.float32)
    # the skipped elements are untouched
    assert not np.any(base[:, 1::2] if op != "logsumexp" else base[1::2])


def test_logsumexp_out_with_return_sign_and_keepdims():
    x = make_array((3, 4), np.float64, seed=10)
    b = np.array([1.0, -1.0, 2.0, -3.0])
    out = np.empty((3, 1))
    lse, sign = logsumexp(x, axis=1, b=b, keepdims=True, return_sign=True, out=out)
    assert lse is out
    want, wsign = reference.logsumexp(x, axis=1, b=b, keepdims=True, return_sign=True)
    assert_close(lse, want, "logsumexp", np.float64)
    np.testing.assert_array_equal(sign, wsign)
    assert sign.shape == (3, 1)


# --------------------------------------------------------------------------- where

WHERES = {
    "full": lambda rng: rng.random((4, 6)) < 0.6,
    "row-broadcast": lambda rng: np.array([[True, False, True, True, False, True]]),
    "col-broadcast": lambda rng: np.array([[True], [False], [True], [True]]),
    "1d": lambda rng: np.array([False, True, True, True, True, False]),
    "all-true": lambda rng: np.True_,
    "all-false": lambda rng: np.False_,
}


@pytest.mark.parametrize("axis", [-1, 0, None, (0, 1)])
@pytest.mark.parametrize("wname", list(WHERES))
@pytest.mark.parametrize("dtype", (*FLOAT_DTYPES, np.int64), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_where(op, dtype, wname, axis, rng):
    x = make_array((4, 6), dtype, "F", seed=11)
    where = WHERES[wname](rng)
    got = call(op, x, axis, where=where)
    want = call_reference(op, x, axis, where=where)
    assert_close(got, want, op, result_dtype(dtype))
    if op != "logsumexp":
        full = np.broadcast_to(where, x.shape)
        fill = 0.0 if op == "softmax" else -inf
        assert np.all(np.asarray(got)[~full] == fill)


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("temperature", [0.25, 3.0, 1e-50, 1e40])
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_temperature(op, dtype, temperature):
    x = make_array((3, 7), dtype, seed=12)
    got = call(op, x, -1, temperature=temperature)
    want = call_reference(op, x, -1, temperature=temperature)
    assert_close(got, want, op, result_dtype(dtype))
    # the op acts on x / T, with x / T formed in float64
    with np.errstate(over="ignore"):
        scaled = x.astype(np.float64) / temperature
    assert_close(got, call_reference(op, scaled, -1), op, result_dtype(dtype))


def test_temperature_regression_float32_tiny_t():
    # float32(1e-50) == 0: dividing by a float32 temperature gave x/0 -> [nan, nan].
    r = softmax(np.float32([0.0, 1.0]), temperature=1e-50)
    np.testing.assert_array_equal(r, np.float32([0.0, 1.0]))
    assert logsumexp(np.float64([0.0, 1.0]), temperature=1e-50) == 1e50
    assert logsumexp(np.float32([0.0, 1.0]), temperature=1e-50) == np.float32(inf)  # rounded


# --------------------------------------------------------------------------- dtype=


@pytest.mark.parametrize("out_dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("in_dtype", INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_dtype_argument(op, in_dtype, out_dtype):
    x = make_array((3, 5), in_dtype, seed=13)
    for spelling in (out_dtype, np.dtype(out_dtype).name):
        got = call(op, x, 0, dtype=spelling)
        assert got.dtype == out_dtype
        assert_close(got, call_reference(op, x, 0), op, out_dtype)


def test_dtype_narrowing_computes_in_the_input_precision():
    # float64 input, float32 output: computed in float64 and rounded at the end, so
    # values beyond float32's range do not become inf first ([0.5, 0.5] from inf, inf).
    np.testing.assert_array_equal(softmax([1e300, 2e300], dtype=np.float32), [0.0, 1.0])
    assert logsumexp([1e39, 0.0], dtype=np.float32) == np.float32(inf)
    np.testing.assert_array_equal(log_softmax([0.0, -1e300], dtype=np.float32), [0.0, -inf])
    # float16 input: log_softmax values below -65504 round to -inf without a warning
    np.testing.assert_array_equal(log_softmax(np.float16([65504, -65504])), [0.0, -inf])


# --------------------------------------------------------------------------- b weights


@pytest.mark.parametrize(
    "bshape", [(4, 6), (6,), (4, 1), (), (1, 6)], ids=lambda s: f"b{s}".replace(" ", "")
)
@pytest.mark.parametrize("axis", [-1, 0, None])
@pytest.mark.parametrize("dtype", (*FLOAT_DTYPES, np.int64), ids=lambda d: np.dtype(d).name)
def test_logsumexp_weights(dtype, axis, bshape, rng):
    x = make_array((4, 6), dtype, seed=14)
    b = rng.uniform(-1.0, 2.0, size=bshape)
    rd = result_dtype(dtype)
    for return_sign in (False, True):
        got = logsumexp(x, axis=axis, b=b, return_sign=return_sign)
        want = reference.logsumexp(x, axis=axis, b=b, return_sign=return_sign)
        if return_sign:
            assert_close(got[0], want[0], "logsumexp", rd)
            np.testing.assert_array_equal(got[1], want[1])
            assert np.asarray(got[1]).dtype == rd
        else:
            assert_close(got, want, "logsumexp", rd)
    # positive integer weights equal repeating the entries
    if axis == -1 and bshape == (6,):
        reps = np.arange(1, 7)
        rep = np.repeat(x, reps, axis=1)
        assert_close(logsumexp(x, b=reps), logsumexp(rep), "logsumexp", rd)


def test_logsumexp_weights_match_scipy(rng):
    sc = pytest.importorskip("scipy.special")
    x = rng.normal(size=(50, 9)) * 5
    b = rng.normal(size=(50, 9))
    b[rng.random(b.shape) < 0.2] = 0.0
    # b == 0 entries are ignored even where x is inf or NaN
    x[0, 0], b[0, 0] = nan, 0.0
    x[1, 1], b[1, 1] = inf, 0.0
    x[2, 2], b[2, 2] = -inf, 3.0
    for axis in (-1, 0, None):
        got, gs = logsumexp(x, axis=axis, b=b, return_sign=True)
        want, ws = sc.logsumexp(x, axis=axis, b=b, return_sign=True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(gs, ws)
        np.testing.assert_allclose(
            logsumexp(x, axis=axis, b=b), sc.logsumexp(x, axis=axis, b=b), rtol=1e-12, atol=1e-13
        )


def test_logsumexp_weight_semantics():
    # negative sum without return_sign: NaN (SciPy), silently assigned, no warning
    assert np.isnan(logsumexp([1.0, 2.0], b=[1.0, -1.0]))
    lse, sign = logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    assert sign == -1.0 and lse == pytest.approx(math.log(math.e**2 - math.e), rel=1e-15, abs=0)
    # an exactly cancelling sum: -inf with sign 0
    assert logsumexp([1.0, 1.0], b=[1.0, -1.0], return_sign=True) == (-inf, 0.0)
    # b == 0 ignores inf and NaN in x; a NaN weight makes the row NaN
    assert logsumexp([1.0, inf, nan], b=[1.0, 0.0, 0.0]) == 1.0
    assert np.isnan(logsumexp([1.0, 2.0], b=[nan, 1.0]))
    # +inf entries: the sign of their total weight; cancelling +inf weights -> NaN
    assert logsumexp([inf, 1.0], b=[-1.0, 1.0], return_sign=True) == (inf, -1.0)
    r = logsumexp([inf, inf], b=[1.0, -1.0], return_sign=True)
    assert np.isnan(r[0]) and np.isnan(r[1])
    # weights with where: masked-out weights (even NaN) are ignored
    assert logsumexp([1.0, 2.0], b=[1.0, nan], where=[True, False]) == 1.0
    # huge weights are not rounded through float32 for float32 input
    got = logsumexp(np.float32([0.0, 0.0]), b=[1e39, 1e39])
    assert got == pytest.approx(math.log(2e39), rel=1e-6)


# --------------------------------------------------------------------------- edge-case contract

L2 = math.log(2.0)
L3 = math.log(3.0)

# name: (row, where or None, softmax, log_softmax, logsumexp) -- docs/dense.md, the table.
EDGE_ROWS = {
    "all-neginf": ([-inf] * 5, None, [0.0] * 5, [-inf] * 5, -inf),
    "fully-masked": ([1.0, 2.0, 3.0, -inf, 0.5], [False] * 5, [0.0] * 5, [-inf] * 5, -inf),
    "masked-leaves-neginf": (
        [3.0, -inf, 2.0, -inf, 1.0],
        [False, True, False, True, False],
        [0.0] * 5,
        [-inf] * 5,
        -inf,
    ),
    "posinf-k1": (
        [1.0, inf, -inf, 0.0, 2.0],
        None,
        [0.0, 1.0, 0.0, 0.0, 0.0],
        [-inf, 0.0, -inf, -inf, -inf],
        inf,
    ),
    "posinf-k2": (
        [inf, 1.0, inf, -inf, 3.0],
        None,
        [0.5, 0.0, 0.5, 0.0, 0.0],
        [-L2, -inf, -L2, -inf, -inf],
        inf,
    ),
    "posinf-k3-masked-one": (
        [inf, inf, inf, inf, 0.0],
        [True, True, False, True, True],
        [1 / 3, 1 / 3, 0.0, 1 / 3, 0.0],
        [-L3, -L3, -inf, -L3, -inf],
        inf,
    ),
    "posinf-all": ([inf] * 5, None, [0.2] * 5, [-math.log(5.0)] * 5, inf),
    "posinf-masked-out": (
        [inf, 0.0, 0.0, -inf, inf],
        [False, True, True, True, False],
        [0.0, 0.5, 0.5, 0.0, 0.0],
        [-inf, -L2, -L2, -inf, -inf],
        L2,
    ),
    "nan": ([1.0, nan, 2.0, 3.0, 4.0], None, [nan] * 5, [nan] * 5, nan),
    "nan-and-posinf": ([inf, nan, 1.0, inf, 0.0], None, [nan] * 5, [nan] * 5, nan),
    "nan-and-neginf": ([-inf, -inf, nan, -inf, -inf], None, [nan] * 5, [nan] * 5, nan),
    "nan-masked-out": (
        [nan, 0.0, 0.0, nan, -inf],
        [False, True, True, False, True],
        [0.0, 0.5, 0.5, 0.0, 0.0],
        [-inf, -L2, -L2, -inf, -inf],
        L2,
    ),
}
_EXPECT = {"softmax": 2, "log_softmax": 3, "logsumexp": 4}


def _edge_batch(dtype):
    """All edge rows stacked under a regular first row, plus the where mask."""
    names = list(EDGE_ROWS)
    x = np.array([[0.5, -1.0, 2.0, 0.0, 1.5]] + [EDGE_ROWS[n][0] for n in names])
    where = np.ones(x.shape, dtype=bool)
    for i, n in enumerate(names, start=1):
        if EDGE_ROWS[n][1] is not None:
            where[i] = EDGE_ROWS[n][1]
    return names, x.astype(dtype), where


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_edge_case_contract(op, dtype, layout, temperature):
    names, x, where = _edge_batch(dtype)
    axis = -1
    if layout == "columns":  # the same rows as columns of an F-ordered array, axis=0
        x, where, axis = np.asfortranarray(x.T), where.T, 0
    # any floating-point error escaping from NumPy code would raise here
    with np.errstate(all="raise"):
        got = np.asarray(call(op, x, axis, where=where, temperature=temperature))
        ref = np.asarray(call_reference(op, x, axis, where=where, temperature=temperature))
    if layout == "columns":
        got, ref = (got.T, ref.T) if op != "logsumexp" else (got, ref)
    rd = np.dtype(dtype)
    assert got.dtype == rd
    for i, name in enumerate(names, start=1):
        # (the finite entries of the edge rows are all 0, so T does not change them)
        expected = np.asarray(EDGE_ROWS[name][_EXPECT[op]], dtype=np.float64)
        assert_close(got[i], expected, op, rd, err_msg=f"{op} {name}")
        assert_close(ref[i], expected, op, np.float64, err_msg=f"reference {op} {name}")
    assert_close(got[0], ref[0], op, rd)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_edge_logsumexp_sign(dtype):
    names, x, where = _edge_batch(dtype)
    lse, sign = logsumexp(x, where=where, return_sign=True)
    rlse, rsign = reference.logsumexp(x, where=where, return_sign=True)
    expected = {"all-neginf": 0.0, "fully-masked": 0.0, "masked-leaves-neginf": 0.0}
    for i, name in enumerate(names, start=1):
        want = expected.get(name, nan if name.startswith("nan") and "masked" not in name else 1.0)
        np.testing.assert_array_equal(sign[i], want, err_msg=name)
        np.testing.assert_array_equal(rsign[i], want, err_msg=name)
    np.testing.assert_array_equal(sign, rsign)
    assert_close(lse, rlse, "logsumexp", dtype)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((3, 0), -1), ((0,), 0), ((0, 4), 0), ((0, 4), -1), ((2, 0, 3), (1, 2)), ((0,), None)],
)
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_edge_size_zero(dtype, shape, axis):
    x = np.zeros(shape, dtype=dtype)
    rd = result_dtype(dtype)
    for op in ("softmax", "log_softmax"):
        r = call(op, x, axis)
        assert isinstance(r, np.ndarray) and r.shape == shape and r.dtype == rd
    rshape = _reduced_shape(shape, axis)
    with np.errstate(all="raise"):
        lse, sign = logsumexp(x, axis=axis, return_sign=True)
        w = logsumexp(x, axis=axis, where=np.zeros(shape, bool), b=np.ones(shape))
    for r in (lse, w, reference.logsumexp(x, axis=axis)):
        assert r.shape == rshape
        assert np.all(r == -inf)
    assert np.all(sign == 0.0)  # SciPy says -1 here: see test_accuracy.py::test_scipy_differences


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_edge_b_zero_ignores_nan_and_inf(dtype):
    x = np.array([[nan, 1.0, 2.0], [inf, 1.0, 2.0], [-inf, 1.0, 2.0]], dtype=dtype)
    b = np.array([0.0, 1.0, 1.0])
    want = math.log(math.e + math.e**2)
    assert_close(logsumexp(x, b=b), [want] * 3, "logsumexp", dtype)
    assert_close(reference.logsumexp(x, b=b), [want] * 3, "logsumexp", np.float64)


def test_integer_input_where_and_empty():
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int8)
    where = np.array([[True, False, True], [False, False, False]])
    r = softmax(x, where=where)
    assert r.dtype == np.float64
    np.testing.assert_allclose(r[0], [1 / (1 + math.e**2), 0.0, 1 / (1 + math.e**-2)])
    np.testing.assert_array_equal(r[1], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(log_softmax(x, where=where)[1], [-inf] * 3)
    assert logsumexp(x, where=where)[1] == -inf


def test_module_namespace():
    assert softmaxkit.softmax is softmax


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(17,), (1, 128), (3, 10), (64, 129), (2, 3, 3000)])
def test_fast_path_matches_the_validated_path(dtype, shape):
    """The public layer's fast path (C-contiguous native float ndarray, last axis,
    a float temperature, default options) gives bit for bit what the validated path
    gives: a NumPy scalar temperature forces the validated path, the same kernels
    after it."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 30).astype(dtype)
    flat = x.reshape(-1, shape[-1])
    if flat.shape[0] >= 3:
        flat[0, :2] = np.inf
        flat[1, 1] = np.nan
        flat[2, :] = -np.inf
    for op in (softmax, log_softmax, logsumexp):
        for t in (1.0, 0.7, 3e-5, 1e30):
            # a Python float takes the fast path, the same value as np.float64 not
            fast, slow = op(x, temperature=t), op(x, temperature=np.float64(t))
            np.testing.assert_array_equal(fast, slow)
            assert type(fast) is type(slow) and fast.dtype == slow.dtype
            out = np.empty_like(slow)
            assert op(x, out=out, temperature=t) is out
            np.testing.assert_array_equal(out, slow)


class _Sub(np.ndarray):
    pass


def test_fast_path_leaves_other_calls_to_the_validated_path():
    """Inputs just outside the fast path's conditions: subclasses, big-endian, F order,
    an overlapping or strided ``out``, temperatures beyond [1e-30, 1e30]: each gives
    the reference answer (or the validated path's error)."""
    x = np.random.default_rng(8).standard_normal((6, 40))
    want = reference.softmax(x)
    np.testing.assert_allclose(softmax(x.astype(">f8")), want, rtol=1e-14)
    np.testing.assert_allclose(softmax(np.asfortranarray(x)), want, rtol=1e-14)
    np.testing.assert_allclose(softmax(x.view(_Sub)), want, rtol=1e-14)
    y = x.copy()
    assert softmax(y, out=y) is y  # in place
    np.testing.assert_allclose(y, want, rtol=1e-14)
    big = np.zeros((6, 80))
    strided = big[:, ::2]
    assert softmax(x, out=strided) is strided
    np.testing.assert_allclose(strided, want, rtol=1e-14)
    for t in (1e-300, 1e300):  # 1 / T beyond float32 (the tiny-temperature fallback)
        xs = x.astype(np.float32)
        with np.errstate(over="ignore"):
            want32 = reference.log_softmax(xs, temperature=t).astype(np.float32)
        np.testing.assert_allclose(log_softmax(xs, temperature=t), want32, rtol=1e-6)
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            softmax(x, temperature=t)
    lse = np.empty(7)
    with pytest.raises(ValueError, match="out"):
        logsumexp(x, out=lse)
    with pytest.raises(ValueError, match="out"):
        softmax(x, out=np.empty((6, 41)))
