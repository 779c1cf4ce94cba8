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

Paths (``P`` = top_p, ``K`` = top_k, ``S`` = samples; scratch per thread):

* plain / min-p only / large-``K`` without top-p ("row race"): pass 1 the row
  maximum (and the argmax); pass 2 the race over the row in tiles of ``_TILE``.
  Large ``K`` (``> _KMAX``) adds a float64 copy of the row and a selection
  (``np.partition``) for the ``K``-th value.  Extra memory: 3 tiles (12 kB) plus,
  for large ``K``, ``16 n`` bytes.
* small ``K`` (``1 <= K <= _KMAX``, the common top-k 20..100), with or without
  top-p / min-p ("heap"): one pass keeps the ``K`` best keys in a sorted buffer
  (the tile maximum skips tiles that cannot enter, as in ``topk_rows``) and counts
  the entries equal to the ``K``-th that did not fit; top-p walks the buffer;
  the race runs over the buffer only.  A second pass over the row is made only
  when such ties at the ``K``-th value exist and are kept.  Extra memory:
  ``24 K`` bytes.
* top-p without small ``K`` ("threshold search"): pass 1 the online maximum and
  ``s = sum exp(v - m)``; the tokens below ``c0 = m + log((1 - P) s / n)`` have
  total mass at most ``(1 - P) s`` and are never kept, so pass 2 gathers only the
  candidates ``v >= c0`` (branch-free compaction); the crossing point of the
  cumulative mass is found by a histogram of the candidates' masses over
  ``_NB`` bins of ``v`` (refined inside the crossing bin while it holds more than
  ``_SMALL``), then an exact sort of the crossing bin's few entries; the race runs
  over the kept candidates.  Two passes over the row, no sort of the row.
  Extra memory: ``24 n`` bytes (candidates: index, value, weight) in the worst
  case (a flat row), plus ``32 _NB`` bytes of histogram.

Accumulators are float64.  The per-row output ``info[i]`` is
``(status, theta, m, log Z)``: status 0 sampled, 1 nothing to sample (all
``-inf``), 2 NaN present, 3 sampled in tie mode (``log Z = log count``);
``Z = sum over the kept set of exp(v - m)``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._parallel import over_rows
from .exp import exp_, fmax
from .view import row

__all__ = ["sample_rows", "stream_base", "uniform"]

_TILE = 512
_KMAX = 256  # top-k up to this size keeps a sorted buffer; larger uses a selection
_NB = 1024  # histogram bins of the top-p threshold search
_SMALL = 256  # a crossing bin this small is sorted instead of refined
_LEVELS = 8  # at most this many refinements (then the rest is sorted)

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


@njit(cache=True, nogil=True, fastmath=_FM)
def _stats(xr, T, need_s, vt, cv):
    """Pass 1: ``(m, s, jmax, nan)``: maximum of ``v``, ``s = sum exp(v - m)`` when
    ``need_s`` (online, rescaled when the maximum grows), first index of the maximum,
    NaN seen (the pass stops there).  When ``cv`` has ``n`` entries the values ``v``
    are stored there too (the large-``K`` path)."""
    n = xr.shape[0]
    store = cv.shape[0] == n
    m = -np.inf
    s = 0.0
    jmax = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        tmax = -np.inf
        tnan = False
        for j in range(tn):
            v = np.float64(xr[t0 + j]) / T
            vt[j] = v
            tmax = fmax(tmax, v)
            tnan |= v != v
        if tnan:
            return np.nan, np.nan, 0, True
        if store:
            for j in range(tn):
                cv[t0 + j] = vt[j]
        if tmax > m:
            for j in range(tn):
                if vt[j] == tmax:
                    jmax = t0 + j
                    break
            if tmax == np.inf:
                m = np.inf
                continue
            s *= math.exp(m - tmax)  # 0 for the first finite tile (m = -inf)
            m = tmax
        if need_s and m != np.inf and tmax != -np.inf:
            acc = 0.0
            for j in range(tn):
                acc += exp_(vt[j] - m)
            s += acc
    return m, s, jmax, False


@njit(cache=True, nogil=True, fastmath=_FM)
def _heap(xr, T, K, bufv, bufi, vt):
    """Pass 1 of the small-``K`` path: the ``K`` largest ``v`` in decreasing order (ties
    by increasing index) in ``bufv``/``bufi``, and ``neq``, the number of entries equal
    to the ``K``-th value that are not in the buffer (they all come after the buffer's
    own entries of that value).  Returns ``(neq, nan)``.  Requires ``K < n``."""
    n = xr.shape[0]
    cnt = 0
    neq = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        tmax = -np.inf
        tnan = False
        for j in range(tn):
            v = np.float64(xr[t0 + j]) / T
            vt[j] = v
            tmax = fmax(tmax, v)
            tnan |= v != v
        if tnan:
            return 0, True
        if cnt == K and tmax < bufv[K - 1]:
            continue  # nothing in this tile can enter or tie
        for j in range(tn):
            key = vt[j]
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
    return neq, False


