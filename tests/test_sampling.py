"""softmaxkit.sample / sampling_probs: the filtered support (against transformers'
processors and the float64 reference), the distribution (chi-square over 10**6
seeded draws), reproducibility (batch vs rows vs slices vs thread counts), the edge
cases and the errors, the CLI command and the bench family."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference
from softmaxkit.cli import core as cli

SETTINGS = [
    {},
    {"temperature": 0.7},
    {"top_k": 1},
    {"top_k": 7},
    {"top_k": 300},  # the selection path (> 256)
    {"top_p": 0.9},
    {"top_p": 0.3},
    {"min_p": 0.1},
    {"min_p": 1.0},
    {"top_k": 300, "top_p": 0.8},
    {"top_k": 10, "top_p": 0.5, "min_p": 0.2},
    {"temperature": 1.7, "top_k": 40, "top_p": 0.95, "min_p": 0.01},
    {"temperature": 0},
    {"top_p": 1.0, "min_p": 0.0},
]


def _batch(kind: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, n = int(rng.integers(1, 4)), int(rng.integers(1, 1500))
    x = rng.standard_normal((rows, n)) * rng.choice([0.1, 1.0, 3.0, 10.0])
    if kind == 1:
        x = np.round(x)  # many exact ties (at the k-th value, at the top-p crossing)
    elif kind == 2:
        x[:, rng.integers(0, n, size=n // 3)] = -np.inf
        x[:, 0] = 1.0
    elif kind == 3:
        x[0, rng.integers(0, n, size=2)] = np.inf
    elif kind == 4:
        x = x.astype(np.float32)
    return x


@pytest.mark.parametrize("kind", range(5), ids=["normal", "ties", "-inf", "+inf", "float32"])
def test_matches_reference(kind):
    """Tokens equal to the float64 twin's (which sorts every row and computes every
    exact key: a wrong pruning bound or threshold search changes tokens), log-probs and
    filtered probabilities to 1e-9: 4 batches x 14 settings x 5 samples per kind."""
    for trial in range(4):
        x = _batch(kind, 100 * kind + trial)
        for kw in SETTINGS:
            ids, lp = sk.sample(x, seed=trial, num_samples=5, return_logprobs=True, **kw)
            rids, rlp = reference.sample(x, seed=trial, num_samples=5, return_logprobs=True, **kw)
            np.testing.assert_array_equal(ids, rids, err_msg=str(kw))
            np.testing.assert_allclose(lp, rlp, rtol=1e-9, atol=1e-12, err_msg=str(kw))
            p, rp = sk.sampling_probs(x, **kw), reference.sampling_probs(x, **kw)
            np.testing.assert_array_equal(p > 0, rp > 0, err_msg=str(kw))
            np.testing.assert_allclose(p, rp, rtol=1e-9, atol=1e-15, err_msg=str(kw))
            np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------- transformers

HF_SETTINGS = [
    {"top_k": 5},
    {"top_k": 50},
    {"top_k": 400},
    {"top_p": 0.9},
    {"top_p": 0.5},
    {"top_p": 0.99},
    {"min_p": 0.05},
    {"min_p": 0.3},
    {"temperature": 0.6, "top_k": 50, "top_p": 0.9},
    {"temperature": 1.3, "top_p": 0.8, "min_p": 0.02},
    {"top_k": 20, "top_p": 0.7, "min_p": 0.1},
]


def _hf_support(x: np.ndarray, temperature=1.0, top_k=None, top_p=None, min_p=None):
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    procs = []
    if temperature != 1.0:
        procs.append(lp.TemperatureLogitsWarper(float(temperature)))
    if top_k is not None:
        procs.append(lp.TopKLogitsWarper(top_k))
    if top_p is not None:
        procs.append(lp.TopPLogitsWarper(top_p))
    if min_p is not None:
        procs.append(lp.MinPLogitsWarper(min_p))
    scores = torch.from_numpy(x)  # float64: the processors then compute in float64
    ids = torch.zeros((x.shape[0], 1), dtype=torch.long)
    for proc in procs:
        scores = proc(ids, scores)
    return (scores > -math.inf).numpy()


@pytest.mark.parametrize("kw", HF_SETTINGS, ids=str)
def test_support_equals_transformers(kw):
    """The kept set equals what transformers' Temperature/TopK/TopP/MinP warpers keep,
    applied in that order (float64 rows without ties: 8 rows of 1000 and 8 of 5000)."""
    pytest.importorskip("transformers")
    rng = np.random.default_rng(7)
    for n, scale in ((1000, 1.0), (5000, 3.0)):
        x = rng.standard_normal((8, n)) * scale
        want = _hf_support(x, **kw)
        got = sk.sampling_probs(x, **kw) > 0
        np.testing.assert_array_equal(got, want)
        ids = sk.sample(x, seed=3, num_samples=50, **kw)
        assert np.take_along_axis(want, ids, axis=1).all()


# --------------------------------------------------------------------------- distribution

CHI2_SETTINGS = [
    {},
    {"temperature": 0.5},
    {"top_k": 6},
    {"top_p": 0.8},
    {"min_p": 0.08},
    {"temperature": 1.5, "top_k": 12, "top_p": 0.9, "min_p": 0.02},
    {"top_k": 300, "top_p": 0.95},  # the selection + threshold-search path
]


@pytest.mark.parametrize("kw", CHI2_SETTINGS, ids=str)
def test_chi_square_10e6_draws(kw):
    """10**6 seeded draws from one row against the exact filtered probabilities of the
    float64 reference.  Deterministic (fixed seed, fixed row): the statistic is the
    same on every run; the bar is a p-value of 1e-6, and no draw falls outside the kept
    set.  (A wrong race -- e.g. Gumbel keys from log(r) instead of -log(-log r) -- or a
    wrong normaliser fails this by hundreds of standard deviations.)"""
    from scipy.stats import chi2

    n = 400 if kw.get("top_k") == 300 else 24
    x = np.random.default_rng(11).standard_normal(n) * 1.5
    p = reference.sampling_probs(x, **kw)
    ids = sk.sample(x, seed=2024, num_samples=1_000_000, **kw)
    counts = np.bincount(ids, minlength=n)
    kept = p > 0
    assert counts[~kept].sum() == 0
    expected = p[kept] * ids.size
    stat = float(((counts[kept] - expected) ** 2 / expected).sum())
    df = int(kept.sum()) - 1
    if df == 0:
        assert counts[kept].sum() == ids.size
        return
    assert chi2.sf(stat, df) > 1e-6, (stat, df)


def test_chi_square_ties_are_uniform():
    """+inf entries and temperature=0 ties: uniform over the maxima (10**6 draws)."""
    from scipy.stats import chi2

    rows = [
        np.array([0.0, np.inf, 3.0, np.inf, np.inf, -np.inf]),
        np.array([1.0, 4.0, 4.0, -2.0, 4.0, 4.0]),
    ]
    for x, kw, top in ((rows[0], {}, [1, 3, 4]), (rows[1], {"temperature": 0}, [1, 2, 4, 5])):
        ids, lp = sk.sample(x, seed=5, num_samples=1_000_000, return_logprobs=True, **kw)
        counts = np.bincount(ids, minlength=x.size)
        assert set(np.flatnonzero(counts)) == set(top)
        e = ids.size / len(top)
        stat = float(((counts[top] - e) ** 2 / e).sum())
        assert chi2.sf(stat, len(top) - 1) > 1e-6
        np.testing.assert_allclose(lp, -math.log(len(top)))


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("kw", [{}, {"top_k": 20}, {"top_p": 0.9}, {"min_p": 0.05}], ids=str)
def test_same_seed_same_tokens_batch_rows_slices_threads(kw):
    """Row i's draws depend on (seed, row_offset + i, j, s) only: the whole batch, row
    by row with row_offset=i, a slice with row_offset=start, other thread counts, and a
    3-d batch reshaped give the same tokens; another seed gives others."""
    import numba

    x = np.random.default_rng(1).standard_normal((24, 3000)).astype(np.float32) * 2
    whole = sk.sample(x, seed=99, num_samples=3, **kw)
    for i in (0, 5, 23):
        np.testing.assert_array_equal(
            sk.sample(x[i], seed=99, num_samples=3, row_offset=i, **kw), whole[i]
        )
    np.testing.assert_array_equal(
        sk.sample(x[7:19], seed=99, num_samples=3, row_offset=7, **kw), whole[7:19]
    )
    np.testing.assert_array_equal(
        sk.sample(x.reshape(4, 6, 3000), seed=99, num_samples=3, **kw).reshape(24, 3), whole
    )
    np.testing.assert_array_equal(
        sk.sample(np.asfortranarray(x.T), seed=99, num_samples=3, axis=0, **kw), whole
    )
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(sk.sample(x, seed=99, num_samples=3, **kw), whole)
    finally:
        numba.set_num_threads(before)
    other = sk.sample(x, seed=100, num_samples=3, **kw)
    assert (other != whole).mean() > 0.5
    # the samples of a row are independent streams, not copies
    assert (whole[:, 0] != whole[:, 1]).any()


def test_unseeded_calls_differ():
    x = np.zeros((4, 10000))
    assert (sk.sample(x) != sk.sample(x)).any()


def test_large_batch_uses_threads_and_matches_rows():
    """[64, 20000] float32 runs on the thread pool (above the one-thread size); spot
    rows match single-row calls."""
    x = np.random.default_rng(4).standard_normal((64, 20000), dtype=np.float32) * 3
    whole = sk.sample(x, top_p=0.9, seed=8, num_samples=2)
    for i in (0, 31, 63):
        np.testing.assert_array_equal(
            sk.sample(x[i], top_p=0.9, seed=8, num_samples=2, row_offset=i), whole[i]
        )


# --------------------------------------------------------------------------- edge cases


def test_topk_ties_beyond_the_buffer_are_kept():
    """top_k keeps every entry equal to the k-th value (transformers'
    ``scores < topk[-1]`` rule), also those the k-entry buffer could not hold: the
    tie count and the second pass over the row.  Regression guard: counting ties
    wrongly keeps only k of the 9 fours."""
    x = np.array([1.0, 4.0, 0.0, 4.0, 4.0, 9.0, 4.0, 4.0, 4.0, 2.0, 4.0, 4.0, 4.0])
    p = sk.sampling_probs(x, top_k=3)
    np.testing.assert_array_equal(p > 0, x >= 4.0)
    np.testing.assert_allclose(p, reference.sampling_probs(x, top_k=3), rtol=1e-12)
    ids, lp = sk.sample(x, top_k=3, seed=1, num_samples=20000, return_logprobs=True)
    assert set(np.unique(ids)) == set(np.flatnonzero(x >= 4.0))
    np.testing.assert_allclose(lp, np.log(p[ids]), rtol=1e-12)
    # with top-p on top: the mass of the ties beyond the buffer counts in the crossing
    for top_p in (0.9, 0.97, 0.99):
        want = reference.sampling_probs(x, top_k=3, top_p=top_p)
        np.testing.assert_allclose(sk.sampling_probs(x, top_k=3, top_p=top_p), want, rtol=1e-12)


def test_edge_rows():
    x = np.array([[3.0, -np.inf, 1.0, -np.inf], [-np.inf, 2.0, -np.inf, -np.inf]])
    ids, lp = sk.sample(x, seed=0, num_samples=2000, return_logprobs=True)
    assert set(np.unique(ids[0])) <= {0, 2} and set(np.unique(ids[1])) == {1}
    np.testing.assert_allclose(lp[1], 0.0)
    # a single entry, a single column
    assert sk.sample([5.0], seed=1).tolist() == [0]
    assert sk.sample(np.ones((3, 1)), seed=1).tolist() == [[0], [0], [0]]
    # top_k >= n, top_p = 1, min_p = 0 keep everything
    y = np.random.default_rng(2).standard_normal((2, 50))
    full = sk.sampling_probs(y)
    for kw in ({"top_k": 50}, {"top_k": 10**9}, {"top_p": 1.0}, {"min_p": 0.0}):
        np.testing.assert_allclose(sk.sampling_probs(y, **kw), full)
    # min_p = 1 keeps the maxima only; greedy is argmax for a unique maximum
    np.testing.assert_array_equal(sk.sampling_probs(y, min_p=1.0) > 0, y == y.max(1, keepdims=1))
    np.testing.assert_array_equal(sk.sample(y, temperature=0)[:, 0], y.argmax(1))
    # integer and float16 logits; an empty batch
    assert sk.sample(np.array([[1, 5, 2]]), temperature=0).tolist() == [[1]]
    assert sk.sample(np.array([[1, 5, 2]], np.float16), temperature=0).tolist() == [[1]]
    assert sk.sample(np.zeros((0, 5)), num_samples=3).shape == (0, 3)
    # extreme temperature: x / T overflows to +-inf (the dense contract's +inf rule)
    ids = sk.sample(np.array([1.0, -1.0, 2.0, 0.0]), temperature=1e-320, seed=3, num_samples=500)
    assert set(np.unique(ids)) == {0, 2}


def test_inputs_not_mutated():
    x = np.random.default_rng(3).standard_normal((3, 40)).astype(np.float32)
    x[0, 3] = np.inf
    before = x.copy()
    x.setflags(write=False)
    sk.sample(x, top_p=0.9, top_k=5, seed=1, return_logprobs=True)
    sk.sampling_probs(x, top_p=0.9)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- errors

BAD = [
    ({"top_p": 0.0}, ValueError, "top_p must be in (0, 1]"),
    ({"top_p": 1.5}, ValueError, "top_p must be in (0, 1]"),
    ({"top_p": float("nan")}, ValueError, "top_p"),
    ({"top_k": 0}, ValueError, "top_k must be an int >= 1"),
    ({"top_k": 2.5}, TypeError, "top_k must be an int"),
    ({"top_k": True}, TypeError, "top_k must be an int"),
    ({"min_p": -0.1}, ValueError, "min_p must be in [0, 1]"),
    ({"min_p": 1.01}, ValueError, "min_p must be in [0, 1]"),
    ({"temperature": -1.0}, ValueError, "temperature must be finite and >= 0"),
    ({"temperature": float("nan")}, ValueError, "temperature"),
    ({"temperature": float("inf")}, ValueError, "temperature"),
    ({"temperature": "1"}, TypeError, "temperature must be a real number"),
    ({"num_samples": 0}, ValueError, "num_samples must be an int >= 1"),
    ({"num_samples": 1.0}, TypeError, "num_samples must be an int"),
    ({"seed": -1}, ValueError, "seed must be an int in [0, 2**64)"),
    ({"seed": 2**64}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed must be an int"),
    ({"row_offset": -1}, ValueError, "row_offset"),
    ({"axis": 2}, np.exceptions.AxisError, "axis"),
    ({"return_logprobs": "yes"}, TypeError, "return_logprobs"),
]


@pytest.mark.parametrize(("kw", "exc", "msg"), BAD, ids=lambda v: str(v)[:30])
def test_bad_arguments(kw, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        sk.sample(np.zeros((2, 4)), **kw)


def test_bad_rows_name_the_row():
    x = np.zeros((4, 5))
    x[3] = -np.inf
    with pytest.raises(ValueError, match="row 3 of logits is all -inf"):
        sk.sample(x, seed=0)
    with pytest.raises(ValueError, match="row 3 of logits is all -inf"):
        sk.sampling_probs(x)
    x[3] = 0.0
    x[1, 2] = np.nan
    for kw in ({}, {"top_k": 2}, {"top_p": 0.5}, {"temperature": 0}):
        with pytest.raises(ValueError, match="row 1 of logits contains NaN"):
            sk.sample(x, seed=0, **kw)
    y = np.zeros((2, 3, 4))
    y[1, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 5 \(batch index \(1, 2\)\) of logits contains NaN"):
        sk.sample(y, seed=0)
    with pytest.raises(ValueError, match="size 0 along axis"):
        sk.sample(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="at least one dimension"):
        sk.sample(np.float64(1.0))
    with pytest.raises(TypeError, match="logits"):
        sk.sample(np.array(["a", "b"]))


# --------------------------------------------------------------------------- CLI, bench


def test_cli_sample(tmp_path, capsys):
    x = np.random.default_rng(5).standard_normal((6, 300)).astype(np.float32)
    src, out, lpf = tmp_path / "x.npy", tmp_path / "ids.npy", tmp_path / "lp.npy"
    np.save(src, x)
    argv = ["sample", str(src), "--top-p", "0.9", "--top-k", "40", "--min-p", "0.01"]
    argv += ["--temperature", "0.8", "--seed", "1", "-n", "4", "-o", str(out)]
    assert cli.main([*argv, "--logprobs", str(lpf)]) == 0
    ids, lp = sk.sample(
        x, top_p=0.9, top_k=40, min_p=0.01, temperature=0.8, seed=1, num_samples=4,
        return_logprobs=True,
    )  # fmt: skip
    np.testing.assert_array_equal(np.load(out), ids)
    np.testing.assert_array_equal(np.load(lpf), lp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.npy", "lp.npy", "x.npy"]
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 3), -np.inf))
    for args in (
        ["sample", str(bad), "-o", str(tmp_path / "o.npy")],
        ["sample", str(src), "--top-p", "2", "-o", str(tmp_path / "o.npy")],
        ["sample", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o.npy")],
        ["sample", str(src), "-o", str(tmp_path / "o.txt")],
    ):
        capsys.readouterr()
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("softmaxkit sample: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o.npy").exists()


def test_bench_vocab_quick_cases_run_once():
    from softmaxkit.bench import core as bench
    from softmaxkit.bench import vocab as _bench_vocab

    cases = _bench_vocab.cases(True)
    results = bench.run_cases(cases, repeats=1, budget_s=0.0, memory=False)
    assert len(results) == 2
    for r in results:
        assert r["failed"] == {}
        im = r["impls"]
        assert im["softmaxkit"]["max_error"] == 0.0  # every draw inside the top-p set
        for name in ("torch top-p multinomial", "torch top-p race"):
            if name in im:
                assert im[name]["max_error"] == 0.0
