"""softmaxkit.sample's certified top-p path (``_kernels/sampling/fast.py``): a float32
``exp`` per entry and a proof that the threshold is the serial path's, else the serial
path.  Either way the tokens must be exactly those of the serial path
(``entry.FAST_TOP_P = False``) for the same seed."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit._kernels.sampling import chunked, entry, fast, scan

N = fast.FAST_MIN + 4321  # the shortest rows the path takes, plus a partial group


@pytest.fixture(autouse=True)
def _serial(monkeypatch):
    # the chunked path (one long row on several threads) never takes the fast path
    monkeypatch.setattr(chunked.CHOOSER, "mode", "serial")


def _both(x, **kw):
    """(fast path, serial path) results of ``sample``; restores the switch."""
    try:
        entry.FAST_TOP_P = True
        a = sk.sample(x, **kw)
        entry.FAST_TOP_P = False
        b = sk.sample(x, **kw)
    finally:
        entry.FAST_TOP_P = True
    return a, b


def _thetas(x, top_p, fast_on, S=1, seed=3):
    """``info`` of the kernel (status, theta, m, log Z) with the switch set."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    tokens = np.zeros((x2.shape[0], S), dtype=np.int64)
    info = np.full((x2.shape[0], 4), np.nan)
    try:
        entry.FAST_TOP_P = fast_on
        entry.sample_rows(
            x2, 1.0, False, 0, top_p, -np.inf, S, np.uint64(seed), 0, False, tokens, info
        )
    finally:
        entry.FAST_TOP_P = True
    return tokens, info


def _rows(kind: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = [0.5, 3.0, 8.0][seed % 3]
    x = rng.standard_normal((rows, N)) * scale
    if kind == "ties":
        x = np.round(x)  # exact ties at the crossing
    elif kind == "-inf":
        for i in range(rows):
            x[i, rng.integers(0, N, size=N // 2)] = -np.inf
    elif kind == "peaked":
        x[:, rng.integers(0, N, size=3)] += 25.0  # a few tokens hold most of the mass
    elif kind == "flat":
        x *= 1e-3  # every entry near the maximum
    return x.astype(np.float32)


TOP_P = [1e-6, 0.05, 0.5, 0.9, 0.95, 0.999, 1.0 - 1e-9]


@pytest.mark.parametrize("kind", ["normal", "ties", "-inf", "peaked", "flat"])
def test_fast_path_gives_the_serial_tokens(kind):
    """Tokens bit-identical to the serial path: 5 kinds x 3 seeds x 7 top-p values
    (1e-6 .. 1 - 1e-9) x 2 rows x 3 samples, and the same threshold in ``info``."""
    for seed in range(3):
        x = _rows(kind, 2, seed)
        for p in TOP_P:
            a, b = _both(x, top_p=p, seed=seed, num_samples=3)
            np.testing.assert_array_equal(a, b, err_msg=f"{kind} seed={seed} top_p={p}")
            ta, ia = _thetas(x, p, True)
            tb, ib = _thetas(x, p, False)
            np.testing.assert_array_equal(ta, tb)
            np.testing.assert_array_equal(ia[:, :3], ib[:, :3])


def test_fast_path_tokens_are_in_the_sampling_probs_support():
    """Every drawn token has positive filtered probability, and the set the fast path
    keeps (``x >= theta``) is the support of ``sampling_probs`` (serial path, Z): 3
    rows x 4 top-p values x 8 samples."""
    x = _rows("normal", 3, 1)
    for p in (0.3, 0.9, 0.99, 0.999):
        probs = sk.sampling_probs(x, top_p=p)
        ids = sk.sample(x, top_p=p, seed=7, num_samples=8)
        assert (np.take_along_axis(probs, ids, axis=1) > 0).all()
        _, info = _thetas(x, p, True)
        np.testing.assert_array_equal(x >= info[:, 1:2], probs > 0)


def test_fast_path_with_min_p_and_other_filters():
    """top_p with min_p (fast path: min-p only trims the race), and the combinations
    it does not take (top_k + top_p + min_p, temperatures 1e-3 and 1e3, float64
    rows, log-probs) give the serial tokens: 8 settings x 2 rows x 4 samples."""
    x = _rows("normal", 2, 2)
    settings = [
        {"top_p": 0.9, "min_p": 0.05},
        {"top_p": 0.95, "min_p": 0.5},
        {"top_p": 0.9, "min_p": 1.0},
        {"top_k": 50, "top_p": 0.9, "min_p": 0.1},
        {"top_k": 5000, "top_p": 0.8, "min_p": 0.01},
        {"top_p": 0.9, "temperature": 1e-3},
        {"top_p": 0.9, "temperature": 1e3},
        {"top_p": 0.9, "return_logprobs": True},
    ]
    for kw in settings:
        a, b = _both(x, seed=11, num_samples=4, **kw)
        if kw.get("return_logprobs"):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        else:
            np.testing.assert_array_equal(a, b, err_msg=str(kw))
    a, b = _both(x.astype(np.float64), seed=11, num_samples=4, top_p=0.9)
    np.testing.assert_array_equal(a, b)


def _knife_edge_row():
    """A row and a top_p whose ``P s`` equals (to rounding) the mass of the entries
    above a value: the certificate cannot hold there."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(N) * 3).astype(np.float32)
    v = np.sort(x.astype(np.float64))[::-1]
    w = np.exp(v - v[0])
    cum = np.cumsum(w)
    k = int(np.searchsorted(cum, 0.9 * cum[-1]))
    while v[k + 1] == v[k]:
        k += 1
    return x, float(cum[k] / cum[-1])


def test_knife_edge_falls_back_to_the_serial_path():
    """At a knife edge (``P s`` = a partial mass) the certificate fails (``ok``
    False) and ``sample`` gives the serial tokens; a hair away it holds again."""
    x, p = _knife_edge_row()
    n = x.size
    ci = np.empty(n, dtype=np.int64)
    cv = np.empty(n)
    cw = np.empty(n)
    wb = np.empty(n, dtype=np.float32)
    m = float(scan._max_nan(x)[0])
    ok, _, _ = fast._top_p_spec(x, m, p, ci, cv, cw, wb)
    assert not ok
    for q in (p, math.nextafter(p, 0.0), math.nextafter(p, 1.0)):
        a, b = _both(x[None], top_p=q, seed=2, num_samples=4)
        np.testing.assert_array_equal(a, b)
    ok, _, _ = fast._top_p_spec(x, m, p - 1e-6, ci, cv, cw, wb)
    assert ok


def test_fast_path_buffer_is_released():
    """``release_scratch`` drops the float32 buffer of the fast path too."""
    sk.sample(_rows("normal", 1, 0), top_p=0.9, seed=0)
    entry.release_scratch()
    assert getattr(entry._TLS, "wb", None) is None
    assert numba.get_num_threads() >= 1