# --------------------------------------------------------------------------- races


@njit(cache=True, nogil=True)
def _race_init(S, bases, best, bestj, jmax):
    """Start every sample's race at the exact key of the argmax (``d = 0``)."""
    for s in range(S):
        best[s] = _key(0.0, _unif(bases[s], jmax))
        bestj[s] = jmax


@njit(cache=True, nogil=True, fastmath=_FM)
def _race_row(xr, T, m, theta, logq, tie, S, bases, best, bestj, need_z, dt, bt):
    """The race over a whole row in tiles (the "row race" and tie-mode paths).

    Kept: ``v >= theta`` and ``v - m >= logq`` (tie mode: ``v == m``, weight 1).
    Per tile: ``d`` (``-inf`` where not kept) and its maximum; per sample, unless
    ``dmax + _BOUND_MAX`` cannot reach the best key, the vectorised bounds, then the
    exact keys where a bound beats the best.  Returns ``(Z, count)``: the kept mass
    ``sum exp(d)`` (when ``need_z``) and the kept count (tie mode).
    """
    n = xr.shape[0]
    z = 0.0
    cnt = 0
    for t0 in range(0, n, _TILE):
        tn = min(_TILE, n - t0)
        dmax = -np.inf
        if tie:
            for j in range(tn):
                v = np.float64(xr[t0 + j]) / T
                hit = v == m
                dt[j] = 0.0 if hit else -np.inf
                cnt += hit
            for j in range(tn):
                dmax = fmax(dmax, dt[j])
        else:
            for j in range(tn):
                v = np.float64(xr[t0 + j]) / T
                d = v - m
                dt[j] = d if (v >= theta and d >= logq) else -np.inf
            for j in range(tn):
                dmax = fmax(dmax, dt[j])
        if dmax == -np.inf:
            continue
        if need_z and not tie:
            acc = 0.0
            for j in range(tn):
                acc += exp_(dt[j])
            z += acc
        for s in range(S):
            b = best[s]
            if dmax + _BOUND_MAX <= b:
                continue
            base = bases[s]
            bm = -np.inf
            for j in range(tn):
                bd = _bound(dt[j], _unif(base, t0 + j))
                bt[j] = bd
                bm = fmax(bm, bd)
            if bm <= b - _SLACK:
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


@njit(cache=True, nogil=True)
def _top_p_threshold(cv, cw, C, target):
    """The smallest ``tp`` such that ``sum_{cv >= tp} cw >= target`` over the ``C``
    candidates (the top-p crossing; all entries equal to ``tp`` are kept with it).

    Histogram of the masses over ``_NB`` equal bins of ``v`` in ``[lo, hi]``; the bin
    where the cumulative mass (from the top) reaches ``target`` is refined the same
    way while it holds more than ``_SMALL`` entries (at most ``_LEVELS`` times), then
    sorted.  Bins are intervals of ``v`` (``int((hi - v) * scale)`` is monotone), so a
    bin's entries are exactly those within its ``[min, max]``.
    """
    cur = np.arange(C)
    hi = -np.inf
    lo = np.inf
    for c in range(C):
        hi = max(hi, cv[c])
        lo = min(lo, cv[c])
    above = 0.0
    hw = np.empty(_NB)
    hc = np.empty(_NB, dtype=np.int64)
    hmin = np.empty(_NB)
    hmax = np.empty(_NB)
    level = 0
    while cur.shape[0] > _SMALL and hi > lo and level < _LEVELS:
        scale = _NB / (hi - lo)
        if not math.isfinite(scale):
            break
        hw[:] = 0.0
        hc[:] = 0
        hmin[:] = np.inf
        hmax[:] = -np.inf
        for q in range(cur.shape[0]):
            c = cur[q]
            b = min(int((hi - cv[c]) * scale), _NB - 1)
            hw[b] += cw[c]
            hc[b] += 1
            hmin[b] = min(hmin[b], cv[c])
            hmax[b] = max(hmax[b], cv[c])
        cum = above
        bstar = -1
        last = -1
        for b in range(_NB):
            if hc[b] == 0:
                continue
            if cum + hw[b] >= target:
                bstar = b
                break
            cum += hw[b]
            last = b
        if bstar < 0:  # rounding: the target is not reached; the last bin crosses
            bstar = last
            cum -= hw[last]
        above = cum
        nxt = np.empty(hc[bstar], dtype=np.int64)
        k = 0
        for q in range(cur.shape[0]):
            c = cur[q]
            if min(int((hi - cv[c]) * scale), _NB - 1) == bstar:
                nxt[k] = c
                k += 1
        cur = nxt
        hi = hmax[bstar]
        lo = hmin[bstar]
        level += 1
    if not hi > lo:
        return lo  # the crossing group is one value: all of it is kept
    vals = np.empty(cur.shape[0])
    for q in range(cur.shape[0]):
        vals[q] = -cv[cur[q]]
    order = np.argsort(vals)
    cum = above
    for q in range(order.shape[0]):
        c = cur[order[q]]
        cum += cw[c]
        if cum >= target:
            return cv[c]
    return lo


