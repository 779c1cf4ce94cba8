"""Segment softmax / log_softmax / logsumexp: every path (sorted ids, CSR offsets,
unsorted ids) against the float64 reference twins and mpmath; the edge-case
contract; VJPs against PyTorch scatter-based autograd; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.exceptions import AxisError

import softmaxkit._kernels._parallel as par
from softmaxkit import reference as ref
from softmaxkit import (
    segment_log_softmax,
    segment_log_softmax_vjp,
    segment_logsumexp,
    segment_logsumexp_vjp,
    segment_softmax,
    segment_softmax_vjp,
)

OPS = [
    (segment_logsumexp, ref.segment_logsumexp),
    (segment_softmax, ref.segment_softmax),
    (segment_log_softmax, ref.segment_log_softmax),
]


def _data(seed, n, num, cols=(), sorted_=False, scale=10.0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num, n)
    if sorted_:
        ids = np.sort(ids)
    x = rng.standard_normal((n, *cols)) * scale
    return x, ids


def _offsets(ids, num):
    return np.searchsorted(ids, np.arange(num + 1))


@pytest.mark.parametrize(("op", "rop"), OPS, ids=["lse", "softmax", "log_softmax"])
@pytest.mark.parametrize("cols", [(), (3,), (2, 3)])
@pytest.mark.parametrize("path", ["sorted", "offsets", "unsorted"])
def test_paths_match_reference(op, rop, cols, path):
    num = 13  # some segments stay empty
    x, ids = _data(1, 200, num, cols, sorted_=path != "unsorted")
    ids = np.where(ids == 5, 6, ids)  # segment 5 empty
    kw = {"offsets": _offsets(ids, num)} if path == "offsets" else {"segment_ids": ids}
    got = op(x, num_segments=num, **kw)
    want = rop(x, num_segments=num, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)
    # the segmented axis elsewhere
    if cols:
        xt = np.moveaxis(x, 0, -1)
        got = op(xt, num_segments=num, axis=-1, **kw)
        want = rop(xt, num_segments=num, axis=xt.ndim - 1, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)
    # float32 within the dense contract
    got32 = op(x.astype(np.float32), num_segments=num, **kw)
    assert got32.dtype == np.float32
    w = np.asarray(rop(x.astype(np.float32), num_segments=num, **kw))
    fin = np.isfinite(w)
    tol = 2e-6 * np.abs(w[fin]) + 1e-6 * (1 + np.abs(w[fin]))
    assert np.all(np.abs(got32[fin] - w[fin]) <= tol)
    np.testing.assert_array_equal(got32[~fin], w[~fin])


@pytest.mark.parametrize(("op", "rop"), OPS, ids=["lse", "softmax", "log_softmax"])
def test_temperature_and_where(op, rop):
    x, ids = _data(2, 120, 7, (2,))
    rng = np.random.default_rng(3)
    w = rng.random(x.shape) < 0.7
    w[ids == 3] = False  # a fully masked segment
    for i in (ids, np.sort(ids)):
        got = op(x, i, temperature=2.5, where=w)
        want = rop(x, i, temperature=2.5, where=w)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def test_special_values_every_path():
    inf, nan = np.inf, np.nan
    x = np.array([inf, 1.0, inf, -inf, -inf, nan, 2.0, 5.0])
    ids = np.array([0, 0, 0, 1, 1, 2, 2, 4])  # segment 3 empty
    perm = np.array([7, 2, 5, 0, 3, 6, 1, 4])
    for xx, ii in ((x, ids), (x[perm], ids[perm])):
        lse = segment_logsumexp(xx, ii)
        np.testing.assert_array_equal(lse[[0, 1, 3, 4]], [inf, -inf, -inf, 5.0])
        assert np.isnan(lse[2])
        p = segment_softmax(xx, ii)
        lp = segment_log_softmax(xx, ii)
        want_p = np.array([0.5, 0, 0.5, 0, 0, nan, nan, 1.0])
        want_lp = np.array([-np.log(2), -inf, -np.log(2), -inf, -inf, nan, nan, 0.0])
        order = np.arange(8) if xx is x else perm
        np.testing.assert_array_equal(p, want_p[order])
        np.testing.assert_array_equal(lp, want_lp[order])


@pytest.mark.parametrize("cols", [(), (2,)])
def test_nan_after_minus_inf_is_nan_not_empty(cols):
    # the max skips NaN: a segment [-inf, NaN] has m = -inf and must not read as empty
    x = np.array([-np.inf, np.nan, 1.0, -np.inf, -np.inf])
    x = np.broadcast_to(x.reshape(-1, *([1] * len(cols))), (5, *cols)).copy()
    ids = np.array([0, 0, 1, 2, 2])
    for ii, xx in ((ids, x), (ids[::-1].copy(), x[::-1].copy())):
        lse = segment_logsumexp(xx, ii)
        assert np.isnan(lse[0]).all() and (lse[1] == 1.0).all() and (lse[2] == -np.inf).all()
        nan_pos = ii == 0
        for op in (segment_softmax, segment_log_softmax):
            assert np.isnan(op(xx, ii)[nan_pos]).all()
            assert not np.isnan(op(xx, ii)[~nan_pos]).any()


def test_group_lengths_1_and_1e5_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(4)
    n = 100_000
    x = np.concatenate([[-650.25], rng.uniform(-700, 0, n), [3.5]])
    ids = np.concatenate([[0], np.ones(n, int), [2]])
    for ii, xx in ((ids, x), (ids[::-1].copy(), x[::-1].copy())):  # sorted, then unsorted
        got = segment_logsumexp(xx, ii)
        with mpmath.workdps(50):
            big = float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in x[1:-1])))
        np.testing.assert_allclose(got, [-650.25, big, 3.5], rtol=1e-13)


def test_scatter_path_in_parts_matches_serial(monkeypatch):
    # unsorted ids folded in several parts (one per thread) whose states are merged
    x, ids = _data(5, 50_000, 300, (2,))
    x[ids == 7] = -np.inf
    x[ids == 8, 0] = np.inf
    serial = (segment_logsumexp(x, ids), segment_softmax(x, ids))
    monkeypatch.setattr(par, "threads_for", lambda size, itemsize=4: 4)
    got = (segment_logsumexp(x, ids), segment_softmax(x, ids))
    for g, s in zip(got, serial, strict=True):
        np.testing.assert_allclose(g, s, rtol=1e-13)
        np.testing.assert_array_equal(np.isinf(g), np.isinf(s))


def test_inputs_not_mutated_and_dtypes():
    x, ids = _data(6, 50, 5)
    x32 = x.astype(np.float32)
    before = x32.copy()
    ib = ids.copy()
    for op, _ in OPS:
        op(x32, ids, temperature=1.5)
    np.testing.assert_array_equal(x32, before)
    np.testing.assert_array_equal(ids, ib)
    assert segment_softmax(x.astype(np.float16), ids).dtype == np.float16
    assert segment_logsumexp(np.arange(4), [0, 0, 1, 1]).dtype == np.float64
    np.testing.assert_allclose(
        segment_logsumexp(x, ids.astype(np.uint16)), segment_logsumexp(x, ids)
    )
    assert (
        segment_logsumexp(np.zeros(0), np.zeros(0, int), num_segments=3).tolist() == [-np.inf] * 3
    )


def test_bad_input_named_errors():
    x = np.zeros((4, 2))
    with pytest.raises(TypeError, match="segment_ids must have an integer dtype"):
        segment_softmax(x, np.array([0.0, 0, 1, 1]))
    with pytest.raises(ValueError, match="segment_ids must be >= 0"):
        segment_softmax(x, np.array([0, -1, 1, 1]))
    with pytest.raises(ValueError, match="segment_ids must be < num_segments = 2"):
        segment_logsumexp(x, np.array([0, 0, 1, 2]), num_segments=2)
    with pytest.raises(ValueError, match="length of the segmented axis"):
        segment_logsumexp(x, np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        segment_logsumexp(x, offsets=[0, 3, 1, 4])
    with pytest.raises(ValueError, match="start at 0 and end at the axis length 4"):
        segment_logsumexp(x, offsets=[0, 2, 3])
    with pytest.raises(TypeError, match="offsets must be a 1-D integer array"):
        segment_logsumexp(x, offsets=[0.0, 4.0])
    with pytest.raises(ValueError, match="num_segments must equal len"):
        segment_logsumexp(x, offsets=[0, 2, 4], num_segments=3)
    with pytest.raises(TypeError, match="exactly one of segment_ids and offsets"):
        segment_logsumexp(x)
    with pytest.raises(TypeError, match="exactly one of segment_ids and offsets"):
        segment_logsumexp(x, [0, 0, 1, 1], offsets=[0, 2, 4])
    with pytest.raises(AxisError):
        segment_logsumexp(x, [0, 1], axis=2)
    with pytest.raises(ValueError, match="num_segments must be >= 0"):
        segment_logsumexp(x, [0, 0, 1, 1], num_segments=-1)
    with pytest.raises(ValueError, match="temperature"):
        segment_softmax(x, [0, 0, 1, 1], temperature=0.0)
    with pytest.raises(ValueError, match="where with shape"):
        segment_softmax(x, [0, 0, 1, 1], where=np.ones(3, bool))
    with pytest.raises(ValueError, match="g has shape"):
        segment_logsumexp_vjp(x, np.zeros((3, 2)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="g has shape"):
        segment_softmax_vjp(x, np.zeros((3, 2)), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="0-d"):
        segment_softmax(np.float64(1.0), [0])


def _torch_segment(xt, idt, num, which):
    """PyG-style scatter softmax: the peer formula with scatter_reduce (amax, sum)."""
    import torch

    index = idt.view(-1, *([1] * (xt.dim() - 1))).expand_as(xt)
    shape = (num, *xt.shape[1:])
    m = torch.full(shape, -torch.inf, dtype=xt.dtype).scatter_reduce(0, index, xt, "amax")
    m = m.detach()
    e = torch.exp(xt - m.gather(0, index))
    s = torch.zeros(shape, dtype=xt.dtype).scatter_add(0, index, e)
    if which == "lse":
        return m + torch.log(s)
    if which == "softmax":
        return e / s.gather(0, index)
    return xt - m.gather(0, index) - torch.log(s.gather(0, index))


@pytest.mark.parametrize("which", ["lse", "softmax", "log_softmax"])
@pytest.mark.parametrize("sorted_", [True, False])
def test_vjps_match_torch_scatter_autograd(which, sorted_):
    torch = pytest.importorskip("torch")
    num = 9
    x, ids = _data(7, 80, num, (3,), sorted_=sorted_, scale=3.0)
    ids[:num] = np.arange(num)  # no empty segment (torch's lse would be -inf - inf)
    if sorted_:
        ids = np.sort(ids)
    xt = torch.tensor(x, requires_grad=True)
    y = _torch_segment(xt, torch.tensor(ids), num, which)
    g = np.random.default_rng(8).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(g))
    if which == "lse":
        np.testing.assert_allclose(segment_logsumexp(x, ids), y.detach().numpy(), rtol=1e-12)
        got = segment_logsumexp_vjp(x, g, ids)
    elif which == "softmax":
        yy = segment_softmax(x, ids)
        np.testing.assert_allclose(yy, y.detach().numpy(), rtol=1e-12, atol=1e-15)
        got = segment_softmax_vjp(yy, g, ids)
    else:
        yy = segment_log_softmax(x, ids)
        np.testing.assert_allclose(yy, y.detach().numpy(), rtol=1e-12, atol=1e-15)
        got = segment_log_softmax_vjp(yy, g, ids)
    np.testing.assert_allclose(got, xt.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_vjps_central_differences_with_temperature_and_offsets():
    rng = np.random.default_rng(9)
    x = rng.standard_normal(7)
    off = np.array([0, 3, 3, 7])
    T = 1.7
    for fwd, vjp, from_y in (
        (segment_logsumexp, segment_logsumexp_vjp, False),
        (segment_softmax, segment_softmax_vjp, True),
        (segment_log_softmax, segment_log_softmax_vjp, True),
    ):
        y = fwd(x, offsets=off, temperature=T)
        y = np.where(np.isinf(y), 0.0, y)
        g = rng.standard_normal(y.shape)
        arg = fwd(x, offsets=off, temperature=T) if from_y else x
        got = vjp(arg, g, offsets=off, temperature=T)
        h = 1e-6
        num = np.empty(7)
        for i in range(7):
            e = np.zeros(7)
            e[i] = h
            fp = fwd(x + e, offsets=off, temperature=T)
            fm = fwd(x - e, offsets=off, temperature=T)
            d = np.where(np.isinf(fp), 0.0, fp) - np.where(np.isinf(fm), 0.0, fm)
            num[i] = np.sum(g * d) / (2 * h)
        np.testing.assert_allclose(got, num, atol=1e-8)
