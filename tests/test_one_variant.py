"""The kernel entry points hand the arrays a kernel only reads over read-only
(``_kernels.view.readonly``): Numba compiles one variant for a writable input and a
read-only one (a memory map, a broadcast view, a JAX buffer), not two."""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit._kernels import _parallel
from softmaxkit._kernels.view import readonly


def test_readonly_is_a_view_and_leaves_the_caller_writable():
    x = np.arange(6.0).reshape(2, 3)
    v = readonly(x)
    assert not v.flags.writeable and x.flags.writeable
    assert np.shares_memory(v, x) and v.shape == x.shape and v.strides == x.strides
    assert readonly(v) is v


_RUN = _parallel.run  # the real one, whatever a test has patched in since


def _first_args(monkeypatch, call):
    """The first array argument of every kernel ``_parallel.run`` starts in ``call``."""
    seen = []

    def spy(kernel, ntask, nt, *args, **kw):
        seen.append(args[0])
        return _RUN(kernel, ntask, nt, *args, **kw)

    monkeypatch.setattr(_parallel, "run", spy)
    call()
    return seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name, call",
    [
        ("softmax rows", lambda x: sk.softmax(x)),
        ("log_softmax rows", lambda x: sk.log_softmax(x)),
        ("softmax rows out=x", lambda x: sk.softmax(x, out=x)),
        ("logsumexp rows", lambda x: sk.logsumexp(x, axis=-1)),
        ("softmax columns", lambda x: sk.softmax(x, axis=0)),
        ("logsumexp columns", lambda x: sk.logsumexp(x, axis=0)),
        ("long rows, split", lambda x: sk.log_softmax(np.tile(x, (1, 20000)))),
    ],
)
def test_dense_kernels_read_the_input_read_only(monkeypatch, dtype, name, call):
    x = np.random.default_rng(0).standard_normal((6, 9)).astype(dtype)
    ro = x.copy()
    ro.flags.writeable = False
    for inp in (x.copy(), ro):
        if name == "softmax rows out=x" and not inp.flags.writeable:
            continue  # out= cannot be a read-only array
        seen = _first_args(monkeypatch, lambda inp=inp: call(inp))
        assert seen, name
        for a in seen:
            assert isinstance(a, np.ndarray) and not a.flags.writeable, (name, a.dtype)


def test_sampling_and_vocab_kernels_read_the_input_read_only(monkeypatch):
    from softmaxkit._kernels import vocab
    from softmaxkit._kernels.sampling import entry

    x = np.random.default_rng(1).standard_normal((3, 50))
    got = []
    real_all = entry._sample_all

    def spy_all(a, *args):
        got.append(a)
        return real_all(a, *args)

    monkeypatch.setattr(entry, "_sample_all", spy_all)
    real_rows = vocab.vocab_rows

    def spy_rows(a, *args, **kw):
        got.append(a)
        return real_rows(a, *args, **kw)

    monkeypatch.setattr(vocab, "vocab_rows", spy_rows)
    sk.sample(x, top_p=0.9, seed=3)
    sk.cross_entropy(x, np.array([1, 2, 3]), return_entropy=True)
    assert len(got) == 2, got
    assert all(not a.flags.writeable for a in got)


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])
def test_masks_reach_the_kernels_read_only(monkeypatch, axis, strided):
    x = np.random.default_rng(2).standard_normal((6, 18))
    # strided: no copy-free layout, so x and the mask are copied (a writable mask)
    x = x[:, ::2] if strided else x[:, :9]
    where = x > -1.0  # a writable bool array of its own
    masks: list[np.ndarray] = []

    def spy(kernel, ntask, nt, *args, **kw):
        masks.extend(a for a in args if isinstance(a, np.ndarray) and a.dtype == np.bool_)
        return _RUN(kernel, ntask, nt, *args, **kw)

    monkeypatch.setattr(_parallel, "run", spy)
    for call in (
        lambda: sk.softmax(x, axis=axis, where=where),
        lambda: sk.log_softmax(x, axis=axis, where=where),
        lambda: sk.logsumexp(x, axis=axis, where=where, b=np.abs(x)),
    ):
        masks.clear()
        call()
        assert masks and all(not m.flags.writeable for m in masks)
    assert where.flags.writeable  # the caller's array is untouched


def test_serial_sampling_reuses_the_threaded_routes_variant(monkeypatch):
    """``sample_serial``'s ``_sample_all`` passes its flags and first row to
    ``_sample_rows`` as plain values: no ``Literal`` variant of the 5-25 s kernel.
    ``_sample_all`` is compiled afresh (not loaded from the cache, which would not
    type its call again), so its call to ``_sample_rows`` is typed here."""
    import numba

    from softmaxkit._kernels.sampling import entry

    fresh = numba.njit(nogil=True)(entry._sample_all.py_func)
    monkeypatch.setattr(entry, "_sample_all", fresh)
    x = np.random.default_rng(4).standard_normal((2, 40))
    sk.sample(x, top_p=0.9, seed=1)  # the serial route
    assert fresh.signatures
    sigs = [str(s) for s in entry._sample_rows.signatures]
    assert sigs and not any("Literal" in s for s in sigs), sigs


