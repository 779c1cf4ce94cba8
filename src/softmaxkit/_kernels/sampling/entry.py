"""The sampling kernel ``_sample_rows`` (one row at a time: pass 1, the path's filter,
the race) and its entry point ``sample_rows``, which runs it on the library's
threads with a per-thread scratch for the candidates (``release_scratch``).
"""

from __future__ import annotations

import math
import threading
import time

import numba
import numpy as np
from numba import njit
from numba.np.ufunc import parallel as _numba_parallel

from .._parallel import run, threads_for
from ..view import readonly, row
from .chunked import CHOOSER, CHUNK_MIN, chunked_path, sample_row_chunked
from .fast import FAST_MIN, _top_p_spec
from .keys import _KMAX, _TILE, stream_base
from .race import _race_cands, _race_init, _race_one, _race_row
from .scan import _LEV, _first_eq, _has_nan, _heap, _max_nan, _store_v, _sum_blocks, _v
from .top_p import (
    _compact,
    _fill,
    _gather,
    _kept_mass,
    _lower_bound,
    _top_p_threshold,
    _weights,
)

# --------------------------------------------------------------------------- driver


_TLS = threading.local()


def _scratch(n: int):
    """This thread's candidate buffers (index, value, weight) of at least ``n`` entries,
    kept for the next call: fresh ones cost a page fault per 4 KiB touched (top-p of a
    [1, 262144] row: 0.5 ms of faults for 1.5 MB of candidates, as much as the rest of
    the call)."""
    buf = getattr(_TLS, "buf", None)
    if buf is None or buf[0].shape[0] < n:
        buf = (np.empty(n, dtype=np.int64), np.empty(n), np.empty(n))
        _TLS.buf = buf
    return buf


# Top-p of long float32 rows at T = 1 first tries fast._top_p_spec (a float32 exp per
# entry, the threshold certified to be this path's, else this path); False: never
# (tests compare the two)
FAST_TOP_P = True


def _wbuf(n: int):
    """This thread's float32 buffer of at least ``n`` entries (``fast``), kept."""
    wb = getattr(_TLS, "wb", None)
    if wb is None or wb.shape[0] < n:
        wb = np.empty(n, dtype=np.float32)
        _TLS.wb = wb
    return wb


def _sizes(x, T, greedy, K, P, need_z):
    """``(ns, nw, fast)``: the scratch sizes and whether top-p tries ``_top_p_spec``."""
    n = x.shape[1]
    need = (P < 1.0 or K > _KMAX) and not (0 < K <= _KMAX) and not greedy
    fast = (
        FAST_TOP_P and need and K == 0 and T == 1.0 and x.dtype == np.float32
        and n >= FAST_MIN and not need_z
    )  # fmt: skip
    return (n if need else 1), (n if fast else 1), fast


def sample_rows(x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, use=None):
    """Run :func:`_sample_rows` over the rows on the library's threads, each thread
    with its own scratch (``24 n`` bytes when the path needs candidates, kept per thread
    for reuse; ``release_scratch`` drops them).  ``use``: the chunked-or-serial choice
    already made by ``CHOOSER.pick()`` (``sample_serial``), None to make it here."""
    R, n = x.shape
    if R == 0:
        return
    x = readonly(x)  # one compiled variant (view.readonly)
    ns, nw, fast = _sizes(x, T, greedy, K, P, need_z)

    def task(t0, t1):
        ci, cv, cw = _scratch(ns)
        wb = _wbuf(nw)
        _sample_rows(
            x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, ci, cv, cw, wb,
            fast, t0, t1,
        )  # fmt: skip

    nt = threads_for(4 * x.size, x.itemsize)
    ntr = max(1, int(numba.get_num_threads()))
    if chunked_path(R, n, greedy, K, P, ntr):
        # a single long row (or a few): its blocks on the threads, one row at a time,
        # or the rows whole, whichever has been faster here (chunked.Chooser)
        if use is None:
            use = CHOOSER.pick()
        t0 = time.perf_counter()
        if use:
            for i in range(R):
                sample_row_chunked(
                    task, x, i, T, P, logq, S, seed, row0, need_z, tokens, info, ntr, _scratch
                )
        else:
            run(task, R, nt)
        CHOOSER.record(use, time.perf_counter() - t0, R * n)
        return
    run(task, R, nt)


# the (dtype, aligned, chunked) routes of sample_serial that have run in
# this process: their kernels are compiled or loaded (``warm_only``)
WARM: set = set()


def _num_threads() -> int:
    """``numba.get_num_threads()`` without its launch check once the threading layer is
    up (two locks, one a process lock: 2 us, 18 us with cold caches); Numba's own
    function otherwise or if its internals change."""
    get = getattr(_numba_parallel, "_get_num_threads", None)
    if getattr(_numba_parallel, "_is_initialized", False) and get is not None:
        return max(1, int(get()))
    return max(1, int(numba.get_num_threads()))


