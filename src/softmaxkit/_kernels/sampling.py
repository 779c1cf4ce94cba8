"""Numba kernels of :func:`softmaxkit.sample`: filtered sampling by an exponential race.

Kernels see C-contiguous rows ``x[R, n]`` (float32 or float64) and raise nothing:
per row they report a status the driver turns into a named error.  Keys are
``v = x / T`` computed in float64, always with the same expression (no
reciprocal, no contraction: the row maximum's own ``v - m`` must be exactly 0 and
``v == m`` must find the maxima again).

The filters (``docs/vocab.md``, "Sampling") keep a set of the form
``{j : v_j >= theta, v_j - m >= log(min_p), v_j > -inf}`` with ``m`` the row maximum
and ``theta`` the top-k / top-p threshold; rows whose maximum is ``+inf`` (and
``temperature=0``) keep ``{j : v_j == m}`` with equal weights ("tie mode").

The draw (Gumbel-max, equivalently an exponential race): sample ``s`` of row
``i`` is ``argmax_j  (v_j - m) - log E_ijs`` over the kept set, with
``E_ijs = -log(1 - r_ijs)`` an Exp(1) variable and ``r_ijs`` a uniform in (0, 1)
made by a counter-based hash of ``(seed, i, j, s)`` alone (SplitMix64's mixer:
``base_is = mix(mix(mix(seed + G) + (i + 1) G) + (s + 1) G')``, then
``r = (mix(base_is + (j + 1) G) >> 12 + 1/2) 2^-52``).  The winner is therefore the
same whatever the thread count, the order rows or tiles are visited in, or how a
row is cut; ties of keys go to the smaller ``j``.

Pruning the race: ``E >= r`` and ``log2 r >= lg(r) := bits(r) 2^-52 - 1023`` (the
float's bits read as a piecewise-linear log2, below the true log2 since
``log2(1 + f) >= f``), so ``key_j <= (v_j - m) - ln2 lg(r_j)``: a bound from one hash,
an int-to-float conversion and a multiply-add, vectorised; the two logarithms of the
exact key are evaluated only where the bound beats the current best (a few per
tile).  The race starts from the exact key of the row's argmax.

Paths (``P`` = top_p, ``K`` = top_k, ``S`` = samples, ``n`` = row length).  Every
path first counts NaN (one vectorised read) and then:

* plain / min-p only / large ``K`` without top-p ("row race"): the row maximum
  (16-way vectorised, in the input dtype: ``max(x) / T = max(x / T)``) and its first
  index; then the race over the row in tiles of ``_TILE``, a tile skipped when its
  maximum is not kept or is ``_BOUND_MAX`` below every sample's best key.  Three
  reads of the row.  Large ``K`` (``> _KMAX``) adds a float64 copy of the row and a
  selection (``np.partition``, another copy) for the ``K``-th value.  Extra memory:
  a few tiles (16 kB); large ``K``: ``16 n`` bytes.
* small ``K`` (``1 <= K <= _KMAX``, the common top-k 20..100), with or without
  top-p / min-p ("heap"): one read keeps the ``K`` best keys in a sorted buffer (a
  tile whose vectorised maximum is below the ``K``-th is skipped) and counts the
  entries equal to the ``K``-th that did not fit; top-p walks the buffer; the race
  runs over the buffer only.  Another read only when such ties at the ``K``-th value
  exist and are kept.  Extra memory: ``16 K`` bytes.
* top-p without small ``K`` ("threshold search"): the maximum; then
  ``s = sum exp(v - m)`` (float64, vectorised exp) together with the masses above
  the depths ``_LEV``; a lower bound ``lo`` of the threshold (the tokens below
  ``m + log((1 - P) s / n)`` hold at most ``(1 - P) s``, and a depth whose mass
  reaches ``P s`` bounds it too); one read gathers the candidates ``x >= lo T``
  (branch-free compaction, compared in the input dtype with a 1e-6 margin: a
  superset); the crossing of the cumulative mass is found among the candidates by
  bisection on the value (vectorised masked sums, the band compacted as it shrinks,
  the last ``_SMALL`` sorted); the race runs over the kept candidates.  Four reads
  of the row, no sort of the row.  Extra memory: ``24 n`` bytes per thread
  (candidate index, value, weight; kept by the thread for the next call, see
  ``_scratch``) plus the band copies (at most ``2 n / 8`` values).

Accumulators are float64.  The per-row output ``info[i]`` is
``(status, theta, m, log Z)``: status 0 sampled, 1 nothing to sample (all
``-inf``), 2 NaN present, 3 sampled in tie mode (``log Z = log count``);
``Z = sum over the kept set of exp(v - m)``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._parallel import run, threads_for
from .exp import exp_, fmax
from .view import row

__all__ = ["release_scratch", "sample_rows", "stream_base", "uniform"]

_TILE = 512
_KMAX = 256  # top-k up to this size keeps a sorted buffer; larger uses a selection
_SMALL = 256  # a top-p band this small is sorted instead of bisected

# reassoc: vectorised sums; nsz: sign of zero irrelevant; contract only fuses the
# bound's multiply-add.  Never arcp (x / T must stay a division everywhere, so that
# v == m finds the maximum again) nor nnan/ninf (NaN detection, -inf entries).
_FM = {"reassoc", "nsz", "contract"}

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (odd)
_GOLD2 = np.uint64(0xD1B54A32D192ED03)  # a second odd increment, for the sample index
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S12 = np.uint64(12)
_TWO_M52 = 2.0**-52
_LN2 = math.log(2.0)
# max of -ln2 lg(r) over r >= 2^-53: ln2 * 53 = 36.74; a tile whose best d cannot
# reach the current best key by this much holds no winner
_BOUND_MAX = 37.0
_SLACK = 1e-9  # the bound's rounding (|key| < 40, a few ulp) is far below this


@intrinsic
def _bits(typingctx, x):
    """The bits of a float64 as int64 (a bitcast; vectorises)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    """SplitMix64's finaliser (Stafford's variant 13): a bijection of uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True)
def stream_base(seed, row_index, s):
    """The 64-bit key of (seed, row, sample): element ``j`` draws ``mix(base + (j+1) G)``."""
    h = _mix(seed + _GOLD)
    h = _mix(h + np.uint64(row_index + 1) * _GOLD)
    return _mix(h + np.uint64(s + 1) * _GOLD2)


@njit(cache=True, nogil=True, inline="always")
def _unif(base, j):
    """Uniform in (0, 1), exact multiple of 2^-53 (52 random bits + 1/2)."""
    z = _mix(base + np.uint64(j + 1) * _GOLD)
    return (np.float64(z >> _S12) + 0.5) * _TWO_M52


@njit(cache=True, nogil=True)
def uniform(base, j):
    """``r`` of element ``j`` for a stream ``base`` (for the reference and tests)."""
    return _unif(base, j)


@njit(cache=True, nogil=True, inline="always")
def _bound(d, r):
    """An upper bound of ``d - log(-log1p(-r))`` (module docstring)."""
    lg = np.float64(_bits(r)) * _TWO_M52 - 1023.0
    return d - _LN2 * lg


@njit(cache=True, nogil=True, inline="always")
def _key(d, r):
    """The exact Gumbel key ``d - log E`` with ``E = -log(1 - r)`` ~ Exp(1)."""
    return d - math.log(-math.log1p(-r))


# --------------------------------------------------------------------------- pass 1


@njit(cache=True, nogil=True, inline="always")
def _v(x, T, unit):
    """The key ``v = x / T`` in float64, the one expression every pass uses (``unit``:
    ``T == 1``, the division skipped; loop-invariant, so LLVM unswitches the loops)."""
    return np.float64(x) if unit else np.float64(x) / T


@njit(cache=True, nogil=True, fastmath=_FM)
def _max16(xs, acc):
    """``max(xs)`` ignoring NaN (``-inf`` for an empty or all ``-inf`` slice), in the
    dtype of ``xs``, with 16 partial maxima in ``acc`` (``llvm.maxnum`` chains do not
    vectorise as a reduction: one chain measured 1.1 ns per float32, 16 0.28 ns)."""
    acc[:] = -np.inf
    n = xs.shape[0]
    n16 = n - n % 16
    for j in range(0, n16, 16):
        for k in range(16):
            acc[k] = fmax(acc[k], xs[j + k])
    mx = acc[0]
    for k in range(16):
        mx = fmax(mx, acc[k])
    for j in range(n16, n):
        mx = fmax(mx, xs[j])
    return mx


@njit(cache=True, nogil=True, fastmath=_FM)
def _has_nan(xr):
    cnt = 0
    for j in range(xr.shape[0]):
        cnt += xr[j] != xr[j]
    return cnt > 0


@njit(cache=True, nogil=True, fastmath=_FM)
def _first_eq(xr, xm):
    """The first ``j`` with ``xr[j] == xm`` (tiles counted vectorised, then scanned)."""
    n = xr.shape[0]
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        hit = 0
        for j in range(tn):
            hit += xr[t0 + j] == xm
        if hit:
            for j in range(tn):
                if xr[t0 + j] == xm:
                    return t0 + j
    return 0


_LEV = (-1.5, -3.0, -5.0, -8.0)  # the depths d = v - m of the top-p bracketing masses


@njit(cache=True, nogil=True, fastmath=_FM)
def _sum_levels(xr, T, unit, m, lev):
    """``s = sum exp(v - m)`` (float64, vectorised exp) and ``lev[k] = sum over
    v - m >= _LEV[k]`` of the same terms: if ``lev[k] >= P s`` the top-p threshold is
    at least ``m + _LEV[k]``."""
    s = 0.0
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for j in range(xr.shape[0]):
        d = _v(xr[j], T, unit) - m
        w = exp_(d)
        s += w
        a0 += w if d >= _LEV[0] else 0.0
        a1 += w if d >= _LEV[1] else 0.0
        a2 += w if d >= _LEV[2] else 0.0
        a3 += w if d >= _LEV[3] else 0.0
    lev[0] = a0
    lev[1] = a1
    lev[2] = a2
    lev[3] = a3
    return s


@njit(cache=True, nogil=True, fastmath=_FM)
def _store_v(xr, T, unit, cv):
    for j in range(xr.shape[0]):
        cv[j] = _v(xr[j], T, unit)


@njit(cache=True, nogil=True)
def _heap(xr, T, unit, K, bufv, bufi, acc):
    """Pass 1 of the small-``K`` path: the ``K`` largest ``v`` in decreasing order (ties
    by increasing index) in ``bufv``/``bufi``, and ``neq``, the number of entries equal
    to the ``K``-th value that are not in the buffer (they all come after the buffer's
    own entries of that value).  A tile whose maximum is below the ``K``-th value is
    skipped after its vectorised maximum.  Requires ``K < n`` and no NaN."""
    n = xr.shape[0]
    cnt = 0
    neq = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        xs = xr[t0 : t0 + tn]
        if cnt == K and _v(_max16(xs, acc), T, unit) < bufv[K - 1]:
            continue  # nothing in this tile can enter or tie
        for j in range(tn):
            key = _v(xs[j], T, unit)
            if cnt < K:
                pos = cnt
                while pos > 0 and key > bufv[pos - 1]:
                    bufv[pos] = bufv[pos - 1]
                    bufi[pos] = bufi[pos - 1]
                    pos -= 1
                bufv[pos] = key
                bufi[pos] = t0 + j
                cnt += 1
            elif key > bufv[K - 1]:
                old = bufv[K - 1]
                pos = K - 1
                while pos > 0 and key > bufv[pos - 1]:
                    bufv[pos] = bufv[pos - 1]
                    bufi[pos] = bufi[pos - 1]
                    pos -= 1
                bufv[pos] = key
                bufi[pos] = t0 + j
                # the evicted entry (value old) still ties the new K-th only if equal
                neq = neq + 1 if bufv[K - 1] == old else 0
            elif key == bufv[K - 1]:
                neq += 1
    return neq


# --------------------------------------------------------------------------- races


@njit(cache=True, nogil=True)
def _race_init(S, bases, best, bestj, jmax):
    """Start every sample's race at the exact key of the argmax (``d = 0``)."""
    for s in range(S):
        best[s] = _key(0.0, _unif(bases[s], jmax))
        bestj[s] = jmax