def _compiled_signature(kernel, args):
    """The argument types of the compiled kernel a ``_parallel.run`` call runs: a
    dispatcher picks the exact types of ``args``; an entry point handed out by
    ``view.any_layout`` is the overload it was compiled as."""
    import numba
    from numba.core.registry import CPUDispatcher

    from softmaxkit._kernels import view

    if isinstance(kernel, CPUDispatcher):
        return kernel, tuple(numba.typeof(a) for a in args)
    for key, entry in view._ENTRIES.items():
        if entry is kernel:
            disp = key[0]
            sigs = [s for s, c in disp.overloads.items() if c.entry_point is entry]
            assert len(sigs) == 1
            return disp, tuple(sigs[0][: len(args)])
    raise AssertionError(f"unknown kernel {kernel!r}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_every_mask_layout_runs_one_compiled_variant(monkeypatch, op, axis, dtype):
    """No mask, a full mask, a transposed one, a row mask broadcast over the rows and
    one broadcast along the reduced axis reach each dense kernel as one type: the
    masks are strided (``'A'``) arrays with a unit last stride (``view.any_layout``,
    ``view.unit_last``).  Each of these was a compile of its own (8-15 s for the column
    kernels), 245 of 813 s of a cold test run's compile time.  The values match the
    reference for every layout."""
    import numba

    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 70)).astype(dtype)
    full = rng.random(x.shape) < 0.8
    masks = {
        "none": None,
        "full": full,
        "transposed": np.asfortranarray(full),
        "over rows": np.broadcast_to(full[:1], x.shape),
        "over columns": np.broadcast_to(full[:, :1], x.shape),
    }
    seen: dict[str, set] = {}

    def spy(kernel, ntask, nt, *args, **kw):
        disp, sig = _compiled_signature(kernel, args)
        seen.setdefault(disp.py_func.__module__ + "." + disp.py_func.__name__, set()).add(sig)
        return _RUN(kernel, ntask, nt, *args, **kw)

    monkeypatch.setattr(_parallel, "run", spy)
    f, g = getattr(sk, op), getattr(sk.reference, op)
    for name, m in masks.items():
        got = f(x, axis=axis, where=m)
        want = g(x.astype(np.float64), axis=axis, where=m)
        fin = np.isfinite(want)
        assert np.array_equal(np.isfinite(got), fin), name
        tol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol, err_msg=name)
    assert seen
    for kernel, sigs in seen.items():
        assert len(sigs) == 1, (kernel, [str(s[1]) for s in sigs])
        second = next(iter(sigs))[1]  # the mask, in the kernels that take one
        if second.dtype == numba.types.boolean:
            assert second.layout == "A", kernel
    assert any(next(iter(s))[1].dtype == numba.types.boolean for s in seen.values())


@pytest.mark.parametrize(
    "name, call",
    [
        ("cross_entropy", lambda x, y, m: sk.cross_entropy(x, y, where=m, return_grad=True)),
        (
            "cross_entropy, probabilities",
            lambda x, y, m: sk.cross_entropy(x, np.eye(x.shape[1])[y], where=m),
        ),
        ("per-token outputs", lambda x, y, m: sk.cross_entropy(x, y, where=m, return_entropy=True)),
    ],
)
def test_loss_and_vocab_kernels_one_variant_per_mask_layout(monkeypatch, name, call):
    """The cross-entropy and vocabulary kernels take the mask strided too
    (``over_rows(strided=)``): no mask, a full one and one broadcast over the rows run
    one compiled kernel; the losses match the reference for each."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 30))
    y = rng.integers(0, 30, 12)
    full = rng.random(x.shape) < 0.8
    full[np.arange(12), y] = True
    row_mask = full.all(axis=0) | (np.arange(30) == 0)
    row_mask[y] = True
    masks = {"none": None, "full": full, "over rows": np.broadcast_to(row_mask, x.shape)}
    seen: dict[str, set] = {}

    def spy(kernel, ntask, nt, *args, **kw):
        disp, sig = _compiled_signature(kernel, args)
        seen.setdefault(disp.py_func.__name__, set()).add(sig)
        return _RUN(kernel, ntask, nt, *args, **kw)

    monkeypatch.setattr(_parallel, "run", spy)
    for label, m in masks.items():
        got = call(x, y, m)
        got = got[0] if isinstance(got, tuple) else got
        got = getattr(got, "loss", got)
        want = sk.reference.cross_entropy(x, y, where=m)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=label)
    assert seen
    for kernel, sigs in seen.items():
        assert len(sigs) == 1, (kernel, [str(s) for s in sigs])
