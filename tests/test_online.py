"""Tests of softmaxkit.Normalizer (the laws of the mergeable state) and topk_softmax."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit
from softmaxkit import Normalizer, reference, topk_softmax

INF = np.inf

# Values: finite floats over a wide range plus the special ones the contract covers.
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
special = st.sampled_from([-INF, INF, np.nan, 0.0, 700.0, -700.0])
value = st.one_of(finite, finite, finite, special)


def rows(n_min=0, n_max=12, r=3):
    return hnp.arrays(np.float64, st.tuples(st.just(r), st.integers(n_min, n_max)), elements=value)


def state_of(x, **kw):
    return Normalizer.empty(x.shape[:-1], **kw).update(x)


def assert_same_state(a: Normalizer, b: Normalizer, rtol=1e-12):
    np.testing.assert_array_equal(a.m, b.m)  # max is exact
    np.testing.assert_allclose(a.s, b.s, rtol=rtol, atol=0)


def assert_lse_close(got, want, rtol=1e-12):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-12)


# -- the laws ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(rows(), rows(), rows())
def test_merge_associative_commutative(a, b, c):
    sa, sb, sc = state_of(a), state_of(b), state_of(c)
    assert_same_state(sa | sb, sb | sa)
    assert_same_state((sa | sb) | sc, sa | (sb | sc))


@settings(max_examples=60, deadline=None)
@given(rows())
def test_empty_is_identity(a):
    s = state_of(a)
    e = Normalizer.empty(s.shape)
    for merged in (s | e, e | s):
        np.testing.assert_array_equal(merged.m, s.m)
        np.testing.assert_array_equal(merged.s, s.s)


def test_empty_merge_empty_is_empty():
    # flashinfer#4051 / vllm PR#39148: merging two empty states gave NaN there.
    e = Normalizer.empty((4,)) | Normalizer.empty((4,))
    np.testing.assert_array_equal(e.m, -INF)
    np.testing.assert_array_equal(e.s, 0.0)
    np.testing.assert_array_equal(e.logsumexp(), -INF)
    assert not np.isnan(e.softmax(np.full((4, 3), -INF))).any()


@settings(max_examples=80, deadline=None)
@given(rows(n_max=30), st.lists(st.integers(0, 30), max_size=4), st.randoms())
def test_chunking_and_order_independent_equals_dense(x, cuts, rnd):
    n = x.shape[1]
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]  # [0, 0] when n == 0
    pieces = [x[:, lo:hi] for lo, hi in itertools.pairwise(bounds)]
    rnd.shuffle(pieces)
    st_ = Normalizer.empty((x.shape[0],))
    for p in pieces:
        st_.update(p)
    assert_lse_close(st_.logsumexp(), reference.logsumexp(x, axis=-1))
    assert_lse_close(st_.logsumexp(), softmaxkit.logsumexp(x, axis=-1))
    # merge of separately built states, in shuffled order
    parts = [state_of(p) for p in pieces]
    rnd.shuffle(parts)
    total = Normalizer.empty((x.shape[0],))
    for p in parts:
        total |= p
    assert_lse_close(total.logsumexp(), reference.logsumexp(x, axis=-1))
    # the chunk softmax with the final state, reassembled, equals the dense softmax
    got = np.concatenate([total.softmax(x[:, lo:hi]) for lo, hi in itertools.pairwise(bounds)], 1)
    want = reference.softmax(x, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    got_l = np.concatenate(
        [total.log_softmax(x[:, lo:hi]) for lo, hi in itertools.pairwise(bounds)], 1
    )
    want_l = reference.log_softmax(x, axis=-1)
    np.testing.assert_array_equal(np.isnan(got_l), np.isnan(want_l))
    np.testing.assert_allclose(got_l, want_l, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("chunk", "m", "s", "lse"),
    [
        (np.array([]), -INF, 0.0, -INF),  # empty chunk
        (np.array([-INF, -INF]), -INF, 0.0, -INF),  # all -inf
        (np.array([1.0, INF, INF]), INF, 2.0, INF),  # two +inf: s counts them
        (np.array([1.0, np.nan, INF]), np.nan, np.nan, np.nan),  # NaN wins over inf
    ],
)
def test_special_chunks(chunk, m, s, lse):
    st_ = Normalizer.empty(()).update(chunk)
    np.testing.assert_array_equal(st_.m, m)
    np.testing.assert_array_equal(st_.s, s)
    np.testing.assert_array_equal(st_.logsumexp(), lse)
    # merged with a normal chunk
    both = st_ | Normalizer.empty(()).update(np.array([0.5, 2.0]))
    dense = softmaxkit.logsumexp(np.concatenate([chunk, [0.5, 2.0]]))
    assert_lse_close(both.logsumexp(), dense)


def test_inf_softmax_contract():
    x = np.array([[1.0, INF, 3.0, INF], [np.nan, 1.0, 2.0, 3.0], [-INF, -INF, -INF, -INF]])
    st_ = Normalizer.empty((3,)).update(x[:, :2]).update(x[:, 2:])
    p = st_.softmax(x)
    np.testing.assert_array_equal(p, reference.softmax(x))
    np.testing.assert_array_equal(p[0], [0, 0.5, 0, 0.5])
    np.testing.assert_array_equal(st_.log_softmax(x), reference.log_softmax(x))


def test_seed_notebook_halves():
    """The seed notebook: (m, d) of two halves, merged, equal the whole list."""
    ip = np.array([0.48403498, 0.0973621, 0.51869646, 0.18187859, 0.7138846, 0.15514045,
                   0.44284629, 0.46132317, 0.04277389, 0.776115])  # fmt: skip
    a = Normalizer.empty(()).update(ip[:5])
    b = Normalizer.empty(()).update(ip[5:])
    # the notebook's sequential loop values
    assert float(a.m) == 0.7138846
    np.testing.assert_allclose(float(a.s), 3.744576752902566, rtol=1e-7)
    np.testing.assert_allclose(float(b.s), 3.464240429166607, rtol=1e-7)
    w = a | b
    np.testing.assert_allclose(float(w.s), 6.982893244115486, rtol=1e-7)
    np.testing.assert_allclose(w.softmax(ip), softmaxkit.softmax(ip), rtol=1e-14)
    # the online loop of the notebook on i_ = [0.1, 0.3, 0.08, -0.09]
    i_ = Normalizer.empty(()).update(np.array([0.1, 0.3, 0.08, -0.09]))
    np.testing.assert_allclose(float(i_.s), 3.298306425538625, rtol=1e-15)


# -- options -----------------------------------------------------------------------


def test_where_and_temperature():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 10)) * 5
    mask = rng.random((4, 10)) > 0.4
    mask[2] = False  # a fully masked row
    st_ = Normalizer.empty((4,), temperature=2.5)
    st_.update(x[:, :4], where=mask[:, :4]).update(x[:, 4:], where=mask[:, 4:])
    want = softmaxkit.logsumexp(x, temperature=2.5, where=mask)
    assert_lse_close(st_.logsumexp(), want)
    np.testing.assert_allclose(
        st_.softmax(x, where=mask), softmaxkit.softmax(x, temperature=2.5, where=mask), rtol=1e-13
    )
    ls = st_.log_softmax(x, where=mask)
    np.testing.assert_allclose(ls, softmaxkit.log_softmax(x, temperature=2.5, where=mask))
    with pytest.raises(ValueError, match="temperatures"):
        st_ | Normalizer.empty((4,))


def test_tuple_axes_and_batch():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 5, 6))
    st_ = Normalizer.empty((4,))
    for i in range(3):
        st_.update(x[i], axis=(1, 2))  # each x[i] is [4, 5, 6]; reduce the last two
    want = softmaxkit.logsumexp(x, axis=(0, 2, 3))
    assert_lse_close(st_.logsumexp(), want, rtol=1e-13)
    # axis 0 of a chunk as the reduced axis
    st2 = Normalizer.empty((6,)).update(x[0, 0], axis=0).update(x[1, 0], axis=0)
    assert_lse_close(st2.logsumexp(), softmaxkit.logsumexp(x[:2, 0], axis=(0, 1)))
    p = st2.softmax(x[0, 0], axis=0)
    assert p.shape == (5, 6)


def test_float32_state_and_chunks():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 100)).astype(np.float32)
    st_ = Normalizer.empty((5,), np.float32).update(x[:, :50]).update(x[:, 50:])
    assert st_.dtype == np.float32 and st_.logsumexp().dtype == np.float32
    np.testing.assert_allclose(st_.logsumexp(), softmaxkit.logsumexp(x), rtol=2e-6)
    p = st_.softmax(x)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, softmaxkit.softmax(x), rtol=2e-6)
    assert (st_ | Normalizer.empty((5,))).dtype == np.float64


def test_float32_chunks_temperature_not_float32():
    # float32 chunks with a temperature that float32 cannot hold: the state is of
    # x / T with T itself (as the dense kernels), not of x / float32(T) -- that shifted
    # m by |m| * 2**-24, 2.8e-5 relative in every probability at |x| ~ 1000, T = 1.3
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 60)) + 1000).astype(np.float32)
    st_ = Normalizer.empty((4,), temperature=1.3)
    for c in np.split(x, 3, axis=1):
        st_.update(c)
    want = softmaxkit.softmax(x.astype(np.float64), temperature=1.3)
    # the dense float32 contract: 2e-6 relative where p >= 1e-6
    got = st_.softmax(x)
    big = want >= 1e-6
    assert np.all(np.abs(got - want)[big] <= 2e-6 * want[big])


def test_no_mutation_and_readonly_views():
    x = np.array([[1.0, 2.0, 3.0]])
    x0 = x.copy()
    st_ = Normalizer.empty((1,)).update(x)
    st_.softmax(x)
    st_.log_softmax(x)
    np.testing.assert_array_equal(x, x0)
    with pytest.raises(ValueError):
        st_.m[0] = 3.0
    a = Normalizer.empty((1,)).update(x)
    b = a | a
    np.testing.assert_array_equal(a.s, st_.s)  # merge does not modify its operands
    assert b is not a


def test_serialisation_roundtrip(tmp_path):
    x = np.array([[1.0, INF], [np.nan, 0.0], [-INF, -INF], [0.2, 0.9]])
    st_ = Normalizer.empty((4,), temperature=0.5).update(x)
    back = pickle.loads(pickle.dumps(st_))
    np.testing.assert_array_equal(back.m, st_.m)
    np.testing.assert_array_equal(back.s, st_.s)
    assert back.temperature == 0.5
    np.savez(tmp_path / "s.npz", **st_.to_arrays())
    with np.load(tmp_path / "s.npz") as f:
        back2 = Normalizer.from_arrays(f)
    np.testing.assert_array_equal(back2.s, st_.s)
    assert back2.temperature == 0.5
    assert "shape=(4,)" in repr(back2)


def test_errors():
    st_ = Normalizer.empty((3,))
    with pytest.raises(ValueError, match=r"batch shape \(2,\).*\(3,\)"):
        st_.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="batch shapes"):
        st_ | Normalizer.empty((2,))
    with pytest.raises(TypeError, match="Normalizer"):
        st_.merge(3)
    with pytest.raises(TypeError, match="float32 or float64"):
        Normalizer.empty((2,), np.float16)
    with pytest.raises(ValueError, match="invalid state"):
        Normalizer(np.array([0.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="invalid state"):
        Normalizer(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="same shape"):
        Normalizer(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        Normalizer.empty((), temperature=0.0)
    with pytest.raises(TypeError, match="chunk"):
        st_.update(np.zeros((3, 2), dtype=complex))
    with pytest.raises(ValueError, match="keys 'm' and 's'"):
        Normalizer.from_arrays({"m": 1})
    with pytest.raises(TypeError):
        st_ | 3


# -- topk_softmax ------------------------------------------------------------------


def _topk_ref(x, k, axis=-1, temperature=1.0, where=None):
    """softmax, then a stable descending sort by the key (masked -> -inf, NaN first)."""
    p = reference.softmax(x, axis=axis, temperature=temperature, where=where)
    key = np.asarray(x, dtype=np.float64) / temperature
    if where is not None:
        key = np.where(where, key, -INF)
    # stable sort of the negated key, then a stable pass putting NaN first (torch.topk)
    isnan = np.isnan(key)
    idx = np.argsort(np.where(isnan, 0.0, -key), axis=axis, kind="stable")
    nan_sorted = np.take_along_axis(isnan, idx, axis=axis)
    idx = np.take_along_axis(idx, np.argsort(~nan_sorted, axis=axis, kind="stable"), axis=axis)
    idx = np.take(idx, np.arange(k), axis=axis)
    return np.take_along_axis(p, idx, axis=axis), idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_vs_reference(dtype):
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(50, 300)) * 3).astype(dtype)
    x[3, 10:20] = x[3].max() + 1  # ten-way tie at the top: index order
    x[4] = -INF
    x[5, [7, 9]] = INF
    x[6, 100] = np.nan
    p, i = topk_softmax(x, 7)
    pr, ir = _topk_ref(x, 7)
    np.testing.assert_array_equal(i, ir)
    np.testing.assert_allclose(p, pr, rtol=2e-6 if dtype == np.float32 else 1e-13, atol=0)
    assert p.dtype == dtype and i.dtype == np.int64
    np.testing.assert_array_equal(i[3], np.arange(10, 17))
    np.testing.assert_array_equal(p[5, :2], [0.5, 0.5])
    assert i[6, 0] == 100 and np.isnan(p[6]).all()


def test_topk_float64_accuracy():
    # adversarial: values spread over 700 units and long rows; guards the vectorised exp
    rng = np.random.default_rng(5)
    x = rng.uniform(-700, 0, size=(4, 20000))
    x[:, 5] = 0.0
    x[1] = rng.normal(size=20000) * 1e-3  # near ties, sum ~ n
    p, i = topk_softmax(x, 3)
    pr, ir = _topk_ref(x, 3)
    np.testing.assert_array_equal(i, ir)
    np.testing.assert_allclose(p, pr, rtol=1e-13)


def test_topk_where_temperature_axis():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 40, 3))
    mask = rng.random((6, 40, 3)) > 0.5
    mask[0, :, 0] = False
    p, i = topk_softmax(x, 5, axis=1, temperature=0.7, where=mask)
    pr, ir = _topk_ref(x, 5, axis=1, temperature=0.7, where=mask)
    assert p.shape == (6, 5, 3)
    np.testing.assert_array_equal(i, ir)
    np.testing.assert_allclose(p, pr, rtol=1e-13)
    np.testing.assert_array_equal(i[0, :, 0], np.arange(5))  # fully masked: first five, p 0
    np.testing.assert_array_equal(p[0, :, 0], 0.0)


def test_topk_vs_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 1000)).astype(np.float32)
    p, i = topk_softmax(x, 5)
    tv, ti = torch.topk(torch.softmax(torch.from_numpy(x), -1), 5)
    np.testing.assert_array_equal(i, ti.numpy())
    np.testing.assert_allclose(p, tv.numpy(), rtol=2e-6)


def test_topk_edges_and_errors():
    p, i = topk_softmax(np.zeros((2, 3)), 0)
    assert p.shape == (2, 0) and i.shape == (2, 0)
    p, i = topk_softmax([2.0], 1)
    assert p.tolist() == [1.0] and i.tolist() == [0]
    p, i = topk_softmax(np.arange(6).reshape(2, 3), 3)  # ints computed in float64
    assert p.dtype == np.float64 and i.tolist() == [[2, 1, 0], [2, 1, 0]]
    p16, _ = topk_softmax(np.array([1.0, 2.0], np.float16), 1)
    assert p16.dtype == np.float16
    with pytest.raises(ValueError, match=r"k must satisfy 0 <= k <= 3.*k=4"):
        topk_softmax(np.zeros(3), 4)
    with pytest.raises(ValueError, match="k=-1"):
        topk_softmax(np.zeros(3), -1)
    with pytest.raises(TypeError, match="k must be an int"):
        topk_softmax(np.zeros(3), 1.5)
    with pytest.raises(TypeError, match="axis must be an int"):
        topk_softmax(np.zeros((3, 3)), 1, axis=(0, 1))
    with pytest.raises(np.exceptions.AxisError):
        topk_softmax(np.zeros((3, 3)), 1, axis=2)
    with pytest.raises(ValueError, match="0-d"):
        topk_softmax(np.float64(1.0), 1)
    x = np.array([[3.0, 1.0]])
    x0 = x.copy()
    topk_softmax(x, 1)
    np.testing.assert_array_equal(x, x0)
