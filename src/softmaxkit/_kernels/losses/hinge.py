"""Multiclass hinge losses per row (Weston-Watkins, Crammer-Singer) and their gradient,
float64 arithmetic for every dtype (``hinge_rows``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._parallel import over_rows
from ..exp import fmax
from ..view import row
from .common import _FMC

# ---------------------------------------------------------------------------
# Multiclass hinge losses (Weston-Watkins, Crammer-Singer), per row.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=_FMC)
def _ww_row(xr, ti, w, mg, p, want_grad, scale, gr):
    # sum_{j != t} max(0, mg - x_t + x_j)^p, times w / C; max keeps NaN (as
    # np.maximum).  Returns (loss, has_nan).  The gradient (when wanted):
    # d_j = p h_j^(p-1) w / C where the violation is > 0, and -sum d at the target.
    C = xr.shape[0]
    xt = np.float64(xr[ti])
    acc = 0.0
    nan = 0
    for j in range(C):
        v = (mg - xt) + xr[j]
        h = 0.0 if v <= 0 else v
        hp = h if p == 1 else h * h
        acc += 0.0 if j == ti else hp
        nan += 1 if xr[j] != xr[j] else 0
    if want_grad:
        f = w / C
        sd = 0.0
        for j in range(C):
            v = (mg - xt) + xr[j]
            d = (1.0 if p == 1 else 2.0 * v) * f
            d = d if (v > 0 and j != ti) else 0.0
            sd += d
            gr[j] = d * scale
        gr[ti] = -sd * scale
    return w * acc / C, nan


@njit(cache=True, nogil=True, fastmath=_FMC)
def _cs_row(xr, ti, w, mg, p, want_grad, scale, gr):
    # w max(0, mg + max_{j != t} x_j - x_t)^p; the first maximising j gets the
    # gradient p h^(p-1) w, the target minus it.  Returns (loss, has_nan).
    C = xr.shape[0]
    xt = np.float64(xr[ti])
    best = -np.inf
    nan = 0
    for j in range(C):  # vectorised: max over j != t (maxnum skips NaN), NaN count
        v = np.float64(xr[j])
        best = fmax(best, -np.inf if j == ti else v)
        nan += 1 if v != v else 0
    js = 0  # the first maximising j (np.argmax's choice; only used when viol > 0)
    if best > -np.inf:
        for j in range(C):
            if j != ti and xr[j] == best:
                js = j
                break
    viol = (mg + best) - xt
    h = 0.0 if viol <= 0 else viol
    loss = w * (h if p == 1 else h * h)
    if want_grad:
        for j in range(C):
            gr[j] = 0.0
        if C > 1 and viol > 0:
            dv = (1.0 if p == 1 else 2.0 * h) * w
            gr[js] += dv * scale
            gr[ti] -= dv * scale
    return loss, nan


@over_rows(cost=2)
@njit(cache=True, nogil=True)
def hinge_rows(x, t, wt, mg, p, crammer_singer, want_grad, scale, per, grad, r0, r1):
    """Multiclass hinge loss per row into ``per`` (float64) and, when wanted, the
    gradient times ``scale`` into ``grad`` (rows C-contiguous, classes last).  A row
    holding a NaN gets NaN loss and gradient.  Float64 arithmetic for every dtype.
    """
    for i in range(r0, r1):
        xr = row(x, i)
        gr = row(grad, i)
        if crammer_singer:
            loss, nan = _cs_row(xr, t[i], wt[i], mg, p, want_grad, scale, gr)
        else:
            loss, nan = _ww_row(xr, t[i], wt[i], mg, p, want_grad, scale, gr)
        per[i] = np.nan if nan else loss
        if nan and want_grad:
            _fill_nan(gr)


@njit(cache=True, nogil=True)
def _fill_nan(gr):
    for j in range(gr.shape[0]):
        gr[j] = np.nan
