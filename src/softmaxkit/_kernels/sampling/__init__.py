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
  the depths ``_LEV``, summed per block of ``_BLOCK`` entries and then in block
  order; a bracket of the threshold's depth: at least ``log((1 - P) s / n)`` (the
  tokens below hold at most ``(1 - P) s``) or the first depth whose mass reaches
  ``P s``, below the deepest depth short of it; a bracket wider than ``_BAND_MIN``
  is narrowed by one vectorised read counting the entries above ``_NB + 1`` depths
  inside it (compared in the input dtype against values a margin to the safe side
  of each depth; the mass above a depth is at least the level's exact mass plus
  count x band floor); one read gathers the candidates ``x >= lo T``
  (branch-free compaction, compared in the input dtype with a 1e-6 margin: a
  superset); the crossing of the cumulative mass is found among the candidates by
  bisection on the value (vectorised masked sums, the band compacted as it shrinks,
  the last ``_SMALL`` sorted); ``Z`` is a masked sum over the candidate run; the race
  runs over the kept candidates in tiles (vectorised bounds).  Four or five reads of
  the row, no sort of the row.  Extra memory: ``24 n`` bytes per thread (candidate
  index, value, weight; kept by the thread for the next call, see ``_scratch``) plus
  the band copies (at most ``2 n / 8`` values).  A single long row, or fewer rows
  than two per thread, shares its blocks out over the threads instead (``chunked``):
  the same floats in the same order, hence the same tokens.

Accumulators are float64.  The per-row output ``info[i]`` is
``(status, theta, m, log Z)``: status 0 sampled, 1 nothing to sample (all
``-inf``), 2 NaN present, 3 sampled in tie mode (``log Z = log count``);
``Z = sum over the kept set of exp(v - m)``.

Modules: ``keys`` (the hash, uniforms and keys), ``scan`` (pass 1: max, NaN, levels,
the top-k buffer), ``race`` (the race over a row, a candidate or a candidate run),
``top_p`` (the bracket, the band counts and the threshold search), ``fast`` (top-p of
a float32 row at ``T = 1`` with float32 ``exp`` and a certificate that the threshold is
the float64 path's, else that path), ``chunked`` (top-p of one row on several
threads), ``entry`` (``_sample_rows`` and its entry point ``sample_rows``).
"""

from __future__ import annotations

from .entry import release_scratch, sample_rows, sample_serial
from .keys import stream_base, uniform

__all__ = ["release_scratch", "sample_rows", "sample_serial", "stream_base", "uniform"]
