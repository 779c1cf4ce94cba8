"""Adversarial rows at every block / tile boundary of the dense kernels (issue 24).

Guards for the speed work on the float32 / float64 row and column kernels
(``_kernels/rows``, ``_kernels/cols.py``): every row length ``n = 1 .. 40`` (the
short-row tiles work on 16-lane columns, ``SHORT_STORE = 24``, ``SHORT = 48``), row
counts that are not a multiple of the tile (``tile_rows(n) + 7``), and in every such
array one row of each kind: a ``-inf`` entry, a second half of ``-inf`` (an attention
mask), ``+inf``, two ``+inf``, NaN, NaN next to ``+inf``, all ``-inf``, huge
magnitudes (``1e30`` / ``3e38`` float32, ``1e300`` float64), subnormal inputs and
values whose probabilities are subnormal, ties at the maximum.  Each is compared with
the float64 reference (``softmaxkit.reference``) plain, with ``out=``, in place, on a
non-contiguous view, with a temperature and with a ``where`` mask, over the rows
(axis -1) and over the columns (axis 0), within the documented contract
(docs/dense.md section 6).
"""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference as ref
from softmaxkit._kernels.rows.tiles import tile_rows

OPS = ("softmax", "log_softmax", "logsumexp")
NS = tuple(range(1, 41))


def _rows(n: int, dtype, seed: int) -> np.ndarray:
    """``tile_rows(n) + 7`` rows of ``n`` values with one special row of each kind."""
    rng = np.random.default_rng(seed)
    R = tile_rows(n) + 7
    x = (rng.standard_normal((R, n)) * 4).astype(dtype)
    big = 3e38 if dtype == np.float32 else 1e300
    huge = 1e30 if dtype == np.float32 else 1e300
    tiny = np.finfo(dtype).smallest_subnormal
    j = n // 2
    x[0, j] = np.inf
    x[1, :] = -np.inf
    x[2, j] = np.nan
    x[3, 0] = np.inf
    x[3, n - 1] = np.nan
    x[4, :] = huge
    x[4, 0] = -huge
    x[5, :] = tiny * np.arange(n)
    x[6, :] = -np.arange(n) * 30.0  # probabilities down to ~e^-1170: subnormal / 0
    x[7, :] = big  # ties at a huge maximum
    x[8, 0] = np.inf
    x[8, n - 1] = np.inf  # two +inf (one when n == 1)
    x[R // 2, :] = 7.0  # all equal
    x[R // 2 + 1, (n + 1) // 2 :] = -np.inf  # an attention mask: the second half -inf
    x[R - 1, j] = -np.inf
    x[R - 2, n - 1] = np.nan  # a NaN in the last tile
    return x


def _compare(got, want, op, dtype):
    got = np.asarray(got, dtype=np.float64)
    # the float64 reference rounded to the output dtype: a float32 lse beyond the
    # float32 range is correctly +-inf (3e38 / 0.7)
    with np.errstate(over="ignore"):
        want = np.asarray(want, dtype=dtype).astype(np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    spec = ~np.isfinite(want) & ~np.isnan(want)
    np.testing.assert_array_equal(got[spec], want[spec])
    fin = np.isfinite(want)
    assert np.isfinite(got[fin]).all()
    g, w = got[fin], want[fin]
    if dtype == np.float32:
        if op == "softmax":
            big = w >= 1e-6
            err_big = np.abs(g[big] - w[big]) / w[big]
            assert err_big.size == 0 or err_big.max() <= 2e-6, float(err_big.max())
            assert np.abs(g[~big] - w[~big]).max(initial=0.0) <= 1e-12
            return
        err = np.abs(g - w) / (1.0 + np.abs(w))
        assert err.size == 0 or err.max() <= 1e-6, float(err.max())
        return
    if op == "softmax":
        # against the float64 reference, not the exact value: both carry up to
        # |v - m| / T * eps of their own (|v - m| / T up to 745), so 2x the 1e-13 bound
        # (measured: 1.14e-13 apart where mpmath puts them at 6.8e-14 and 4.6e-14)
        err = np.abs(g - w) / np.maximum(w, 2.2e-308)
        assert err.max(initial=0.0) <= 2e-13, float(err.max())
        return
    err = np.abs(g - w) / np.maximum(np.abs(w), 1.0)
    assert err.max(initial=0.0) <= 2e-13, float(err.max())


def _all_ways(x, op, axis, T, where=None, strided=True):
    """The op on ``x`` plain, with ``out=``, in place (softmax / log_softmax) and (with
    ``strided``) on a non-contiguous copy of ``x``, each compared with the float64
    reference."""
    f = getattr(sk, op)
    kw = {"axis": axis, "temperature": T}
    if where is not None:
        kw["where"] = where
    want = getattr(ref, op)(x.astype(np.float64), **kw)
    _compare(f(x, **kw), want, op, x.dtype)
    if op == "logsumexp":
        out = np.empty(want.shape, dtype=x.dtype)
    else:
        out = np.empty_like(x)
    assert f(x, out=out, **kw) is out
    _compare(out, want, op, x.dtype)
    if op != "logsumexp":
        y = x.copy()
        f(y, out=y, **kw)
        _compare(y, want, op, x.dtype)
    if not strided:
        return
    # a view with a non-unit stride along every axis: the eager driver copies it
    wide = np.empty((x.shape[0] * 2, x.shape[1] * 2), dtype=x.dtype)
    wide[::2, ::2] = x
    view = wide[::2, ::2]
    wk = dict(kw)
    if where is not None:
        wm = np.zeros(wide.shape, dtype=bool)
        wm[::2, ::2] = where
        wk["where"] = wm[::2, ::2]
    _compare(f(view, **wk), want, op, x.dtype)
    np.testing.assert_array_equal(wide[::2, ::2], x)  # the input is not modified


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", NS)
def test_rows_every_length_special_rows(dtype, n):
    x = _rows(n, dtype, seed=n)
    for op in OPS:
        _all_ways(x, op, -1, 1.0, strided=n % 8 == 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", (1, 10, 16, 17, 24, 33, 40))
def test_rows_temperature_and_where(dtype, n):
    x = _rows(n, dtype, seed=100 + n)
    rng = np.random.default_rng(n)
    where = rng.random(x.shape) < 0.8
    where[9, :] = False  # a fully masked row
    where[0, :] = True  # keep the +inf row's +inf
    where[1, :] = True
    # a masked-out NaN and +inf take no part in their row
    if x.shape[0] > 12:
        x[10, 0] = np.nan
        x[11, n - 1] = np.inf
        where[10, 0] = False
        where[11, n - 1] = False
    for op in OPS:
        _all_ways(x, op, -1, 0.7, where=where)
        _all_ways(x, op, -1, 3.0, strided=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", (1, 7, 16, 31, 33, 40))
def test_columns_every_kind(dtype, n):
    # axis 0: the special rows of _rows become special columns of x.T
    x = np.ascontiguousarray(_rows(n, dtype, seed=200 + n).T)
    for op in OPS:
        _all_ways(x, op, 0, 1.0)
        _all_ways(x, op, 0, 0.7, strided=False)
