"""The Array API driver: torch and array_api_strict arrays against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit import reference as ref

OPS = ("softmax", "log_softmax", "logsumexp")


def _strict():
    return pytest.importorskip("array_api_strict")


def _torch():
    return pytest.importorskip("torch")


def _make(lib, a, dtype=None):
    """An array of ``lib`` ("strict" / "torch") holding the NumPy array ``a``."""
    if lib == "strict":
        xp = _strict()
        x = xp.asarray(a)
        return x if dtype is None else xp.astype(x, getattr(xp, dtype))
    torch = _torch()
    x = torch.asarray(a)
    return x if dtype is None else x.to(getattr(torch, dtype))


def _np(a):
    if type(a).__module__.startswith("torch"):
        return a.numpy()
    return np.asarray(a)


LIBS = ["strict", "torch"]

# Rows, reduced over the last axis; each row is one cell of the contract.
CELLS = np.array(
    [
        [0.5, -1.0, 2.0, 3.0, -0.25, 1.0],  # regular
        [-np.inf] * 6,  # all -inf
        [1.0, np.inf, 0.0, -np.inf, np.inf, 2.0],  # two +inf
        [1.0, 2.0, 3.0, 4.0, 5.0, np.nan],  # NaN
        [np.nan, np.inf, -np.inf, 1.0, 2.0, 3.0],  # NaN wins over inf
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # fully masked with WHERE
        [0.0, -40.0, -50.0, -60.0, -70.0, -745.0],  # one dominant entry: log1p matters
        [1e4, 1e4, -1e4, 0.0, 3.0, 1e4],  # large magnitudes, ties at the max
    ]
)
WHERE = np.ones(CELLS.shape, bool)
WHERE[5] = False
WHERE[0, 3] = False
WHERE[7, 0] = False


def _check(got, expected, dtype):
    got = _np(got).astype(np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    fin = np.isfinite(expected)
    if dtype == "float64":
        np.testing.assert_allclose(got[fin], expected[fin], rtol=1e-13, atol=0)
    else:
        eps = {"float32": 2e-6, "float16": 2e-3}[dtype]
        np.testing.assert_allclose(got[fin], expected[fin], rtol=eps, atol=eps)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("masked", [False, True])
def test_contract_cells(lib, dtype, op, masked):
    if lib == "strict" and dtype == "float16":
        pytest.skip("array_api_strict has no float16")
    a = CELLS if dtype == "float64" else CELLS.astype(dtype)
    x = _make(lib, a)
    where = WHERE if masked else None
    got = getattr(sk, op)(x, where=where)
    assert type(got) is type(x)
    assert got.dtype == x.dtype
    expected = getattr(ref, op)(a.astype(np.float64), where=where)
    _check(got, expected, dtype)
    if op == "softmax":
        p = _np(got).astype(np.float64)
        np.testing.assert_array_equal(p[1], 0.0)
        np.testing.assert_array_equal(p[2], [0, 0.5, 0, 0, 0.5, 0])
        assert np.isnan(p[3]).all() and np.isnan(p[4]).all()
        if masked:
            np.testing.assert_array_equal(p[5], 0.0)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("op", OPS)
def test_all_finite_fast_path(lib, op):
    """Rows with a finite max take a six-pass path; it keeps the log1p split."""
    a = CELLS[[0, 6, 7]]
    for axis in (-1, 0, None):
        got = getattr(sk, op)(_make(lib, a), axis=axis, temperature=0.5)
        _check(got, getattr(ref, op)(a, axis=axis, temperature=0.5), "float64")
    if op == "log_softmax":  # -log1p(exp(-40)) at the dominant entry, not 0.0
        got = _np(sk.log_softmax(_make(lib, np.array([0.0, -40.0]))))
        assert got[0] == -4.248354255291589e-18
    if op == "logsumexp":
        assert float(_np(sk.logsumexp(_make(lib, np.array([0.0, -40.0]))))) == 4.248354255291589e-18


@pytest.mark.parametrize("lib", LIBS)
def test_size_zero_reductions(lib):
    x = _make(lib, np.ones((3, 0)))
    assert tuple(sk.softmax(x).shape) == (3, 0)
    assert tuple(sk.log_softmax(x, axis=None).shape) == (3, 0)
    lse, sign = sk.logsumexp(x, return_sign=True)
    np.testing.assert_array_equal(_np(lse), [-np.inf] * 3)
    np.testing.assert_array_equal(_np(sign), [0.0] * 3)
    np.testing.assert_array_equal(_np(sk.logsumexp(x, axis=0)), np.zeros(0))
    for v in (2.0, np.inf, -np.inf, np.nan):  # 0-d input, axis=None: stays a 0-d array
        for op in OPS:
            got = getattr(sk, op)(_make(lib, np.array(v)), axis=None)
            assert tuple(got.shape) == ()
            np.testing.assert_array_equal(_np(got), getattr(ref, op)(v, axis=None))


@pytest.mark.parametrize("lib", LIBS)
def test_weights_and_sign_match_reference(lib):
    a = CELLS[[0, 1, 2, 6, 7]]
    b = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    x = _make(lib, a)
    for kw in ({"b": b}, {"b": b, "return_sign": True}, {"b": np.abs(b)[None], "keepdims": True}):
        got = sk.logsumexp(x, **kw)
        expected = ref.logsumexp(a, **kw)
        if kw.get("return_sign"):
            np.testing.assert_array_equal(_np(got[1]), expected[1])
            got, expected = got[0], expected[0]
        _check(got, expected, "float64")
    # +inf entries with cancelling weights: NaN (inf - inf), as in the NumPy kernel.
    cancel = sk.logsumexp(_make(lib, np.array([np.inf, 0.0, np.inf])), b=[1.0, 1.0, -1.0])
    assert np.isnan(_np(cancel))
    # b == 0 hides inf and NaN
    hidden = sk.logsumexp(_make(lib, np.array([np.nan, np.inf, 0.0])), b=np.array([0.0, 0, 1]))
    assert float(_np(hidden)) == 0.0


@st.composite
def _cases(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.standard_normal(shape) * draw(st.sampled_from([1.0, 50.0]))
    if draw(st.booleans()):
        for v in (np.inf, -np.inf, np.nan):
            if draw(st.booleans()):
                a.flat[rng.integers(a.size)] = v
    axis = draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.sets(st.integers(0, ndim - 1), min_size=1).map(tuple),
        )
    )
    kw = {"axis": axis, "temperature": draw(st.sampled_from([1.0, 0.25, 4.0]))}
    if draw(st.booleans()):
        kw["where"] = rng.random(shape[draw(st.integers(0, ndim)) :]) > 0.3
    op = draw(st.sampled_from(OPS))
    if op == "logsumexp":
        kw["keepdims"] = draw(st.booleans())
        if draw(st.booleans()):
            kw["b"] = rng.standard_normal(shape[-1:]) * (rng.random(shape[-1:]) > 0.2)
            kw["return_sign"] = True
    return op, a, kw


@settings(max_examples=80, deadline=None)
@given(_cases())
def test_strict_equals_reference(case):
    op, a, kw = case
    x = _make("strict", a)
    got = getattr(sk, op)(x, **kw)
    expected = getattr(ref, op)(a, **kw)
    if kw.get("return_sign"):
        np.testing.assert_array_equal(_np(got[1]), expected[1])
        got, expected = got[0], expected[0]
    _check(got, expected, "float64")


def test_strict_device_is_kept():
    xp = _strict()
    dev = xp.Device("device1")
    x = xp.asarray(CELLS, device=dev)
    # NumPy `where`/`b` are moved to x's device (array_api_strict refuses mixed devices)
    for res in (
        sk.softmax(x, where=WHERE),
        sk.log_softmax(x, axis=0),
        sk.logsumexp(x, b=np.ones(6), keepdims=True),
    ):
        assert res.device == dev
    lse, sign = sk.logsumexp(x, return_sign=True)
    assert lse.device == dev and sign.device == dev


def test_strict_integer_input_without_float64_device():
    xp = _strict()
    x = xp.asarray([[1, 2, 3]], device=xp.Device("CPU_DEVICE"))
    assert sk.softmax(x).dtype == xp.float64
    nf = xp.Device("no_float64")
    info = xp.__array_namespace_info__()
    if "float64" in info.dtypes(device=nf, kind="real floating"):
        pytest.skip("this array_api_strict version's no_float64 device has float64")
    y = sk.softmax(xp.asarray([[1, 2, 3]], device=nf))
    assert y.dtype == xp.float32 and y.device == nf
    y = xp.asarray(y, device=xp.Device("CPU_DEVICE"), copy=True)
    np.testing.assert_allclose(np.asarray(y), ref.softmax([[1, 2, 3]]), rtol=2e-6)


def test_torch_dtype_out_and_device():
    torch = _torch()
    x = torch.asarray(CELLS[[0, 6, 7]], dtype=torch.float32)
    y = sk.softmax(x, dtype=torch.float64)
    assert y.dtype == torch.float64 and y.device == x.device
    assert sk.log_softmax(x, dtype="float16").dtype == torch.float16
    assert sk.logsumexp(torch.arange(6).reshape(2, 3)).dtype == torch.float64  # int -> float64
    out = torch.empty_like(x)
    res = sk.softmax(x, out=out)
    assert res is out
    np.testing.assert_allclose(out.numpy(), ref.softmax(CELLS[[0, 6, 7]]), rtol=2e-6, atol=1e-12)
    inplace = x.clone()
    sk.log_softmax(inplace, out=inplace)
    np.testing.assert_allclose(
        inplace.numpy(), ref.log_softmax(CELLS[[0, 6, 7]]), rtol=2e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="out has shape"):
        sk.softmax(x, out=torch.empty(2, 6))
    with pytest.raises(TypeError, match="out has dtype"):
        sk.softmax(x, out=torch.empty(3, 6, dtype=torch.float64))


def test_torch_plain_call_matches_torch_softmax_on_finite_rows():
    torch = _torch()
    x = torch.randn(16, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 30
    np.testing.assert_allclose(
        sk.softmax(x, axis=0).numpy(), torch.softmax(x, dim=0).numpy(), rtol=1e-13, atol=1e-300
    )
    np.testing.assert_allclose(
        sk.logsumexp(x, axis=(0, 1)).numpy(), torch.logsumexp(x, dim=(0, 1)).numpy(), rtol=1e-14
    )
    # where torch's native op breaks the contract (a fully -inf row), ours does not
    row = torch.full((1, 4), -torch.inf, dtype=torch.float64)
    assert torch.isnan(torch.softmax(row, dim=-1)).all()
    assert (sk.softmax(row) == 0).all()


@pytest.mark.parametrize("lib", LIBS)
def test_inputs_not_mutated_and_no_warnings(lib):
    a = CELLS.copy()
    x = _make(lib, a)
    before = _np(x).copy()
    # x / T overflows to +inf here; handled as a +inf row without any warning
    big = _make(lib, np.array([1e308, 1.0, -1e308]))
    np.testing.assert_array_equal(_np(sk.softmax(big, temperature=0.5)), [1.0, 0.0, 0.0])
    assert float(_np(sk.logsumexp(big, temperature=0.5))) == np.inf
    for op in OPS:
        getattr(sk, op)(x, where=WHERE, temperature=2.0)
    np.testing.assert_array_equal(_np(x), before)


@pytest.mark.parametrize("lib", LIBS)
def test_errors(lib):
    x = _make(lib, np.ones((2, 3)))
    with pytest.raises(np.exceptions.AxisError):
        sk.softmax(x, axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        sk.logsumexp(x, axis=(0, -2))
    with pytest.raises(ValueError, match="temperature"):
        sk.softmax(x, temperature=-1.0)
    with pytest.raises(TypeError, match="boolean"):
        sk.softmax(x, where=np.ones(3))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        sk.log_softmax(x, where=np.ones(2, bool))
    with pytest.raises(TypeError, match="dtype must be one of"):
        sk.softmax(x, dtype="int32")
    if lib == "torch":
        torch = _torch()
        with pytest.raises(TypeError, match="real floating, integer or bool"):
            sk.softmax(torch.ones(3, dtype=torch.complex64))


def test_missing_array_api_compat_names_the_extra(monkeypatch):
    # a plain install has no array_api_compat: the error says which extra to install
    import sys

    import array_api_strict as xps

    from softmaxkit.drivers import array_api as _array_api

    monkeypatch.setitem(sys.modules, "array_api_compat", None)
    with pytest.raises(ImportError, match=r"softmaxkit\[array-api\]"):
        _array_api._compat()
    with pytest.raises(ImportError, match=r"softmaxkit\[array-api\]"):
        sk.softmax(xps.asarray([1.0, 2.0]))


def test_empty_and_masked_rows_take_the_short_path(monkeypatch):
    # issue 20: a row of -inf or a mask no longer sends the whole call down the ~25-pass
    # general path (one masked row made torch input 21x slower); the general path is
    # stubbed out here, so only the short path can answer
    xps = pytest.importorskip("array_api_strict")
    from softmaxkit.drivers import array_api as _array_api

    def boom(self):
        raise AssertionError("general path taken")

    monkeypatch.setattr(_array_api._Prep, "stats", boom)
    x = np.random.default_rng(1).standard_normal((4, 7))
    x[1] = -np.inf
    mask = np.ones((4, 7), bool)
    mask[2] = False
    mask[3, ::2] = False
    for op in ("softmax", "log_softmax", "logsumexp"):
        got = getattr(sk, op)(xps.asarray(x), where=xps.asarray(mask))
        np.testing.assert_allclose(np.asarray(got), getattr(ref, op)(x, where=mask), rtol=1e-12)
        got = getattr(sk, op)(xps.asarray(x))
        np.testing.assert_allclose(np.asarray(got), getattr(ref, op)(x), rtol=1e-12)
    _, sign = sk.logsumexp(xps.asarray(x), where=xps.asarray(mask), return_sign=True)
    np.testing.assert_array_equal(np.asarray(sign), [1.0, 0.0, 0.0, 1.0])
