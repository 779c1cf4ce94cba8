"""Helpers of the sampling kernels against plain NumPy: the candidate compaction of
top-p (``top_p._gather``, bit-mask groups of 64), and the row maximum of pass 1."""

from __future__ import annotations

import numpy as np
import pytest

from softmaxkit._kernels.sampling import top_p

LENGTHS = [0, 1, 63, 64, 65, 127, 128, 129, 1000, 4096 + 17]


def _naive(x, xlo, j0):
    keep = np.flatnonzero(x >= xlo)
    return keep + j0, x[keep].astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", LENGTHS)
def test_gather_is_the_compaction_in_index_order(dtype, n):
    """``_gather`` writes exactly ``flatnonzero(x >= xlo)`` (+ j0) and those values, for
    lengths around the 64-entry groups, thresholds keeping none / some / all, ties at
    the threshold, -inf entries and an index offset: 10 lengths x 2 dtypes x 6
    thresholds x 2 offsets."""
    rng = np.random.default_rng(n)
    x = np.round(rng.standard_normal(n) * 3, 1).astype(dtype)  # many exact ties
    if n > 3:
        x[rng.integers(0, n, size=n // 4)] = -np.inf
    for xlo in [np.inf, 1e30, 2.0, 0.0, -1e30, -np.inf]:
        for j0 in (0, 1 << 20):
            ci = np.full(n + 1, -7, dtype=np.int64)
            cv = np.full(n + 1, np.nan)
            c = top_p._gather(x, x.dtype.type(xlo), ci, cv, j0)
            want_i, want_v = _naive(x, x.dtype.type(xlo), j0)
            assert c == want_i.size
            np.testing.assert_array_equal(ci[:c], want_i)
            np.testing.assert_array_equal(cv[:c], want_v)


def test_gather_ties_exactly_at_the_threshold():
    """Entries equal to ``xlo`` are kept (``>=``), in every position of a group."""
    x = np.zeros(200, dtype=np.float32)
    x[::3] = 1.0
    ci = np.empty(200, dtype=np.int64)
    cv = np.empty(200)
    c = top_p._gather(x, np.float32(1.0), ci, cv, 0)
    np.testing.assert_array_equal(ci[:c], np.arange(0, 200, 3))
    assert (cv[:c] == 1.0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 33, 1000])
def test_max_nan_is_the_nan_skipping_maximum(dtype, n):
    """``scan._max_nan`` = (``nanmax``, ``isnan.any``) with the maximum in any position
    of the 16 lanes or the tail, NaN and +-inf entries, and all -inf rows: 6 lengths x
    2 dtypes x (every position of the maximum + 4 special rows)."""
    from softmaxkit._kernels.sampling import scan

    rng = np.random.default_rng(n)
    base = rng.standard_normal(n).astype(dtype)
    rows = []
    for p in range(n):
        x = base.copy()
        x[p] = 50.0
        rows.append(x)
    rows.append(np.full(n, -np.inf, dtype=dtype))
    x = base.copy()
    x[n // 2] = np.inf
    rows.append(x)
    x = base.copy()
    x[n - 1] = np.nan
    rows.append(x)
    x = base.copy()
    x[0] = np.nan
    x[n - 1] = 99.0
    rows.append(x)
    for x in rows:
        mx, nan = scan._max_nan(x)
        assert nan == bool(np.isnan(x).any())
        want = np.max(x[~np.isnan(x)]) if not np.isnan(x).all() else -np.inf
        assert mx == want
