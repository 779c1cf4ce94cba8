"""The sorted top-k buffer shared by the streaming top-k (``online.py``) and the
per-token vocabulary outputs (``vocab.py``) (Numba).  Callers test ``cnt < k or
gt(key, bufv[k - 1])`` themselves and call ``insert`` only on an insertion: the call
is not free (a call per scanned entry made topk_softmax 3.5x slower).  Sampling's
``_heap`` (``sampling/scan.py``) keeps its own copy of the loop: through ``insert``
top-k sampling measured 20% slower (sample top_k=50, [64, 128000]: 25.4 vs 21.2 ms).

The buffer ``bufv[:cnt]`` holds the ``cnt <= k`` largest keys seen so far in
descending ranking order (``gt``: NaN above everything, as ``torch.topk``), with
their indices in ``bufi``; among equal keys the first seen stays first (an insertion
moves past strictly smaller keys only).  Insertion is an O(k) shift, rare once the
buffer is full: callers skip whole tiles whose maximum is below ``bufv[k - 1]``.
"""

from __future__ import annotations

from numba import njit

__all__ = ["gt", "insert"]


@njit(cache=True, nogil=True, inline="always")
def gt(a, b):
    """Ranking order of top-k keys: NaN above everything (as ``torch.topk`` /
    ``torch.argmax``)."""
    if a != a:
        return b == b
    return a > b


@njit(cache=True, nogil=True, inline="always")
def insert(bufv, bufi, cnt, k, key, idx):
    """Insert ``(key, idx)`` into the buffer of ``cnt`` entries (at most ``k``) when it
    ranks among the ``k`` best; return the new count."""
    if cnt < k or gt(key, bufv[k - 1]):
        pos = cnt if cnt < k else k - 1
        while pos > 0 and gt(key, bufv[pos - 1]):
            bufv[pos] = bufv[pos - 1]
            bufi[pos] = bufi[pos - 1]
            pos -= 1
        bufv[pos] = key
        bufi[pos] = idx
        if cnt < k:
            cnt += 1
    return cnt