def sample_serial(x, T, greedy, K, P, logq, S, seed, row0, warm_only=False):
    """``(tokens, info, bad)`` of :func:`sample_rows` without log-probs (``need_z``
    False) in one call of the serial kernel (``_sample_all``), for calls that run on
    the calling thread: the public function's fast route (``sampling.sample``), a few
    Python calls instead of the dozens of the generic route, which cost 0.2-0.3 ms
    when the caches are cold (a call after another library's: [1, 262144] top-p
    0.89 -> 0.59 ms, one thread).  ``bad``: the first row that is all ``-inf`` or
    holds NaN, else -1.  The same kernel on the same rows as :func:`sample_rows`: the
    same tokens (``tests/test_sampling_serial.py``).  None when the rows go to several
    threads (the caller takes the generic route), or with ``warm_only`` when a route
    the call may take has not run in this process yet (its kernel could compile:
    the caller takes the route that handles a cold kernel); when the chunked path is
    picked (``CHOOSER``) it runs here through :func:`sample_rows`."""
    R, n = x.shape
    if R == 0 or threads_for(4 * x.size, x.itemsize) > 1:
        return None
    x = readonly(x)  # one compiled variant (view.readonly)
    chunk = n >= CHUNK_MIN and chunked_path(R, n, greedy, K, P, _num_threads())
    key = (x.dtype.char, x.flags.aligned)  # (x is read-only here, whatever the caller's)
    if warm_only and ((*key, False) not in WARM or (chunk and (*key, True) not in WARM)):
        return None
    use = CHOOSER.pick() if chunk else False
    if use:
        tokens = np.zeros((R, S), dtype=np.int64)
        info = np.full((R, 4), np.nan)
        sample_rows(x, T, greedy, K, P, logq, S, seed, row0, False, tokens, info, use=True)
        WARM.add((*key, True))
        st = info[:, 0]
        bad = np.flatnonzero((st == 1.0) | (st == 2.0))
        return tokens, info, int(bad[0]) if bad.size else -1
    ns, nw, fast = _sizes(x, T, greedy, K, P, False)
    t0 = time.perf_counter()
    ci, cv, cw = _scratch(ns)
    wb = _wbuf(nw)
    # need_z and the first row passed from here, a plain bool and int: constants inside
    # _sample_all would compile _sample_rows again for Literal[bool](False) and
    # Literal[int](0), instead of reusing the variant sample_rows compiles
    res = _sample_all(x, T, greedy, K, P, logq, S, seed, row0, False, ci, cv, cw, wb, fast, 0)
    if chunk:
        CHOOSER.record(False, time.perf_counter() - t0, R * n)
    WARM.add((*key, False))
    return res


@njit(cache=True, nogil=True)
def _sample_all(x, T, greedy, K, P, logq, S, seed, row0, need_z, ci, cv, cw, wb, fast, r0):
    """:func:`_sample_rows` over rows ``r0:`` (``sample_serial`` passes 0: every row)
    with its outputs made here; returns ``(tokens, info, bad)``."""
    R = x.shape[0]
    tokens = np.zeros((R, S), dtype=np.int64)
    info = np.full((R, 4), np.nan)
    _sample_rows(
        x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, ci, cv, cw, wb, fast, r0, R
    )
    bad = -1
    for i in range(R):
        if info[i, 0] == 1.0 or info[i, 0] == 2.0:
            bad = i
            break
    return tokens, info, bad


def release_scratch() -> None:
    """Drop the calling thread's scratch buffers."""
    _TLS.buf = None
    _TLS.wb = None


