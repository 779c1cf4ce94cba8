"""The column kernels' sweeps (``_kernels/colsweeps.py``): the one-sweep tiles of pass 1
(sums against the running max, accepted or refused) and the streamed write pass,
against the float64 reference twin.

Inputs reduce over ``axis=0`` (and the middle axis of a 3-D array) with more rows than
one tile (``JBF``), so that every column meets tiles after the first: the first tile
always takes the two sub-passes (its running max is ``-inf``).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels import _check

import softmaxkit as sk
from softmaxkit import reference as ref
from softmaxkit._kernels import colsweeps
from softmaxkit._kernels.nt import NT_MIN_BYTES
from softmaxkit._kernels.view import readonly

RNG = np.random.default_rng(2026)
JBF = colsweeps.JBF


def _columns(kind, n, Q, dtype):
    """``x[n, Q]`` whose column ``kind`` exercises one case of the sweep."""
    x = RNG.standard_normal((n, Q)) * 3
    r = 2 * JBF + 5  # a row inside the third tile
    if kind == "jump-accepted":  # the max jumps by less than GROW: terms up to e^50
        x[r, ::3] = x[:, ::3].max(axis=0) + 50
    elif kind == "jump-refused":  # by more than GROW: the tile is redone
        x[r, ::5] = x[:, ::5].max(axis=0) + 100
    elif kind == "ascending":  # every tile grows every column
        x = np.sort(x, axis=0) * 40
    elif kind == "specials":  # NaN, +inf, -inf after the first tile
        x[r, 1] = np.nan
        x[r + 1, 2] = np.inf
        x[r, 3] = -np.inf
        x[:, 4] = -np.inf  # a column of -inf only
        x[:, 5] = -np.inf
        x[r + 7, 5] = 1.0  # -inf, then finite in a later tile
        x[JBF + 3, 6] = np.inf  # +inf, then NaN
        x[-1, 6] = np.nan
    elif kind == "huge":  # magnitudes near the float32 range
        x = x * 1e35 if dtype == np.float32 else x * 1e305
    return x.astype(dtype)


KINDS = ["plain", "jump-accepted", "jump-refused", "ascending", "specials", "huge"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_axis0_matches_reference(kind, dtype):
    n = 3 * JBF + 13  # not a multiple of the tile or of eight
    x = _columns(kind, n, 70, dtype)
    # float64 at T = 0.05: probabilities near e^-290 differ from the reference by
    # ~1.1e-13 relative, past the 1e-13 that _check allows: d = (v - m) / T rounds in
    # both, each up to ~1.5 |d| eps from the exact value (the temperature bound of
    # docs/dense.md, "Accuracy"), as before these kernels; T = 0.25 keeps |d| < 100
    for T in (1.0, 0.05 if dtype == np.float32 else 0.25, 30.0):
        for op in ("softmax", "log_softmax", "logsumexp"):
            with np.errstate(all="ignore"):
                want = getattr(ref, op)(x, axis=0, temperature=T)
            _check(getattr(sk, op)(x, axis=0, temperature=T), want, dtype, op)


@pytest.mark.parametrize("kind", ["plain", "jump-accepted", "specials"])
def test_middle_axis_matches_reference(kind):
    x = np.stack([_columns(kind, 3 * JBF - 5, 40, np.float32) for _ in range(3)])
    for op in ("softmax", "log_softmax", "logsumexp"):
        with np.errstate(all="ignore"):
            want = getattr(ref, op)(x, axis=1)
        _check(getattr(sk, op)(x, axis=1), want, np.float32, op)


def test_fused_tile_accepts_and_refuses():
    """The one-sweep tile is taken for a modest growth of the max and refused for a
    jump beyond GROW (in units of T) or to +inf: so the tests above reach both paths."""
    n, Q = 24, 48
    base = RNG.standard_normal((1, n, Q)).astype(np.float32)
    m = np.full(Q, np.float32(1.0))
    bm, bs, tr = np.empty(Q, np.float32), np.empty(Q, np.float32), np.empty(Q)

    def tile(x, invT=1.0):
        return colsweeps.fused_tile(readonly(x), 0, 0, Q, 0, n, np.float32(invT), m, bm, bs, tr)

    assert tile(base)
    want = np.exp(base[0].astype(np.float64) - 1.0).sum(axis=0)
    np.testing.assert_allclose(tr, want, rtol=1e-6)
    np.testing.assert_array_equal(bm, base[0].max(axis=0))
    x = base.copy()
    x[0, 7, 5] = 1.0 + colsweeps.GROW - 1  # a term of e^59 relative to m: accepted
    assert tile(x)
    np.testing.assert_allclose(tr[5], np.exp(np.float64(x[0, :, 5]) - 1.0).sum(), rtol=1e-6)
    x[0, 7, 5] = 1.0 + colsweeps.GROW + 1
    assert not tile(x)
    x = (base * np.float32(1e-3) + np.float32(1.0)).astype(np.float32)
    assert tile(x, invT=100.0)  # growths below 0.6 (60 in units of T = 0.01)
    x[0, 7, 5] = 2.0  # a growth of 1: refused
    assert not tile(x, invT=100.0)
    x = base.copy()
    x[0, 3, 9] = np.inf
    assert not tile(x)
    x[0, 3, 9] = np.nan  # the max ignores it, the sum carries it (as in two sub-passes)
    assert tile(x)
    assert np.isnan(tr[9]) and np.isfinite(np.delete(tr, 9)).all()


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_streamed_write_pass(op):
    """An output larger than the last-level cache (``NT_MIN_BYTES``) takes streaming
    stores eight rows at a time; a row count that leaves a remainder, a NaN column and
    a +inf column after the stream; and in place."""
    Q = 4100  # rows of 16400 bytes: at least NT_ROW
    n = NT_MIN_BYTES // (4 * Q) + 11
    assert n % 8 and Q * 4 >= colsweeps.NT_ROW
    x = (RNG.standard_normal((n, Q)) * 4).astype(np.float32)
    x[n // 2, 3] = np.nan
    x[n - 3, 7] = np.inf
    want = getattr(ref, op)(x, axis=0)
    out = np.empty_like(x)
    got = getattr(sk, op)(x, axis=0, out=out)
    assert got is out
    cols = np.r_[0:40, Q - 40 : Q]  # the reference check on a slice (the whole is slow)
    _check(got[:, cols], want[:, cols], np.float32, op)
    np.testing.assert_array_equal(got, getattr(sk, op)(x, axis=0))
    y = x.copy()
    assert getattr(sk, op)(y, axis=0, out=y) is y
    np.testing.assert_array_equal(y, got)
