"""Top-p over a single long row (or a few rows) on several threads.

One row gives one task to the row-parallel driver, so ``[1, 262144]`` ran on one
thread.  Here the row's blocks of ``_BLOCK`` entries are shared out instead, phase
by phase (each phase one :func:`softmaxkit._kernels._parallel.run` over blocks):

1. per block: NaN count and maximum; merged: ``m`` (a maximum is exact);
2. per block: ``s_b`` and the level masses (``_block_levels``); merged in block
   order (``_merge_levels``): the bracket of the threshold (``_bracket``);
2b. where the bracket is wide, per block: the band counts (``_band_blocks``);
   merged: the refined lower bound (``_refine``), ``xlo`` (``_x_lower``);
3. per block: the candidates ``x >= xlo`` into the block's own slot
   (``_gather_blocks``); joined into one run in index order (``_join_blocks``), then
   their weights, the threshold and ``Z`` on the calling thread;
4. per block of ``_CBLOCK`` candidates: the race (``_race_cblocks``); merged by the
   largest key, ties to the smaller index (``_race_merge``).

Every float the serial kernel computes for the row (``_sample_rows``: ``_sum_blocks``
sums per block and then in block order too; ``_gather`` writes the same run) is
computed here from the same operands in the same order, and the race's winner is an
exact argmax: the tokens, log-probs and threshold are the serial path's, whatever
the thread count (``tests/test_sampling_chunked.py``).  Rows with NaN, all ``-inf``
or a ``+inf`` maximum go to the serial kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._parallel import run
from .keys import _BLOCK, _CBLOCK, stream_base
from .race import _race_cblocks, _race_merge
from .scan import _LEV, _block_levels, _has_nan, _max16, _merge_levels, _v
from .top_p import (
    _BAND_MIN,
    _NB,
    _band_blocks,
    _band_depths,
    _bracket,
    _fill,
    _gather_blocks,
    _join_blocks,
    _kept_mass,
    _refine,
    _top_p_threshold,
    _x_lower,
)

# A row shorter than this (entries) stays on one thread: below it the hand-offs of
# the five phases cost more than the second thread saves.
CHUNK_MIN = 4 * _BLOCK


def chunked_path(R: int, n: int, greedy: bool, K: int, P: float, nt: int) -> bool:
    """Whether :func:`sample_row_chunked` may take the rows: top-p without a top-k
    (``K = 0``; a small top-k keeps its buffer, a large one its selection), not
    greedy, several threads, fewer rows than two per thread, long rows."""
    return nt > 1 and R < 2 * nt and n >= CHUNK_MIN and P < 1.0 and K == 0 and not greedy


class Chooser:
    """Chunked or serial, by their measured times (the tokens are the same either way).

    Five hand-offs per row (one per phase) could pay off on idle cores, but on an
    oversubscribed machine a worker descheduled in the middle of its blocks holds
    every phase up: [1, 262144] top-p took 3.9 ms on two threads against 0.8 ms on
    one at load average 8 on this 2-core machine.  So both are timed (seconds per
    entry over calls of the eligible shapes: a faster time replaces the estimate, a
    slower one is averaged in with weight 1/4): the first two
    eligible calls try one each, then the faster is used and the other re-tried every
    ``EXPLORE`` x (slower / faster) calls (at most 1024; under that load the chunked
    call took 14.6 ms against 0.85, and a re-try every 16th call doubled the mean).
    ``mode`` "chunked" / "serial" forces one (tests)."""

    EXPLORE = 16

    def __init__(self) -> None:
        self.mode = "auto"
        self.cost = [0.0, 0.0]  # serial, chunked
        self.calls = 0
        self.since = 0  # calls since the slower path was last tried

    def pick(self) -> bool:
        if self.mode != "auto":
            return self.mode == "chunked"
        self.calls += 1
        if self.calls <= 2:
            return self.calls == 1
        fast = self.cost[1] <= self.cost[0]
        # re-try the slower path less often the slower it is (its share of the time
        # stays about 1/EXPLORE): every EXPLORE x ratio calls, at most 1024
        lo, hi = sorted(self.cost)
        every = int(min(1024.0, self.EXPLORE * max(1.0, hi / lo if lo > 0 else 1.0)))
        self.since += 1
        if self.since >= every:
            self.since = 0
            return not fast
        return fast

    def record(self, chunked: bool, seconds: float, entries: int) -> None:
        c = seconds / max(entries, 1)
        k = int(chunked)
        # a faster time is taken at once (a first call that compiled, or a load that
        # has gone, must not hold a path back); slower ones are averaged in
        if self.cost[k] == 0.0 or c < self.cost[k]:
            self.cost[k] = c
        else:
            self.cost[k] = 0.75 * self.cost[k] + 0.25 * c


CHOOSER = Chooser()


@njit(cache=True, nogil=True)
def _scan_blocks(xr, stats, b0, b1):
    """``stats[b] = (NaN present, block maximum as float64)``."""
    n = xr.shape[0]
    acc = np.empty(16, dtype=xr.dtype)
    for b in range(b0, b1):
        j0 = b * _BLOCK
        xs = xr[j0 : min(n, j0 + _BLOCK)]
        stats[b, 0] = 1.0 if _has_nan(xs) else 0.0
        stats[b, 1] = np.float64(_max16(xs, acc))


@njit(cache=True, nogil=True)
def _merge_scan(xr, stats, T, unit):
    """``(any NaN, m)`` from the block stats (``m = max / T`` as the serial kernel)."""
    nan = False
    xm = -np.inf
    for b in range(stats.shape[0]):
        nan |= stats[b, 0] != 0.0
        xm = max(xm, stats[b, 1])
    return nan, _v(xr.dtype.type(xm), T, unit)


@njit(cache=True, nogil=True)
def _bases(seed, r, S, bases):
    for s in range(S):
        bases[s] = stream_base(seed, r, s)


@njit(cache=True, nogil=True)
def _finish(ci, cv, cw, cnt, T, unit, m, target, logq, need_z):
    """Join the blocks' candidates, weigh them, find the threshold and ``Z``."""
    C = _join_blocks(ci, cv, cnt)
    _fill(C, T, unit, m, cv, cw)
    theta = _top_p_threshold(cv, cw, C, m, target)
    z = _kept_mass(cv, cw, C, m, theta, logq) if need_z else np.nan
    return C, theta, z


