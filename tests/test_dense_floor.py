"""Regression tests for the dense kernels' speed work (docs/performance.md, issue 24).

Each test drives one restructured path with special rows or columns placed where
the restructuring could mishandle them, and checks every value against the float64
reference (``softmaxkit.reference``) within the float32 / float64 contract:

* the row max is NaN-propagating (``exp.fmaximum``): a NaN anywhere in a row, in any
  block, must still give a NaN row, beside +inf, -inf and finite rows;
* softmax of short rows scales row i - 1 after the exps of row i
  (``softmax_store_range``): special rows between, first and last;
* short rows in tiles of 16-multiple rows with per-task scratch: a partial last tile,
  several tiles per task, special rows in any tile;
* log_softmax groups without special rows skip the per-row classification;
* the column kernels rescale the column sums branch-free when a tile's max grows:
  columns that start at -inf, grow late, stay -inf, hold NaN or +inf.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference as ref

OPS = ("softmax", "log_softmax", "logsumexp")


def _check(x, op, axis=-1):
    got = getattr(sk, op)(x, axis=axis)
    want = getattr(ref, op)(x.astype(np.float64), axis=axis)
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    # same special values in the same places
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    tol = 2e-6 if x.dtype == np.float32 else 1e-13
    if op == "softmax":
        err = np.abs(got[fin] - want[fin]) / np.maximum(want[fin], 1e-6)
    else:
        err = np.abs(got[fin] - want[fin]) / (1.0 + np.abs(want[fin]))
    assert err.size == 0 or err.max() <= tol, (op, float(err.max()))


def _special_rows(x, rows, rng):
    """Put a NaN, a +inf, an all -inf row and a NaN next to +inf into the given rows."""
    n = x.shape[1]
    kinds = ("nan", "posinf", "neginf", "nan_posinf", "nan_at_max")
    for k, i in enumerate(rows):
        kind = kinds[k % len(kinds)]
        j = int(rng.integers(n))
        if kind == "nan":
            x[i, j] = np.nan
        elif kind == "posinf":
            x[i, j] = np.inf
        elif kind == "neginf":
            x[i, :] = -np.inf
        elif kind == "nan_posinf":
            x[i, j] = np.inf
            x[i, (j + 1) % n] = np.nan
        else:
            x[i, int(np.argmax(x[i]))] = np.nan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [64, 128, 2048])
def test_short_row_store_pipeline_with_special_rows(dtype, n):
    # rows of one block (softmax_store_range): specials first, between, last
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((41, n)) * 4).astype(dtype)
    _special_rows(x, [0, 1, 7, 8, 9, 20, 40], rng)
    for op in OPS:
        _check(x, op)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_nan_in_any_block(dtype):
    # rows of 3 blocks (2048 values each): a NaN in block 0, 1 or 2, with a larger
    # finite max elsewhere, gives a NaN row; the other rows stay exact
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 5000)) * 4).astype(dtype)
    x[:, 100] = 50.0
    x[1, 10] = np.nan
    x[2, 3000] = np.nan
    x[3, 4999] = np.nan
    x[4, 4500] = np.inf
    x[4, 200] = np.nan
    x[5, :] = -np.inf
    x[5, 4000] = np.nan
    for op in OPS:
        _check(x, op)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 10, 16, 33, 48])
def test_short_tiles_partial_and_special(dtype, n):
    # tiles of 16-multiple rows, scratch reused across the tiles of a task; R is not
    # a multiple of the tile, special rows in the first, a middle and the last tile
    rng = np.random.default_rng(n)
    R = 2 * (4096 // n) + 37
    x = (rng.standard_normal((R, n)) * 4).astype(dtype)
    _special_rows(x, [0, 5, R // 2, R // 2 + 1, R - 2, R - 1], rng)
    for op in OPS:
        _check(x, op)


def test_short_tiles_two_threads():
    # over 2^20 values: the tiles are split over the threads (one scratch per task)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((110_003, 10)) * 4).astype(np.float32)
    _special_rows(x, [0, 54_000, 110_002], rng)
    for op in OPS:
        _check(x, op)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_groups_with_and_without_special_rows(dtype):
    # groups of 256 rows: the first group all finite (no per-row classification),
    # the second with one special row of each kind, the third all finite again
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((700, 96)) * 4).astype(dtype)
    _special_rows(x, [300, 301, 350, 400, 511], rng)
    _check(x, "log_softmax")
    out = np.empty_like(x)
    sk.log_softmax(x, out=out)
    np.testing.assert_array_equal(out, sk.log_softmax(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_rescale_when_the_max_grows(dtype):
    # axis=0: the reduced rows are read in tiles of 32; column maxima that grow in a
    # later tile rescale the sums (branch-free, vectorised exp)
    rng = np.random.default_rng(5)
    n, Q = 200, 40
    x = (rng.standard_normal((n, Q)) * 4).astype(dtype)
    x[:, 0] = -np.inf  # all -inf
    x[:100, 1] = -np.inf  # -inf for 3 tiles, then finite
    x[150, 2] = 60.0  # the max grows late
    x[:, 3] = np.linspace(-80, 80, n)  # the max grows in every tile
    x[70, 4] = np.nan
    x[10, 5] = np.inf
    x[190, 6] = np.inf
    x[20, 6] = np.nan
    x[:, 7] = np.linspace(80, -80, n)  # the max is in the first tile
    x[:, 8] = 1e30  # ties everywhere
    for op in OPS:
        _check(x, op, axis=0)
