"""float32 softmax rows of SHORT < n <= _BLOCK values (``rows/ranges.py``,
``softmax_store_range``: exps stored, then scaled) on rows built to break a shift
other than the max (a first value far below or above the rest, NaN / +-inf first,
+inf or NaN elsewhere, all -inf, all equal, one dominant entry), at three
temperatures, against the float64 reference at the float32 contract (docs/dense.md:
2e-6 relative where p >= 1e-6, 1e-12 absolute below) and against the masked path.
(A first-value shift for these rows was tried: no gain on rows of 128, 1.2-1.4x
on 512; this test caught its overflow, NaN and |c| ~ 1e38 mistakes on the way.)"""

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference


def _rows(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((32, n)) * 3
    x[0, 0] = -100.0  # first value far below: exp(v - c) overflows, s = inf -> max
    x[2, 0] = x[2].max() - 80  # s ~ e^80 < 2^100... (2^100 = e^69.3): -> max
    x[4, 0] = x[4].max() - 60  # s ~ e^60 < 2^100: kept
    x[6, 0] = np.nan  # c NaN -> max path -> NaN row
    x[8, 0] = -np.inf  # c -inf -> max path
    x[10, 0] = np.inf  # c +inf -> the +inf rule
    x[12, 5] = np.inf  # +inf elsewhere: s = inf -> max -> +inf rule
    x[14, 3] = np.nan  # NaN elsewhere: NaN row
    x[16, :] = -np.inf  # all -inf: 0
    x[18, :] = 7.0  # all equal
    x[20, 0] = 3e38  # c huge, others ~0: v - c = -3e38, s = 1 (kept)
    x[22, 1:] = -1e30  # one dominant first value: s = 1 (kept)
    x[24, 0] = -3e38  # first value hugely negative: v - c = +3e38 -> inf -> max
    return x.astype(np.float32)


@pytest.mark.parametrize("n", [64, 128, 512, 2048])
@pytest.mark.parametrize("T", [1.0, 0.5, 3.0])
def test_store_rows_on_rows_that_break_other_shifts(n, T):
    x = _rows(n)
    got = sk.softmax(x, temperature=T)
    want = reference.softmax(x.astype(np.float64), temperature=T)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    g, w = got[ok].astype(np.float64), want[ok]
    big = w >= 1e-6
    assert np.all(np.abs(g[big] - w[big]) <= 2e-6 * w[big])
    assert np.all(np.abs(g[~big] - w[~big]) <= 1e-12 + 2e-6 * w[~big])
    # the max-shift path (forced by an all-true mask) agrees to a few ulps where
    # p >= 1e-6; below, the store path's plain argument at T = 1 (one rounding of
    # x - m, up to |d| 2^-24 relative) against the masked path's exact one
    m = sk.softmax(x, temperature=T, where=np.ones_like(x, dtype=bool))
    np.testing.assert_allclose(got[ok], m[ok], rtol=1e-6, atol=1e-30 if T != 1 else 1e-12)