@njit(cache=True, nogil=True, fastmath=_FM)
def _race_row(xr, T, unit, m, theta, logq, tie, S, bases, best, bestj, need_z, dt, bt, acc, acc64):
    """The race over a whole row in tiles (the "row race" and tie-mode paths).

    Kept: ``v >= theta`` and ``v - m >= logq`` (tie mode: ``v == m``, weight 1).
    Per tile: the vectorised tile maximum skips tiles with nothing kept, and (unless
    ``need_z``) tiles whose best ``d`` is ``_BOUND_MAX`` below every sample's best
    key; then ``d`` (``-inf`` where not kept) and, per sample, the vectorised bounds,
    then the exact keys where a bound beats the best.  Returns ``(Z, count)``: the
    kept mass ``sum exp(d)`` (when ``need_z``) and the kept count (tie mode).
    """
    n = xr.shape[0]
    z = 0.0
    cnt = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        xs = xr[t0 : t0 + tn]
        vmax = _v(_max16(xs, acc), T, unit)
        if tie:
            if vmax != m:
                continue
            for j in range(tn):
                hit = _v(xs[j], T, unit) == m
                dt[j] = 0.0 if hit else -np.inf
                cnt += hit
        else:
            if vmax < theta or vmax - m < logq or vmax == -np.inf:
                continue
            if not need_z:
                bmin = np.inf
                for s in range(S):
                    bmin = min(bmin, best[s])
                if vmax - m + _BOUND_MAX <= bmin:
                    continue
            for j in range(tn):
                v = _v(xs[j], T, unit)
                d = v - m
                dt[j] = d if (v >= theta) & (d >= logq) else -np.inf
            if need_z:
                acc_z = 0.0
                for j in range(tn):
                    acc_z += exp_(dt[j])
                z += acc_z
        dmax = vmax - m if not tie else 0.0
        for s in range(S):
            b = best[s]
            if dmax + _BOUND_MAX <= b:
                continue
            base = bases[s]
            for j in range(tn):
                bt[j] = _bound(dt[j], _unif(base, t0 + j))
            if _max16(bt[:tn], acc64) <= b - _SLACK:
                continue
            bj = bestj[s]
            for j in range(tn):
                if bt[j] > b - _SLACK and dt[j] != -np.inf:
                    key = _key(dt[j], _unif(base, t0 + j))
                    if key > b or (key == b and t0 + j < bj):
                        b = key
                        bj = t0 + j
            best[s] = b
            bestj[s] = bj
    return z, cnt


