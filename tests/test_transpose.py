"""The short-row tiles' vector transposes (``_kernels/transpose.py``) and the tile
kernels around them, at every row length they serve, on CPUs with and without
AVX-512."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from _haswell import run_for_haswell

import softmaxkit as sk
from softmaxkit import reference as ref
from softmaxkit._kernels.transpose import NMAX32, NMAX64, cols_to_rows, rows_to_cols

RNG = np.random.default_rng(7)
LANES = {np.float32: 16, np.float64: 8}
NMAX = {np.float32: NMAX32, np.float64: NMAX64}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moves_are_exact_transposes_for_every_n(dtype):
    L = LANES[dtype]
    for n in range(1, NMAX[dtype] + 3):
        nb, skip, ts = 3, 5, 3 * L + 4  # blocks, rows before the first, tile stride
        x = RNG.standard_normal((skip + nb * L + 2, n)).astype(dtype)
        x[0, 0] = np.nan  # bits move unchanged
        x[skip, n - 1] = -np.inf
        tb = np.full((n, ts), 99.0, dtype)
        rows_to_cols(x.reshape(-1), skip * n, nb, n, tb.reshape(-1), ts)
        want = np.full((n, ts), 99.0, dtype)
        if 2 <= n <= NMAX[dtype]:
            want[:, : nb * L] = x[skip : skip + nb * L].T
        # outside 2..NMAX nothing is written (the tile kernels take the strided loops)
        np.testing.assert_array_equal(tb, want)

        out = np.full_like(x, 7.0)
        cols_to_rows(tb.reshape(-1), ts, nb, n, out.reshape(-1), skip * n)
        back = np.full_like(x, 7.0)
        if 2 <= n <= NMAX[dtype]:
            back[skip : skip + nb * L] = x[skip : skip + nb * L]
        np.testing.assert_array_equal(out, back)


def _rows(R, n, dtype):
    x = (RNG.standard_normal((R, n)) * 6).astype(dtype)
    x[3, n // 2] = np.nan
    x[20] = -np.inf
    x[21, 0] = np.inf
    x[R - 1, n - 1] = np.inf  # a special row in the remainder after the whole blocks
    x[R - 2] = 2.5  # all ties
    return x


def _close(got, want, dtype):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    tol = 2e-6 if dtype == np.float32 else 1e-13
    assert np.all(np.abs(got[fin] - want[fin]) <= tol * (1 + np.abs(want[fin])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_short_rows_at_every_length(dtype):
    # every n the tiles serve, rows not a multiple of the block, a whole tile and a
    # partial one, special rows inside the blocks and in the remainder, out= and in place
    for n in range(1, NMAX[dtype] + 3):
        from softmaxkit._kernels.rows.tiles import tile_rows

        R = tile_rows(n) + 16 * 3 + 5
        x = _rows(R, n, dtype)
        for op in ("softmax", "log_softmax"):
            want = getattr(ref, op)(x, axis=-1)
            _close(getattr(sk, op)(x, axis=-1), want, dtype)
            y = x.copy()
            assert getattr(sk, op)(y, axis=-1, out=y) is y
            _close(y, want, dtype)
            _close(
                getattr(sk, op)(x, axis=-1, temperature=0.3),
                getattr(ref, op)(x, axis=-1, temperature=0.3),
                dtype,
            )
        _close(sk.logsumexp(x, axis=-1), ref.logsumexp(x, axis=-1), dtype)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU names")
def test_short_rows_on_a_cpu_without_avx512(tmp_path):
    # compiled for a Haswell target (AVX2, no AVX-512) in a child process with its own
    # cache: the tiles take the strided loops there, with the same results
    x32 = _rows(1000, 10, np.float32)
    x64 = _rows(1000, 7, np.float64)
    np.save(tmp_path / "a.npy", x32)
    np.save(tmp_path / "b.npy", x64)
    code = (
        "import sys, numpy as np, softmaxkit as sk\n"
        "from softmaxkit._kernels.transpose import HW_TRANSPOSE\n"
        "r = []\n"
        "for f in sys.argv[1:3]:\n"
        "    x = np.load(f)\n"
        "    r += [sk.softmax(x, axis=-1), sk.log_softmax(x, axis=-1), sk.logsumexp(x, axis=-1)]\n"
        "np.savez(sys.argv[3], *r); print(HW_TRANSPOSE)\n"
    )
    args = [str(tmp_path / f) for f in ("a.npy", "b.npy", "r.npz")]
    out = run_for_haswell(tmp_path / "cache", code, *args)
    assert out.strip() == "False"
    got = np.load(tmp_path / "r.npz")
    for k, (x, op) in enumerate(
        (x, op) for x in (x32, x64) for op in ("softmax", "log_softmax", "logsumexp")
    ):
        ours = getattr(sk, op)(x, axis=-1)
        _close(got[f"arr_{k}"], getattr(ref, op)(x, axis=-1), x.dtype.type)
        # the moves are exact and the arithmetic is the same: within an ulp or two
        np.testing.assert_allclose(
            got[f"arr_{k}"], ours, rtol=1e-6 if x.dtype == np.float32 else 1e-14
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_write_back_aligned_and_not(dtype):
    # outputs of NT_MIN_BYTES or more take streaming stores: straight from the shuffles
    # into a 64-byte-aligned output (a fresh one is), else through nt_copy
    from softmaxkit._kernels.nt import NT_MIN_BYTES

    n = 10 if dtype == np.float32 else 7
    R = NT_MIN_BYTES // (n * np.dtype(dtype).itemsize) + 1237
    x = _rows(R, n, dtype)
    for op in ("softmax", "log_softmax"):
        want = getattr(ref, op)(x, axis=-1)
        fresh = getattr(sk, op)(x, axis=-1)
        assert fresh.ctypes.data % 64 == 0
        _close(fresh, want, dtype)
        for shift in (1, 4):  # elements past a line: misaligned out= buffers
            buf = np.empty(x.size + 64, dtype)
            a = (-buf.ctypes.data % 64) // buf.itemsize + shift
            out = buf[a : a + x.size].reshape(x.shape)
            assert out.ctypes.data % 64 != 0
            getattr(sk, op)(x, axis=-1, out=out)
            _close(out, want, dtype)
        y = x.copy()
        getattr(sk, op)(y, axis=-1, out=y)
        _close(y, want, dtype)
