"""softmaxkit.sample / sampling_probs on Dask arrays: the same tokens as NumPy for any
chunking (the reproducibility contract of docs/vocab.md), lazily, with clear errors."""

import numpy as np
import pytest

import softmaxkit as sk

da = pytest.importorskip("dask.array")

RNG = np.random.default_rng(20261205)
X3 = RNG.standard_normal((6, 5, 300)).astype(np.float32) * 3


@pytest.mark.parametrize(
    "chunks",
    [(6, 5, 300), (2, 5, 300), (1, 2, 100), (3, 1, 7), (6, 5, 50), (4, 3, 299)],
)
@pytest.mark.parametrize(
    "filters", [{}, {"top_p": 0.9}, {"top_k": 5}, {"min_p": 0.1, "temperature": 0.7}]
)
def test_tokens_do_not_depend_on_chunking(chunks, filters):
    want = sk.sample(X3, seed=11, num_samples=3, **filters)
    got = sk.sample(da.from_array(X3, chunks=chunks), seed=11, num_samples=3, **filters)
    assert isinstance(got, da.Array)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.compute(), want)


def test_logprobs_and_row_offset():
    xa = da.from_array(X3, chunks=(1, 2, 100))
    ids, lp = sk.sample(xa, top_k=5, seed=3, return_logprobs=True, row_offset=7)
    ids2, lp2 = sk.sample(X3, top_k=5, seed=3, return_logprobs=True, row_offset=7)
    np.testing.assert_array_equal(ids.compute(), ids2)
    np.testing.assert_array_equal(lp.compute(), lp2)
    # rows 2:6 of the batch with row_offset=2*5 are those rows of the whole result
    part = sk.sample(da.from_array(X3[2:], chunks=(3, 2, 300)), seed=3, row_offset=10)
    np.testing.assert_array_equal(part.compute(), sk.sample(X3, seed=3)[2:])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_other_axis_and_probs(axis):
    xa = da.from_array(X3, chunks=(2, 2, 150))
    np.testing.assert_array_equal(
        sk.sample(xa, axis=axis, seed=5).compute(), sk.sample(X3, axis=axis, seed=5)
    )
    got = sk.sampling_probs(xa, top_p=0.5, axis=axis)
    assert isinstance(got, da.Array) and got.shape == X3.shape
    np.testing.assert_array_equal(got.compute(), sk.sampling_probs(X3, top_p=0.5, axis=axis))


def test_one_row_and_fresh_seed_is_fixed_at_graph_build():
    x1 = X3[0, 0]
    np.testing.assert_array_equal(
        sk.sample(da.from_array(x1, chunks=100), seed=2).compute(), sk.sample(x1, seed=2)
    )
    g = sk.sample(da.from_array(X3, chunks=(2, 5, 300)), num_samples=4)
    np.testing.assert_array_equal(g.compute(), g.compute())


def test_lazy_and_errors():
    calls = []

    def spy(b):
        calls.append(1)
        return b

    xa = da.from_array(X3, chunks=(2, 5, 300)).map_blocks(spy, meta=np.empty((0, 0, 0), np.float32))
    ids = sk.sample(xa, top_p=0.9, seed=1)
    assert calls == []  # nothing read while building the graph
    ids.compute()
    assert calls
    # argument errors are raised at once, before any data is read
    with pytest.raises(ValueError, match="top_p must be in"):
        sk.sample(xa, top_p=1.5)
    with pytest.raises(ValueError, match="size 0 along axis"):
        sk.sample(da.zeros((3, 0), chunks=1))
    with pytest.raises(TypeError, match="num_samples must be an int"):
        sk.sample(xa, num_samples=1.5)
    with pytest.raises(TypeError, match="axis must be an int"):
        sk.sampling_probs(xa, axis=None)
    # a NaN row is named by its place in the whole batch, as NumPy names it
    y = X3.copy()
    y[4, 3, 2] = np.nan
    msg = r"row 23 \(batch index \(4, 3\)\) of logits contains NaN"
    with pytest.raises(ValueError, match=msg):
        sk.sample(y, seed=1)
    with pytest.raises(ValueError, match=msg):
        sk.sample(da.from_array(y, chunks=(2, 2, 300)), seed=1).compute()
