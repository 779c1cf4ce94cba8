"""One differential test: every dense op through every driver on the same adversarial rows.

Drivers: eager NumPy (C, F-order, strided, big-endian layouts), the online
normalizer fed in chunks, ``stream_softmax`` / ``stream_logsumexp`` over an .npy
file, Dask (several chunkings), the Array API path (``array_api_strict``) and
``softmaxkit.torch`` (torch tensors).  Inputs: extreme magnitudes (+-1e308,
+-finfo.max, tiny), extreme temperatures (1e-30, 1e30, subnormal), rows all -inf,
+inf entries, NaN, masks with NaN / +-inf under them.  Every result is compared with
the float64 reference (``softmaxkit.reference``) with NaN and +-inf at the same
places; hypothesis chooses the layout, the chunking and the rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as sk
from softmaxkit import reference as ref

F64 = np.finfo(np.float64)
ROWS = [
    [0.0, 1.0, 2.0, 3.0, -1.0, 0.5],
    [1e308, -1e308, 0.0, 1e308, 5.0, -5.0],
    [F64.max, -F64.max, F64.max, 0.0, 1.0, 2.0],
    [1e-300, 2e-300, -1e-300, 0.0, 5e-324, -5e-324],
    [-np.inf] * 6,
    [np.inf, 0.0, np.inf, -np.inf, 3.0, 1.0],
    [np.nan, 0.0, 1.0, 2.0, -np.inf, np.inf],
    [0.0, -40.0, -50.0, -38.0, -60.0, -745.0],
    [700.0, 699.0, -700.0, 0.0, 1.0, 710.0],
    [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
]
# masks that hide NaN, +inf and the maximum, and one that hides a whole row
MASKS = [
    [True] * 6,
    [True, True, True, True, True, False],
    [False, True, True, True, False, True],
    [True, False, True, True, True, True],
    [False] * 6,
]
TEMPERATURES = [1.0, 0.37, 1e-30, 1e30, 5e-324]

rows_st = st.lists(st.sampled_from(range(len(ROWS))), min_size=1, max_size=5)
masks_st = st.lists(st.sampled_from(range(len(MASKS))), min_size=1, max_size=5)


def _case(rows, masks):
    x = np.array([ROWS[i] for i in rows])
    m = np.array([MASKS[masks[k % len(masks)]] for k in range(len(rows))])
    return x, m


def _same(got, want, rtol=1e-12, atol=1e-300):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
    np.testing.assert_allclose(got[fin], want[fin], rtol=rtol, atol=atol)


def _ref(op, x, t, where):
    if op == "logsumexp":
        return ref.logsumexp(x, axis=-1, temperature=t, where=where)
    return getattr(ref, op)(x, axis=-1, temperature=t, where=where)


def _kernel_ref(op, x, t, where):
    """The reference with the kernels' one documented limitation (docs/dense.md, 1.4):
    log_softmax forms x - max before dividing by T, so where x - max overflows float64
    (entries of both signs near 1e308) the value is -inf, not the finite (x - max) / T."""
    want = _ref(op, x, t, where)
    if op == "log_softmax":
        inc = np.ones(x.shape, bool) if where is None else np.asarray(where)
        mx = np.max(np.where(inc & ~np.isnan(x), x, -np.inf), axis=-1, keepdims=True)
        with np.errstate(over="ignore", invalid="ignore"):
            ovf = np.isfinite(x) & np.isfinite(mx) & np.isinf(x - mx) & inc
        want = np.where(ovf & np.isfinite(want), -np.inf, want)
    return want


def _layout(x, kind):
    if kind == "F":
        return np.asfortranarray(x)
    if kind == "strided":
        wide = np.empty((x.shape[0], 2 * x.shape[1]))
        wide[:, ::2] = x
        return wide[:, ::2]
    if kind == "big-endian":
        return x.astype(">f8")
    return np.ascontiguousarray(x)


OPS = ["softmax", "log_softmax", "logsumexp"]


@settings(max_examples=60)
@given(
    op=st.sampled_from(OPS),
    rows=rows_st,
    masks=masks_st,
    t=st.sampled_from(TEMPERATURES),
    use_mask=st.booleans(),
    layout=st.sampled_from(["C", "F", "strided", "big-endian"]),
)
def test_eager(op, rows, masks, t, use_mask, layout):
    x, m = _case(rows, masks)
    where = m if use_mask else None
    got = getattr(sk, op)(_layout(x, layout), temperature=t, where=where)
    _same(got, _kernel_ref(op, x, t, where))


@settings(max_examples=40)
@given(
    op=st.sampled_from(OPS),
    rows=rows_st,
    masks=masks_st,
    t=st.sampled_from(TEMPERATURES),
    use_mask=st.booleans(),
    cut=st.integers(1, 5),
)
def test_online_normalizer_in_chunks(op, rows, masks, t, use_mask, cut):
    x, m = _case(rows, masks)
    where = m if use_mask else None
    parts = [(slice(0, cut)), slice(cut, 6)]
    state = sk.Normalizer.empty((x.shape[0],), temperature=t)
    for p in parts:
        state = state.update(x[:, p], where=None if where is None else where[:, p])
    if op == "logsumexp":
        got = state.logsumexp()
    else:
        got = np.concatenate(
            [
                getattr(state, op)(x[:, p], where=None if where is None else where[:, p])
                for p in parts
            ],
            axis=1,
        )
    # the state keeps s, not the dense kernels' log1p split: absolute ~eps(1 + |v|)
    want = _ref(op, x, t, where)
    rtol = 1e-12 if op == "softmax" else 1e-9
    _same(np.where(np.abs(want) < 1e-6, 0, got), np.where(np.abs(want) < 1e-6, 0, want), rtol)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("t", [1.0, 1e-30, 1e30])
def test_stream_file(tmp_path, op, t):
    x = np.array(ROWS)
    src = tmp_path / "x.npy"
    np.save(src, x)
    if op == "logsumexp":
        got = sk.stream_logsumexp(str(src), temperature=t, memory="4K")
    else:
        dst = tmp_path / "y.npy"
        sk.stream_softmax(str(src), str(dst), log=op == "log_softmax", temperature=t, memory="4K")
        got = np.load(dst)
    want = _ref(op, x, t, None)
    _same(np.where(np.abs(want) < 1e-6, 0, got), np.where(np.abs(want) < 1e-6, 0, want), 1e-9)


@settings(max_examples=30)
@given(
    op=st.sampled_from(OPS),
    rows=rows_st,
    masks=masks_st,
    t=st.sampled_from(TEMPERATURES),
    use_mask=st.booleans(),
    chunk=st.integers(1, 6),
)
def test_dask(op, rows, masks, t, use_mask, chunk):
    da = pytest.importorskip("dask.array")
    import dask

    x, m = _case(rows, masks)
    where = m if use_mask else None
    with dask.config.set(scheduler="synchronous"):
        got = getattr(sk, op)(da.from_array(x, chunks=(2, chunk)), temperature=t, where=where)
        got = got.compute()
    _same(got, _ref(op, x, t, where))


@settings(max_examples=30)
@given(
    op=st.sampled_from(OPS),
    rows=rows_st,
    masks=masks_st,
    t=st.sampled_from(TEMPERATURES),
    use_mask=st.booleans(),
)
def test_array_api_strict(op, rows, masks, t, use_mask):
    xp = pytest.importorskip("array_api_strict")
    pytest.importorskip("array_api_compat")
    x, m = _case(rows, masks)
    where = xp.asarray(m) if use_mask else None
    got = getattr(sk, op)(xp.asarray(x), temperature=t, where=where)
    _same(np.asarray(got), _ref(op, x, t, m if use_mask else None))


@settings(max_examples=30)
@given(
    op=st.sampled_from(OPS),
    rows=rows_st,
    masks=masks_st,
    t=st.sampled_from(TEMPERATURES),
    use_mask=st.booleans(),
)
def test_torch(op, rows, masks, t, use_mask):
    torch = pytest.importorskip("torch")
    x, m = _case(rows, masks)
    where = torch.from_numpy(m) if use_mask else None
    got = getattr(sk, op)(torch.from_numpy(x.copy()), temperature=t, where=where)
    assert isinstance(got, torch.Tensor)
    _same(got.numpy(), _kernel_ref(op, x, t, m if use_mask else None))


@settings(max_examples=30)
@given(rows=rows_st, t=st.sampled_from(TEMPERATURES), driver=st.sampled_from(["dask", "torch"]))
def test_cross_entropy_and_topk_across_drivers(rows, t, driver):
    x = np.array([ROWS[i] for i in rows])
    tgt = np.arange(len(rows)) % 6
    want_loss = ref.cross_entropy(x, tgt, temperature=t, reduction="none")
    want_p, want_i = sk.topk_softmax(x, 2, temperature=t)
    if driver == "dask":
        da = pytest.importorskip("dask.array")
        import dask

        with dask.config.set(scheduler="synchronous"):
            xd = da.from_array(x, chunks=(2, 3))
            loss = sk.cross_entropy(xd, tgt, temperature=t, reduction="none").compute()
            p, i = (np.asarray(a) for a in dask.compute(*sk.topk_softmax(xd, 2, temperature=t)))
    else:
        torch = pytest.importorskip("torch")
        xt = torch.from_numpy(x.copy())
        loss = sk.cross_entropy(xt, torch.from_numpy(tgt), temperature=t, reduction="none").numpy()
        p, i = (a.numpy() for a in sk.topk_softmax(xt, 2, temperature=t))
    # The cross-entropy kernels form log(sum) without the log1p split of logsumexp: a
    # loss below one ulp of 1 (a target at the max, the rest < 2^-53) comes back as 0,
    # as torch's does (docs/losses.md, "Accuracy"): an absolute bound of 2 eps there.
    _same(loss, want_loss, 1e-9, atol=2 * np.finfo(np.float64).eps)
    _same(p, want_p)
    finite = ~np.isnan(want_p[:, 0])
    np.testing.assert_array_equal(i[finite], want_i[finite])