@njit(cache=True, nogil=True)
def _race_one(j, d, S, bases, best, bestj):
    """Enter element ``j`` (with ``d = v - m``) into every sample's race."""
    for s in range(S):
        r = _unif(bases[s], j)
        b = best[s]
        if _bound(d, r) > b - _SLACK:
            key = _key(d, r)
            if key > b or (key == b and j < bestj[s]):
                best[s] = key
                bestj[s] = j


# --------------------------------------------------------------------------- top-p


@njit(cache=True, nogil=True, fastmath=_FM)
def _band_mass(wv, ww, L, t, b):
    """Mass and count of the entries of ``wv[:L]`` in ``[t, b)`` and count in the rest
    of the band below ``t`` (vectorised masked sums)."""
    up = 0.0
    nup = 0
    for c in range(L):
        v = wv[c]
        hit = (v >= t) & (v < b)
        up += ww[c] if hit else 0.0
        nup += hit
    return up, nup


@njit(cache=True, nogil=True, fastmath=_FM)
def _band_count(wv, L, a, b):
    cnt = 0
    for c in range(L):
        cnt += (wv[c] >= a) & (wv[c] < b)
    return cnt


@njit(cache=True, nogil=True)
def _band_compact(wv, ww, L, a, b, cnt):
    nv = np.empty(cnt)
    nw = np.empty(cnt)
    k = 0
    for c in range(L):
        v = wv[c]
        if v >= a and v < b:
            nv[k] = v
            nw[k] = ww[c]
            k += 1
    return nv, nw


