"""Linear cross-entropy chunk kernels: the logits of a chunk of classes ``[N, c]`` come
from a BLAS matmul; ``lce_state_update`` folds the chunk into each row's running
(max, sum, sum of differences, count, target logit) and ``lce_grad_chunk`` writes
the chunk's gradient of the logits from the final ``lse``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._parallel import over_rows
from .common import _FM, SD_SCALE

# ---------------------------------------------------------------------------
# Linear cross-entropy: chunk kernels (logits chunk [N, c] from a BLAS matmul).
# ---------------------------------------------------------------------------


# no fastmath: reassoc would factor SD_SCALE out of the sum (overflowing it again);
# the chunk's matmul dominates this kernel's time
@over_rows(cost=8)
@njit(cache=True, nogil=True)
def lce_state_update(zc, mask, has_mask, invT, m, s, sd, cnt, tloc, vt, r0, r1):
    """Fold a logits chunk into the per-row online state (m, s) and sum(v - m).

    ``sd`` holds ``sum (v - m)`` relative to the current ``m`` (shifted when m
    grows: ``sd += cnt * (m_old - m_new)``).  Masked entries are skipped;
    ``cnt`` counts included entries.  Non-finite values follow the (m, s) merge
    conventions of ``softmaxkit._core.state`` (NaN wins; +inf rows get m = +inf).
    ``vt[i]`` gets the target's ``v`` where ``tloc[i] >= 0`` (its column in this
    chunk): the same product as the row max's, so ``v_t - m`` is 0 at the argmax.
    """
    c = zc.shape[1]
    for i in range(r0, r1):
        if tloc[i] >= 0:
            vt[i] = zc[i, tloc[i]] * invT
        mi = m[i]
        cmax = -np.inf
        k = 0
        nan = False
        for j in range(c):
            if has_mask and not mask[i, j]:
                continue
            v = zc[i, j] * invT
            k += 1
            if v != v:
                nan = True
            cmax = max(cmax, v)
        if nan or mi != mi:
            m[i] = np.nan
            s[i] = np.nan
            sd[i] = np.nan
            continue
        if k == 0:
            continue
        mn = max(mi, cmax)
        if mn == -np.inf:
            cnt[i] += k
            continue
        if mn == np.inf:
            # +inf rows: s counts the +inf entries (exact merge convention)
            add = 0.0
            for j in range(c):
                if has_mask and not mask[i, j]:
                    continue
                if zc[i, j] * invT == np.inf:
                    add += 1.0
            s[i] = (s[i] if mi == np.inf else 0.0) + add
            sd[i] = -np.inf
            m[i] = np.inf
            cnt[i] += k
            continue
        scale = 1.0 if mi == mn else math.exp(mi - mn)
        acc = 0.0
        accd = 0.0
        for j in range(c):
            if has_mask and not mask[i, j]:
                continue
            d = zc[i, j] * invT - mn
            acc += math.exp(d)
            accd += d * SD_SCALE
        if cnt[i] > 0 and mi != mn:
            sd[i] += cnt[i] * ((mi - mn) * SD_SCALE)
        s[i] = s[i] * scale + acc
        sd[i] += accd
        cnt[i] += k
        m[i] = mn


@over_rows(cost=8)
@njit(cache=True, nogil=True, fastmath=_FM)
def lce_grad_chunk(zc, mask, has_mask, tloc, invT, eps, lse, cnt, a, b, z, active, out, r0, r1):
    """Turn a logits chunk into its gradient in place: ``out = dloss/dlogits``.

    ``tloc[i]`` is the target's column inside this chunk or -1; ``lse`` the final
    per-row logsumexp.  Same formula as ``ce_index_rows``.
    """
    c = zc.shape[1]
    for i in range(r0, r1):
        if not active[i]:
            for j in range(c):
                out[i, j] = 0.0
            continue
        L = lse[i]
        ai = a[i]
        cz = ai + 2.0 * b[i] * z * L
        off = ai * eps / cnt[i] if cnt[i] > 0 else 0.0
        for j in range(c):
            if has_mask and not mask[i, j]:
                out[i, j] = 0.0
                continue
            v = zc[i, j] * invT
            if L == np.inf:
                p = 0.0 if v != np.inf else np.nan  # caller handles +inf rows exactly
            else:
                p = math.exp(v - L)
            out[i, j] = invT * (cz * p - off)
        t = tloc[i]
        if t >= 0:
            out[i, t] -= invT * ai * (1.0 - eps)