def sample_row_chunked(serial, x, i, T, P, logq, S, seed, row0, need_z, tokens, info, nt, scratch):
    """Top-p sampling of row ``i`` of ``x`` on ``nt`` threads (module docstring);
    ``serial(r0, r1)`` samples rows ``[r0, r1)`` with the serial kernel (special rows)."""
    xr = x[i]
    n = xr.shape[0]
    unit = T == 1.0
    nb = -(-n // _BLOCK)
    stats = np.empty((nb, 2))
    run(_scan_blocks, nb, nt, xr, stats)
    nan, m = _merge_scan(xr, stats, T, unit)
    if nan or not math.isfinite(m):
        serial(i, i + 1)
        return
    part = np.empty((nb, 1 + len(_LEV)))
    run(_block_levels, nb, nt, xr, T, unit, m, part)
    lev = np.empty(len(_LEV))
    s_row = _merge_levels(part, lev)
    target, dlo, dup, mup = _bracket(n, m, s_row, lev, P)
    if dup - dlo > _BAND_MIN:
        t, X = _band_depths(xr, T, unit, m, dlo, dup)
        cntb = np.empty((nb, _NB + 1), dtype=np.int64)
        run(_band_blocks, nb, nt, xr, X, cntb)
        dlo = _refine(t, cntb, mup, target)
    xlo = _x_lower(xr, T, unit, m, dlo)
    ci, cv, cw = scratch(n)
    cnt = np.empty(nb, dtype=np.int64)
    run(_gather_blocks, nb, nt, xr, xlo, ci, cv, cnt)
    C, theta, z = _finish(ci, cv, cw, cnt, T, unit, m, target, logq, need_z)
    bases = np.empty(S, dtype=np.uint64)
    _bases(seed, row0 + i, S, bases)
    ncb = -(-C // _CBLOCK)
    bestb = np.empty((ncb, S))
    bestjb = np.empty((ncb, S), dtype=np.int64)
    run(_race_cblocks, ncb, nt, ci, cv, C, m, theta, logq, S, bases, bestb, bestjb)
    _race_merge(bestb, bestjb, tokens[i])
    info[i, 0] = 0.0
    info[i, 1] = theta
    info[i, 2] = m
    info[i, 3] = math.log(z) if need_z else np.nan