@njit(cache=True, nogil=True)
def _top_p_threshold(cv, cw, C, m, target):
    """The largest ``tp`` among the candidates with ``sum_{cv >= tp} cw >= target``
    (the top-p crossing; every entry equal to ``tp`` is kept with it).

    Bisection on the value: the band ``[a, b)`` holds the crossing, with
    ``A = mass(v >= b) < target <= mass(v >= a)``; each step is one vectorised masked
    sum over the current arrays, which are compacted into new (smaller) ones when the
    band holds at most an eighth of them; once the band holds at most ``_SMALL``
    entries (or cannot be split), it is sorted and walked from ``A``.
    """
    a = np.inf
    for c in range(C):
        a = min(a, cv[c])
    b = m + 1.0
    A = 0.0
    wv = cv
    ww = cw
    L = C
    band = C
    for _ in range(200):
        if band <= _SMALL:
            break
        t = 0.5 * (a + b)
        if not (a < t < b):
            break  # no float between: the band is one value
        up, nup = _band_mass(wv, ww, L, t, b)
        if A + up >= target:
            a = t
            band = nup
        else:
            A += up
            b = t
            band -= nup
        if band * 8 <= L and band > _SMALL:
            wv, ww = _band_compact(wv, ww, L, a, b, band)
            L = band
    if band != L:
        wv, ww = _band_compact(wv, ww, L, a, b, band)
        L = band
    vals = np.empty(L)
    for q in range(L):
        vals[q] = -wv[q]
    order = np.argsort(vals)
    cum = A
    last = a
    for q in range(L):
        c = order[q]
        cum += ww[c]
        last = wv[c]
        if cum >= target:
            return last
    return last  # rounding: the target is not reached; keep every candidate


