"""softmaxkit.sample's chunked path: top-p over a single long row (or fewer rows than
two per thread) with the row's blocks shared out over the threads
(``softmaxkit._kernels.sampling.chunked``).  The draws depend on (seed, row, j,
sample) only, so the chunked path must give exactly the serial kernel's tokens,
log-probs and filtered probabilities (one thread) for every setting."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit._kernels.sampling import chunked, entry

pytestmark = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="the chunked path needs two threads"
)

N = chunked.CHUNK_MIN + 12345  # 5 blocks, the last one partial

SETTINGS = [
    {"top_p": 0.9},
    {"top_p": 0.5},
    {"top_p": 0.99},
    {"top_p": 0.2, "temperature": 0.6},
    {"top_p": 0.9, "temperature": 1.7},
    {"top_p": 0.95, "min_p": 0.05},
    {"top_p": 0.8, "min_p": 0.3, "temperature": 0.8},
]


def _rows(kind: str, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.5, 3.0, 8.0])
    x = rng.standard_normal((rows, N)) * scale
    if kind == "ties":
        x = np.round(x)  # exact ties at the top-p crossing
    elif kind == "-inf":
        x[:, rng.integers(0, N, size=N // 2)] = -np.inf
    if kind != "float64":
        x = x.astype(np.float32)
    return x


def _serial(x, **kw):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        return _call(x, **kw)
    finally:
        numba.set_num_threads(before)


def _call(x, **kw):
    ids, lp = sk.sample(x, return_logprobs=True, **kw)
    return ids, lp


@pytest.fixture
def calls(monkeypatch):
    """Force the chunked path where eligible and count the rows it takes (so that a
    test cannot pass vacuously)."""
    monkeypatch.setattr(chunked.CHOOSER, "mode", "chunked")
    count = [0]
    real = entry.sample_row_chunked

    def spy(*args):
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(entry, "sample_row_chunked", spy)
    return count


@pytest.mark.parametrize("kind", ["normal", "ties", "-inf", "float64"])
def test_chunked_equals_serial(kind, calls):
    """Tokens and log-probs bit-identical to one thread's serial kernel: 6 seeds x 7
    settings (top-p 0.2..0.99, temperature, min-p) x 1-3 rows x 1-4 samples per kind."""
    nt = numba.get_num_threads()
    assert nt >= 2
    for trial in range(6):
        rows = 1 + trial % 3
        x = _rows(kind, rows, 1000 * trial + len(kind))
        for q, kw in enumerate(SETTINGS):
            seed = 7 * trial + q
            S = 1 + (trial + q) % 4
            before = calls[0]
            ids, lp = _call(x, seed=seed, num_samples=S, **kw)
            assert calls[0] - before == rows, "the chunked path was not taken"
            sids, slp = _serial(x, seed=seed, num_samples=S, **kw)
            assert calls[0] - before == rows, "one thread took the chunked path"
            np.testing.assert_array_equal(ids, sids, err_msg=f"{kind} {trial} {kw}")
            np.testing.assert_array_equal(lp, slp, err_msg=f"{kind} {trial} {kw}")


def test_chunked_equals_serial_probs_and_rows(calls):
    """``sampling_probs`` (threshold and log-normaliser) bit-identical; a row sampled
    in a batch of three (chunked), alone with its row_offset (chunked) and in a batch
    of 64 (row-parallel serial kernel) gives the same tokens."""
    x = _rows("normal", 3, 5)
    for kw in SETTINGS[:3]:
        np.testing.assert_array_equal(sk.sampling_probs(x, **kw), _serial_probs(x, **kw))
    whole = sk.sample(x, seed=3, num_samples=2, top_p=0.9)
    for i in range(3):
        np.testing.assert_array_equal(
            sk.sample(x[i], seed=3, num_samples=2, top_p=0.9, row_offset=i), whole[i]
        )
    big = np.concatenate([x, np.repeat(x[:1], 61, axis=0)])
    before = calls[0]
    np.testing.assert_array_equal(sk.sample(big, seed=3, num_samples=2, top_p=0.9)[:3], whole)
    assert calls[0] == before  # 64 rows: the row-parallel kernel


def _serial_probs(x, **kw):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        return sk.sampling_probs(x, **kw)
    finally:
        numba.set_num_threads(before)


def test_chunked_special_rows(calls):
    """A row with +inf (tie mode), one with NaN, one all -inf: the chunked driver hands
    them to the serial kernel (same tokens; the named error)."""
    x = _rows("normal", 2, 9)
    x[1, [100, 70000]] = np.inf
    ids = sk.sample(x, seed=1, num_samples=4, top_p=0.9)
    np.testing.assert_array_equal(ids, _serial(x, seed=1, num_samples=4, top_p=0.9)[0])
    assert set(ids[1]) <= {100, 70000}
    x[1, 5] = np.nan
    with pytest.raises(ValueError, match="row 1 of logits contains NaN"):
        sk.sample(x, seed=1, top_p=0.9)
    x[1] = -np.inf
    with pytest.raises(ValueError, match="row 1 of logits is all -inf"):
        sk.sample(x, seed=1, top_p=0.9)


def test_chunked_equals_serial_at_the_knife_edge(calls):
    """Rows whose top group's mass equals ``top_p * s`` to the last bit (``top_p`` made
    from the kernel's own block sums): one ulp more in ``s`` moves the threshold below
    the group, so any other summation order of ``s`` on either path (a row summed whole
    on one thread, in per-thread pieces on two) changes the kept set.  8 rows x 4
    samples: the group alone is kept, on both paths, with identical draws."""
    from softmaxkit._kernels.sampling.scan import _LEV, _sum_blocks

    rng = np.random.default_rng(11)
    for r in range(8):
        x = (rng.standard_normal(N) * rng.choice([0.7, 1.0, 1.4])).astype(np.float32)
        x = np.minimum(x, np.float32(2.5))
        top = rng.choice(N, size=int(rng.integers(3000, 6000)), replace=False)
        x[top] = 3.0
        s = _sum_blocks(x, 1.0, True, 3.0, np.empty(len(_LEV)))
        k = float(top.size)
        p = k / s
        while p * s > k:
            p = np.nextafter(p, 0.0)
        while np.nextafter(p, 1.0) * s <= k:
            p = np.nextafter(p, 1.0)
        x2 = x[None]
        probs = sk.sampling_probs(x2, top_p=float(p))
        assert (probs > 0).sum() == top.size  # the group alone is kept
        np.testing.assert_array_equal(probs, _serial_probs(x2, top_p=float(p)))
        ids, lp = _call(x2, seed=r, num_samples=4, top_p=float(p))
        np.testing.assert_array_equal(np.isin(ids, top), True)
        sids, slp = _serial(x2, seed=r, num_samples=4, top_p=float(p))
        np.testing.assert_array_equal(ids, sids)
        np.testing.assert_array_equal(lp, slp)
    assert calls[0] >= 16


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_band_refined_bound_matches_reference(top_p):
    """Long rows whose top-p threshold lies deeper than a level's bracket allows, so
    the band counts refine the lower bound (checked): the kept set and the tokens equal
    the float64 twin's (which sorts the row): a bound above the threshold would drop
    kept entries.  3 rows x 3 settings x 2 temperatures (scales 2.5-3.5, -inf entries, ties)."""
    from softmaxkit import reference
    from softmaxkit._kernels.sampling import scan
    from softmaxkit._kernels.sampling import top_p as tp

    rng = np.random.default_rng(int(top_p * 100))
    for r, scale in enumerate((2.5, 3.0, 3.5)):
        x = (rng.standard_normal(N) * scale).astype(np.float32)
        if r == 1:
            x = np.round(x * 2) / 2  # ties at the crossing
        if r == 2:
            x[rng.integers(0, N, size=N // 4)] = -np.inf
        m = float(x.max())
        lev = np.empty(len(scan._LEV))
        s = scan._sum_blocks(x, 1.0, True, m, lev)
        _, dlo, dup, _ = tp._bracket(N, m, s, lev, top_p)
        assert dup - dlo > tp._BAND_MIN  # the bands are used
        for T in (1.0, 0.9):
            kw = {"top_p": top_p, "temperature": T}
            p, rp = sk.sampling_probs(x, **kw), reference.sampling_probs(x, **kw)
            np.testing.assert_array_equal(p > 0, rp > 0)
            ids = sk.sample(x, seed=r, num_samples=3, **kw)
            np.testing.assert_array_equal(ids, reference.sample(x, seed=r, num_samples=3, **kw))


def test_band_values_bracket_the_depths():
    """The band counts compare in the input dtype: ``X[0]`` must be at or below every
    entry of the level (``x / T - m >= t[0]``), ``X[k >= 1]`` at or above the least
    entry at depth ``t[k]`` (float64, as the level sums compute ``d``); 600 random
    (dtype, m, T, depths) including T = 1 and depths that absorb into ``m`` (a row
    with maximum 3 and depth -3: the old ulp-stepping search never ended there)."""
    from softmaxkit._kernels.sampling import top_p as tp

    rng = np.random.default_rng(3)
    for q in range(600):
        dt = np.float32 if q % 2 else np.float64
        T = 1.0 if q % 3 == 0 else float(rng.uniform(0.05, 3.0))
        m = float(rng.standard_normal() * 10 ** rng.integers(0, 4))
        dup = -float(rng.uniform(0.0, 10.0))
        dlo = dup - float(rng.uniform(1.0, 20.0))
        if q % 5 == 0:
            m, dup, dlo = 3.0, -1.5, -3.0
        xr = np.zeros(1, dtype=dt)
        t, X = tp._band_depths(xr, T, T == 1.0, m, dlo, dup)
        assert not _reaches(np.nextafter(X[0], dt(-np.inf)), T, m, t[0]), (q, X[0])
        for k in range(1, len(t)):
            assert _reaches(X[k], T, m, t[k]), (q, k, X[k])


def _reaches(x, T, m, t):
    return (np.float64(x) if T == 1.0 else np.float64(x) / T) - m >= t


def test_chooser_tries_both_then_the_faster():
    """Auto mode: the first two eligible calls try chunked then serial; then the one
    with the lower time per entry, the other re-tried every EXPLORE x (slower / faster)
    calls; a faster time replaces a path's estimate, a slower one is averaged in."""
    c = chunked.Chooser()
    assert [c.pick(), c.pick()] == [True, False]
    c.record(True, 2e-3, 1000)
    c.record(False, 1e-3, 1000)
    picks = [c.pick() for _ in range(6 * c.EXPLORE)]
    assert sum(picks) == 3  # serial is 2x faster: chunked re-tried every 32 calls
    c.record(True, 1e-4, 1000)  # a faster time counts at once
    assert c.cost[1] < c.cost[0] and c.pick()
    c.record(True, 2e-3, 1000)  # a slower one is averaged in
    assert c.cost[1] == pytest.approx(0.75e-7 + 0.25 * 2e-6)
    c.mode = "serial"
    assert not c.pick()
