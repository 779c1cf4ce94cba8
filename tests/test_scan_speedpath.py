"""The float32 fast path of logcumsumexp at its chunk boundaries (``_CH32`` = 512
values per chunk of the block form) and through its output routes (a fresh array,
``out=``, a strided ``out=``), against the float64 reference within the float32
contract ``1e-6 (1 + |y|)``."""

from __future__ import annotations

import numpy as np
import pytest

from softmaxkit import logcumsumexp
from softmaxkit import reference as ref
from softmaxkit._kernels.scan_block32 import _CH32


def _check32(got, x32, **kw):
    want = ref.logcumsumexp(x32.astype(np.float64), **kw)
    got = np.asarray(got, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    err = np.abs(got[fin] - want[fin])
    assert np.all(err <= 1e-6 * (1 + np.abs(want[fin]))), float(np.max(err))


@pytest.mark.parametrize("n", [_CH32 - 1, _CH32, _CH32 + 1, 2 * _CH32 - 3, 3 * _CH32 + 8])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_boundaries(n, reverse):
    rng = np.random.default_rng(n)
    rows = [
        rng.standard_normal(n) * 3,
        np.linspace(-300.0, 300.0, n),  # the carry rescaled at every chunk
        np.linspace(60.0, -60.0, n),  # the carry dominates
        # a span over 87 inside one 512-value chunk but not inside either 256-value
        # half: the whole chunk takes the per-value fallback
        np.where(
            np.arange(n) % _CH32 == _CH32 // 2 + 3, 88.0, np.where(np.arange(n) < 4, -1.0, 0.0)
        ),
        # the chunk max in the chunk's last value, far above its first values
        np.where(np.arange(n) % _CH32 == _CH32 - 1, 80.0, rng.uniform(-1, 1, n)),
    ]
    x32 = np.array(rows, dtype=np.float32)
    _check32(logcumsumexp(x32, reverse=reverse), x32, reverse=reverse)


def test_output_routes_agree_bitwise():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 3 * _CH32 + 5)) * 4).astype(np.float32)
    x[2, :700] = -np.inf
    x[3, 900] = np.inf
    x[4, 1000] = np.nan
    fresh = logcumsumexp(x)
    out = np.full_like(x, 7.0)
    assert logcumsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, fresh)
    strided = np.full((6, 2 * x.shape[1]), 7.0, np.float32)[:, ::2]
    logcumsumexp(x, out=strided)
    np.testing.assert_array_equal(strided, fresh)
    _check32(fresh, x)
    # along axis 0 (moved and copied) and with where=
    np.testing.assert_array_equal(logcumsumexp(x.T.copy(), axis=0), fresh.T)
    w = rng.random(x.shape) < 0.8
    _check32(logcumsumexp(x, where=w), np.where(w, x, -np.inf))