@njit(cache=True, nogil=True, fastmath=_FM)
def _gather(xr, xlo, ci, cv):
    """Branch-free compaction of ``xr[j] >= xlo``: indices into ``ci``, values (as
    float64, not yet divided by ``T``) into ``cv``."""
    c = 0
    for j in range(xr.shape[0]):
        x = xr[j]
        ci[c] = j
        cv[c] = np.float64(x)
        c += x >= xlo
    return c


@njit(cache=True, nogil=True, fastmath=_FM)
def _fill(C, T, unit, m, cv, cw):
    """Keys and weights of the gathered candidates (contiguous, vectorised)."""
    for c in range(C):
        v = cv[c] if unit else cv[c] / T
        cv[c] = v
        cw[c] = exp_(v - m)


@njit(cache=True, nogil=True, fastmath=_FM)
def _compact(cv, n, lo, ci):
    """In-place compaction of the stored values ``cv[:n] >= lo`` (large-``K`` path)."""
    c = 0
    for j in range(n):
        v = cv[j]
        ci[c] = j
        cv[c] = v
        c += v >= lo
    return c


@njit(cache=True, nogil=True, fastmath=_FM)
def _weights(cv, C, m, cw):
    for c in range(C):
        cw[c] = exp_(cv[c] - m)


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


def sample_rows(x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info):
    """Run :func:`_sample_rows` over the rows on the library's threads, each thread
    with its own scratch (``24 n`` bytes when the path needs candidates, kept per thread
    for reuse; ``release_scratch`` drops them)."""
    R, n = x.shape
    if R == 0:
        return
    need = (P < 1.0 or K > _KMAX) and not (0 < K <= _KMAX) and not greedy
    ns = n if need else 1

    def task(t0, t1):
        ci, cv, cw = _scratch(ns)
        _sample_rows(
            x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, ci, cv, cw, t0, t1
        )

    run(task, R, threads_for(4 * x.size, x.itemsize))


def release_scratch() -> None:
    """Drop the calling thread's scratch buffers."""
    _TLS.buf = None


@njit(cache=True, nogil=True)
def _sample_rows(x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, ci, cv, cw, r0, r1):
    """Sample ``S`` tokens from each row of ``x[R, n]`` (module docstring).

    ``K`` = 0 means no top-k (``0 < K < n`` otherwise), ``P`` = 1 no top-p, ``logq`` =
    -inf no min-p; ``greedy`` uses ``T = 1`` and keeps the maxima (tie mode).  Writes
    ``tokens[i, :S]`` (int64) and ``info[i] = (status, theta, m, log Z)``; ``log Z``
    is computed when ``need_z`` (log-probs, ``sampling_probs``).  ``row0 + i`` is the
    row index the draws use.
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
    lowest = np.finfo(x.dtype).min
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
        # ---- pass 1: NaN, maximum (or the top-k buffer) ----
        if _has_nan(xr):
            info[i, 0] = 2.0
            continue
        neq = 0
        if small_k:
            neq = _heap(xr, T, unit, K, bufv, bufi, acc)
            m = bufv[0]
            jmax = bufi[0]
        else:
            xm = _max16(xr, acc)
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
                s_row = _sum_levels(xr, T, unit, m, lev)
                target = P * s_row
                # a lower bound of the threshold: the mass below it is at most (1 - P) s
                lo = m + math.log((1.0 - P) * s_row / n) - 1e-6
                for k in range(len(_LEV)):
                    if lev[k] >= target * (1.0 + 1e-12):
                        lo = max(lo, m + _LEV[k])
                        break
                # gather a superset of v >= lo, compared in the input dtype
                xl = lo if unit else lo * T
                xl -= abs(xl) * 1e-6
                xlo = x.dtype.type(xl) if math.isfinite(xl) and xl > lowest else lowest
                C = _gather(xr, xlo, ci, cv)
                _fill(C, T, unit, m, cv, cw)
            if P < 1.0:
                theta = max(theta, _top_p_threshold(cv, cw, C, m, target))
                for c in range(C):
                    v = cv[c]
                    d = v - m
                    if v >= theta and d >= logq:
                        z += cw[c]
                        _race_one(ci[c], d, S, bases, best, bestj)
            else:
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
        else:
            # ---- plain / min-p: the race over the row ----
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