@njit(cache=True, nogil=True, fastmath=_FM)
def _gather(xr, T, lo, ci, cv):
    """Branch-free compaction of the candidates ``v >= lo`` of a row into ``ci``/``cv``."""
    c = 0
    for j in range(xr.shape[0]):
        v = np.float64(xr[j]) / T
        ci[c] = j
        cv[c] = v
        c += v >= lo
    return c


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


@over_rows(cost=4)
@njit(cache=True, nogil=True)
def sample_rows(x, T, greedy, K, P, logq, S, seed, row0, need_z, tokens, info, r0, r1):
    """Sample ``S`` tokens from each row of ``x[R, n]`` (module docstring).

    ``K`` = 0 means no top-k (``0 < K < n`` otherwise), ``P`` = 1 no top-p, ``logq`` =
    -inf no min-p; ``greedy`` uses ``T = 1`` and keeps the maxima (tie mode).  Writes
    ``tokens[i, :S]`` (int64) and ``info[i] = (status, theta, m, log Z)``; ``log Z``
    is computed when ``need_z`` (log-probs, ``sampling_probs``).  ``row0 + i`` is the
    row index the draws use.
    """
    n = x.shape[1]
    nb = max(S, 1)
    vt = np.empty(_TILE)
    dt = np.empty(_TILE)
    bt = np.empty(_TILE)
    bases = np.empty(nb, dtype=np.uint64)
    best = np.empty(nb)
    bestj = np.empty(nb, dtype=np.int64)
    small_k = 0 < K <= _KMAX and not greedy
    large_k = K > _KMAX and not greedy
    scratch = (P < 1.0 or large_k) and not small_k and not greedy
    kb = K if small_k else 1
    bufv = np.empty(kb)
    bufi = np.empty(kb, dtype=np.int64)
    ns = n if scratch else 1
    cv = np.empty(ns)
    ci = np.empty(ns, dtype=np.int64)
    cw = np.empty(ns)
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
        # ---- pass 1: maximum (and the buffer / normaliser / stored values) ----
        neq = 0
        if small_k:
            neq, nan = _heap(xr, T, K, bufv, bufi, vt)
            m = bufv[0] if not nan else np.nan
            jmax = bufi[0]
            s_row = 0.0
        else:
            store = cv if large_k else vt[:0]  # the large-K path keeps v for the selection
            m, s_row, jmax, nan = _stats(xr, T, scratch and not large_k, vt, store)
        if nan:
            info[i, 0] = 2.0
            continue
        if m == -np.inf:
            info[i, 0] = 1.0
            continue
        info[i, 2] = m
        if greedy or m == np.inf:
            # tie mode: the maxima, uniformly (the +inf rule; temperature -> 0)
            _race_init(S, bases, best, bestj, jmax)
            _, cnt = _race_row(xr, T, m, m, -np.inf, True, S, bases, best, bestj, False, dt, bt)
            for s in range(S):
                tok[s] = bestj[s]
            info[i, 0] = 3.0
            info[i, 1] = m
            info[i, 3] = math.log(cnt)
            continue
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
                    if np.float64(xr[j]) / T == tk:
                        seen += 1
                        if seen > inbuf:
                            _race_one(j, d, S, bases, best, bestj)
        elif scratch:
            # ---- threshold search over the candidates ----
            if large_k:
                tk = np.partition(cv, n - K)[n - K]
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
                    target = P * zk
            else:
                lo = m + math.log((1.0 - P) * s_row / n) - 1e-6
                C = _gather(xr, T, lo, ci, cv)
                target = P * s_row
            if P < 1.0:
                _weights(cv, C, m, cw)
                theta = max(theta, _top_p_threshold(cv, cw, C, target))
                for c in range(C):
                    v = cv[c]
                    d = v - m
                    if v >= theta and d >= logq:
                        z += cw[c]
                        _race_one(ci[c], d, S, bases, best, bestj)
            else:
                z, _ = _race_row(
                    xr, T, m, theta, logq, False, S, bases, best, bestj, need_z, dt, bt
                )
        else:
            # ---- plain / min-p: the race over the row ----
            z, _ = _race_row(xr, T, m, theta, logq, False, S, bases, best, bestj, need_z, dt, bt)
        for s in range(S):
            tok[s] = bestj[s]
        info[i, 0] = 0.0
        info[i, 1] = theta
        info[i, 3] = math.log(z) if need_z else np.nan