@njit(cache=True, nogil=True)
def _sample_rows(
    x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, ci, cv, cw, wb, fast, r0, r1
):
    """Sample ``S`` tokens from each row of ``x[R, n]`` (module docstring).

    ``K`` = 0 means no top-k (``0 < K < n`` otherwise), ``P`` = 1 no top-p, ``logq`` =
    -inf no min-p; ``greedy`` uses ``T = 1`` and keeps the maxima (tie mode).  Writes
    ``tokens[i, :S]`` (int64) and ``info[i] = (status, theta, m, log Z)``; ``log Z``
    is computed when ``need_z`` (log-probs, ``sampling_probs``).  ``row0 + i`` is the
    row index the draws use.  ``fast``: top-p tries ``fast._top_p_spec`` first (the
    caller sets it for float32 rows of at least ``FAST_MIN``, ``T = 1``, no top-k,
    no ``need_z``; ``wb`` a float32 buffer of ``n``).
    """
    n = x.shape[1]
    nb = max(S, 1)
    unit = T == 1.0
    dt = np.empty(_TILE)
    bt = np.empty(_TILE)
    acc = np.empty(16, dtype=x.dtype)
    acc64 = np.empty(16)
    lev = np.empty(len(_LEV))
    bases = np.empty(nb, dtype=np.uint64)
    best = np.empty(nb)
    bestj = np.empty(nb, dtype=np.int64)
    small_k = 0 < K <= _KMAX and not greedy
    large_k = K > _KMAX and not greedy
    scratch = (P < 1.0 or large_k) and not small_k and not greedy
    kb = K if small_k else 1
    bufv = np.empty(kb)
    bufi = np.empty(kb, dtype=np.int64)
    for i in range(r0, r1):
        xr = row(x, i)
        tok = row(tokens, i)
        for s in range(S):
            bases[s] = stream_base(seed, row0 + i, s)
        theta = -np.inf
        z = 0.0
        tk = -np.inf
        lo = -np.inf
        target = 0.0
        C = 0
        ok = False
        # ---- pass 1: NaN, maximum (or the top-k buffer) ----
        neq = 0
        if small_k:
            if _has_nan(xr):
                info[i, 0] = 2.0
                continue
            neq = _heap(xr, T, unit, K, bufv, bufi, acc)
            m = bufv[0]
            jmax = bufi[0]
        else:
            xm, nan = _max_nan(xr)
            if nan:
                info[i, 0] = 2.0
                continue
            m = _v(xm, T, unit)
            # the race over top-p candidates starts from nothing (the maximum is one of
            # them); the row races start at the maximum's exact key
            topp_only = scratch and not large_k
            jmax = _first_eq(xr, xm) if (m != -np.inf and not topp_only) or m == np.inf else 0
        if m == -np.inf:
            info[i, 0] = 1.0
            continue
        info[i, 2] = m
        if greedy or m == np.inf:
            # tie mode: the maxima, uniformly (the +inf rule; temperature -> 0)
            _race_init(S, bases, best, bestj, jmax)
            _, cnt = _race_row(
                xr, T, unit, m, m, -np.inf, True, S, bases, best, bestj, False, dt, bt, acc, acc64
            )
            for s in range(S):
                tok[s] = bestj[s]
            info[i, 0] = 3.0
            info[i, 1] = m
            info[i, 3] = math.log(cnt)
            continue
        if scratch and not large_k:
            for s in range(S):
                best[s] = -np.inf
                bestj[s] = n
        else:
            _race_init(S, bases, best, bestj, jmax)
        if small_k:
            # ---- top-k buffer: top-p walk, min-p, race over the buffer ----
            tk = bufv[K - 1]
            zk = 0.0
            for q in range(K):
                zk += math.exp(bufv[q] - m)
            wk = math.exp(tk - m)
            zk += neq * wk
            theta = tk
            if P < 1.0:
                target = P * zk
                cum = 0.0
                for q in range(K):
                    cum += math.exp(bufv[q] - m)
                    if cum >= target:
                        theta = bufv[q]
                        break
            for q in range(K):
                v = bufv[q]
                if v < theta or v - m < logq:
                    break
                d = v - m
                z += math.exp(d)
                if v != -np.inf:
                    _race_one(bufi[q], d, S, bases, best, bestj)
            if neq > 0 and tk == theta and tk - m >= logq and tk != -np.inf:
                z += neq * wk
                # the ties at the K-th value beyond the buffer: the first `inbuf`
                # entries equal to tk are the buffer's own
                inbuf = 0
                for q in range(K):
                    inbuf += bufv[q] == tk
                seen = 0
                d = tk - m
                for j in range(n):
                    if _v(xr[j], T, unit) == tk:
                        seen += 1
                        if seen > inbuf:
                            _race_one(j, d, S, bases, best, bestj)
        elif scratch:
            # ---- threshold search over the candidates ----
            if large_k:
                _store_v(xr, T, unit, cv)
                tk = np.partition(cv[:n], n - K)[n - K]
                theta = tk
                if P < 1.0:
                    zk = 0.0
                    cntk = 0
                    for j in range(n):
                        if cv[j] >= tk:
                            zk += math.exp(cv[j] - m)
                            cntk += 1
                    lo = max(m + math.log((1.0 - P) * zk / cntk) - 1e-6, tk)
                    C = _compact(cv, n, lo, ci)
                    _weights(cv, C, m, cw)
                    target = P * zk
            elif P < 1.0:
                if fast and n >= FAST_MIN:
                    # certified: the threshold the lines below would find
                    ok, theta, C = _top_p_spec(xr, m, P, ci, cv, cw, wb)
                if not ok:
                    s_row = _sum_blocks(xr, T, unit, m, lev)
                    target, xlo = _lower_bound(xr, T, unit, m, s_row, lev, P)
                    C = _gather(xr, xlo, ci, cv, 0)
                    _fill(C, T, unit, m, cv, cw)
            if P < 1.0:
                if not ok:
                    theta = max(theta, _top_p_threshold(cv, cw, C, m, target))
                if need_z:
                    z = _kept_mass(cv, cw, C, m, theta, logq)
                _race_cands(ci, cv, 0, C, m, theta, logq, S, bases, best, bestj)
        if not small_k and (not scratch or P >= 1.0):
            # ---- plain / min-p / large K without top-p: the race over the row ----
            # one call with the arguments spelled out: passed through a tuple, the
            # literal False (tie) loses its literal type and the race got 20% slower
            z, _ = _race_row(
                xr,
                T,
                unit,
                m,
                theta,
                logq,
                False,
                S,
                bases,
                best,
                bestj,
                need_z,
                dt,
                bt,
                acc,
                acc64,
            )
        for s in range(S):
            tok[s] = bestj[s]
        info[i, 0] = 0.0
        info[i, 1] = theta
        info[i, 3] = math.log(z) if need_z else np.nan
