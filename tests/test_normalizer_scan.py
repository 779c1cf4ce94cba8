"""Normalizer.scan: the running logsumexp through a chunk, continuing the state (issue
22, "the same on the Normalizer (a scan of states)"), against logcumsumexp of the whole
axis and a float64 prefix formula."""

import doctest

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import Normalizer, logcumsumexp


def _prefix_lse(v):
    """float64 brute force: log(sum(exp(v[:k+1]))) along the last axis, shifted."""
    out = np.empty_like(v, dtype=np.float64)
    for k in range(v.shape[-1]):
        p = v[..., : k + 1].astype(np.float64)
        m = p.max(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            out[..., k] = (m + np.log(np.exp(p - m).sum(axis=-1, keepdims=True)))[..., 0]
    return out


@pytest.mark.parametrize("cuts", [[5], [1, 2, 9], [3, 3, 3, 3], [11]])
@pytest.mark.parametrize("T", [1.0, 0.3])
def test_chunks_scan_to_the_whole_logcumsumexp(cuts, T):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 12)) * 30
    nz = Normalizer.empty((4,), temperature=T)
    parts = np.split(x, cuts, axis=-1)
    y = np.concatenate([nz.scan(p) for p in parts], axis=-1)
    np.testing.assert_allclose(y, _prefix_lse(x / T), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(y, logcumsumexp(x / T), rtol=1e-13)
    np.testing.assert_allclose(nz.logsumexp(), y[:, -1], rtol=1e-14)


def test_axis_zero_mask_and_dtype():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    w = rng.random((6, 3)) > 0.3
    nz = Normalizer.empty((3,))
    y = np.concatenate([nz.scan(x[:2], axis=0, where=w[:2]), nz.scan(x[2:], 0, where=w[2:])])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, logcumsumexp(x, axis=0, where=w), rtol=1e-6)


def test_edges_follow_the_dense_contract():
    inf, nan = np.inf, np.nan
    nz = Normalizer.empty(())
    y1 = nz.scan(np.array([-inf, -inf]))
    assert np.all(y1 == -inf)  # a prefix of -inf on an empty state stays -inf, no NaN
    y2 = nz.scan(np.array([0.0, inf, 1.0]))
    np.testing.assert_array_equal(y2, [0.0, inf, inf])
    y3 = Normalizer.empty(()).scan(np.array([1.0, nan, 2.0]))
    assert y3[0] == 1.0 and np.isnan(y3[1:]).all()


def test_errors_and_docstring_example():
    nz = Normalizer.empty((2,))
    with pytest.raises(TypeError, match="one int"):
        nz.scan(np.zeros((2, 3)), axis=(0, 1))
    with pytest.raises(ValueError, match="batch shape"):
        nz.scan(np.zeros((3, 3)))
    # the method's example (doctest does not collect it: the class's __module__ is
    # softmaxkit.online, the method's globals are those of softmaxkit._normalizer)
    finder = doctest.DocTestFinder()
    (test,) = finder.find(Normalizer.scan, "scan", globs={"sk": sk})
    result = doctest.DocTestRunner().run(test)
    assert result.failed == 0 and result.attempted >= 5
