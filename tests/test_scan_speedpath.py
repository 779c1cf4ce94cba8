"""The float32 fast path of logcumsumexp at its chunk boundaries (``_CH32``
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
        # a span over 87 inside one chunk but not inside either half of it:
        # the whole chunk takes the per-value fallback
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


@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_shift_is_its_first_value(reverse):
    # the block form shifts each chunk by its first value (in scan order), not its
    # max: values up to 88 above it (exps up to e^88, still finite float32) stay on
    # the block path, one further above overflows and must send the chunk to the
    # per-value recurrence, as must one more than 87 below; the state carried out of
    # a chunk whose shift was far below its max must give the next chunks exactly
    n = 4 * _CH32 + 17
    rng = np.random.default_rng(11)
    k = np.arange(n)
    pos = k if not reverse else n - 1 - k  # position in scan order
    first = pos % _CH32 == 0
    rows = [
        np.where(first, -40.0, rng.uniform(0.0, 45.0, n)),  # <= 85 above: block path
        np.where(first, -45.0, np.where(pos % _CH32 == 7, 44.0, 0.0)),  # 89 above
        np.where(first, 45.0, np.where(pos % _CH32 == 9, -43.0, 0.0)),  # 88 below
        np.where(first, -80.0, rng.uniform(-1.0, 1.0, n)),  # a low shift, then ~80 up
        np.where(first, 30.0, rng.uniform(-50.0, -40.0, n)),  # the shift is the max
    ]
    x32 = np.array(rows, dtype=np.float32)
    _check32(logcumsumexp(x32, reverse=reverse), x32, reverse=reverse)
