"""The float32 block path of logcumsumexp (``_kernels/scan_block32.py::_chunk32``): each
chunk of 256 values scanned as ``R + log(s exp(m - R) + P_k exp(M - R))`` with
``M`` the chunk max, ``P_k`` the running sum of ``exp(v - M)``.  Checked against
the float64 scan (itself checked against mpmath in test_scan.py) within the
float32 contract ``1e-6 (1 + |v|)``, on inputs built to hit its weak points."""

from __future__ import annotations

import numpy as np
import pytest

from softmaxkit import logcumsumexp
from softmaxkit import reference as ref


def _check32(x32, **kw):
    got = logcumsumexp(x32, **kw).astype(np.float64)
    want = ref.logcumsumexp(x32.astype(np.float64), **kw)
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin)
    err = np.abs(got[fin] - want[fin])
    bound = 1e-6 * (1 + np.abs(want[fin]))
    assert np.all(err <= bound), float(np.max(err / bound))


def test_float32_block_path_matches_float64():
    rng = np.random.default_rng(0)
    n = 256 * 9 + 37  # whole chunks and a tail
    rows = [
        # the chunk max far above the early running max: exp(v - M) needs the exact
        # difference (a float32-rounded v - M costs |v - M| * 6e-8 relative)
        np.tile(np.linspace(-80.0, 0.0, 256), 9).tolist() + [0.5] * 37,
        # early values near 0 and a chunk max near 79.4: a float32 v - M is rounded
        # to ulp(79) / 2 = 3.8e-6, over the 1e-6 (1 + |out|) bound at out ~ 0
        np.tile(np.r_[rng.uniform(-1, 1, 200), 79.371, rng.uniform(78, 79.3, 55)], 9).tolist()
        + [0.5] * 37,
        # slowly rising values: the carry is rescaled at every chunk
        np.linspace(-300.0, 300.0, n).tolist(),
        # falling: the carry dominates and the chunk's terms are added below it
        np.linspace(40.0, -40.0, n).tolist(),
        # spans just under and over the 87 that float32 exps can hold (fallback)
        np.where(np.arange(n) % 256 == 5, 86.0, 0.0).tolist(),
        np.where(np.arange(n) % 256 == 5, 90.0, 0.0).tolist(),
        (rng.standard_normal(n) * 3).tolist(),
        (rng.standard_normal(n) * 30 + 1e4).tolist(),  # large |v|: m + log s rounding
        (rng.uniform(-1, 0, n) * 1e-3).tolist(),  # many nearly equal terms
    ]
    x32 = np.array(rows, dtype=np.float32)
    _check32(x32)
    _check32(x32, reverse=True)
    _check32(x32[:, :7])  # shorter than the 8 prefix chains
    _check32(x32[:, :300].T.copy(), axis=0)


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_float32_block_path_special_values_fall_back(special):
    x = (np.random.default_rng(1).standard_normal((3, 1000)) * 3).astype(np.float32)
    x[0, 300] = special
    x[1, :600] = -np.inf  # a -inf prefix stays -inf, never NaN
    want = ref.logcumsumexp(x.astype(np.float64))
    got = logcumsumexp(x).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    assert np.all(np.abs(got[fin] - want[fin]) <= 1e-6 * (1 + np.abs(want[fin])))


def test_float32_block_path_with_where_and_many_rows():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((37, 2000)) * 5).astype(np.float32)
    w = rng.random(x.shape) < 0.7
    got = logcumsumexp(x, where=w).astype(np.float64)
    want = ref.logcumsumexp(np.where(w, x.astype(np.float64), -np.inf))
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin)
    assert np.all(np.abs(got[fin] - want[fin]) <= 1e-6 * (1 + np.abs(want[fin])))
    # one long row: cut into blocks scanned on several threads (block_states + carry)
    x1 = (rng.standard_normal(300_000) * 4).astype(np.float32)
    _check32(x1)
