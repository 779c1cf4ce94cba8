"""Fresh outputs of the dense ops start on a 2 MiB boundary (softmaxkit._core.buffers)."""

import os
import threading
import time
import warnings

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit._core import buffers as _buffers
from softmaxkit.reference import log_softmax as ref_log_softmax
from softmaxkit.reference import softmax as ref_softmax

BIG = (2048, 1025)  # 4.0 MiB of float16 (8 MiB float32): not a 2 MiB multiple


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_large_outputs_are_aligned_with_the_input_layout(order, dtype):
    x = np.zeros(BIG, dtype=np.float32, order=order)
    out = _buffers.empty_like(x, dtype)
    assert out.shape == x.shape and out.dtype == dtype
    assert out.ctypes.data % _buffers.HUGE_PAGE == 0
    assert out.flags.writeable and out.flags.aligned
    assert out.flags.c_contiguous == (order == "C")
    assert out.flags.f_contiguous == (order == "F")
    assert not np.shares_memory(out, x)
    out[...] = 1  # the whole view is writable memory of its own
    assert out.sum(dtype=np.float64) == out.size


def test_small_and_strided_inputs_keep_numpy_empty_like():
    small = np.zeros((8, 3), dtype=np.float32, order="F")
    got = _buffers.empty_like(small, np.float64)
    want = np.empty_like(small, dtype=np.float64)
    assert got.flags.owndata and got.strides == want.strides
    strided = np.zeros((2048, 2048), dtype=np.float32)[:, ::2]  # 8 MiB base, not contiguous
    got = _buffers.empty_like(strided, np.float32)
    assert got.strides == np.empty_like(strided).strides


@pytest.mark.parametrize("op, ref", [(sk.softmax, ref_softmax), (sk.log_softmax, ref_log_softmax)])
@pytest.mark.parametrize("order, axis", [("C", -1), ("F", 0), ("C", 0)])
def test_plain_calls_return_aligned_correct_outputs(op, ref, order, axis):
    x = np.asarray(np.random.default_rng(5).standard_normal(BIG) * 5, dtype=np.float32, order=order)
    got = op(x, axis=axis)
    assert got.ctypes.data % _buffers.HUGE_PAGE == 0
    assert got.flags.c_contiguous == x.flags.c_contiguous
    np.testing.assert_allclose(got, ref(x, axis=axis), rtol=2e-6, atol=1e-6)


# --------------------------------------------------------------------------- reuse


@pytest.fixture
def cache():
    """A fresh, empty cache with the default limit; the caller's limit restored after."""
    old = sk.set_output_cache(0)
    sk.set_output_cache(_buffers.DEFAULT_LIMIT)
    yield _buffers
    sk.set_output_cache(old)


def _x(seed, shape=BIG, dtype=np.float32, order="C"):
    x = np.random.default_rng(seed).standard_normal(shape) * 5
    return np.asarray(x, dtype=dtype, order=order)


@pytest.mark.parametrize("op, ref", [(sk.softmax, ref_softmax), (sk.log_softmax, ref_log_softmax)])
@pytest.mark.parametrize("order, axis", [("C", -1), ("F", 0), ("C", 0)])
def test_a_released_output_is_reused_and_fully_rewritten(cache, op, ref, order, axis):
    first = op(_x(1, order=order), axis=axis)
    ptr = first.ctypes.data
    info = cache.output_cache_info()
    del first  # the buffer goes back to the cache
    assert cache.output_cache_info()["buffers"] == info["buffers"] + 1
    x = _x(2, order=order)  # other values: a stale element would show
    got = op(x, axis=axis)
    assert got.ctypes.data == ptr
    assert cache.output_cache_info()["hits"] == info["hits"] + 1
    assert got.flags.c_contiguous == x.flags.c_contiguous and got.flags.writeable
    np.testing.assert_allclose(got, ref(x, axis=axis), rtol=2e-6, atol=1e-6)


def test_a_buffer_is_not_reused_while_a_view_of_it_lives(cache):
    x = _x(3)
    res = sk.softmax(x)
    keep = res[5:9, ::3]  # a view keeps the whole buffer
    want = keep.copy()
    del res
    assert cache.output_cache_info()["buffers"] == 0
    others = [sk.softmax(_x(4)), sk.log_softmax(x)]
    for o in others:
        assert not np.shares_memory(o, keep)
    np.testing.assert_array_equal(keep, want)
    del keep
    assert cache.output_cache_info()["buffers"] == 1


def test_an_output_of_exactly_the_limit_is_kept(cache):
    x = _x(9, shape=(2048, 1024))  # 8 MiB of float32, a 2 MiB multiple
    sk.set_output_cache(x.nbytes)
    res = sk.softmax(x)
    del res
    info = cache.output_cache_info()
    assert info["buffers"] == 1 and info["cached_bytes"] == x.nbytes
    sk.set_output_cache(x.nbytes - 1)
    assert cache.output_cache_info()["buffers"] == 0


def test_only_the_same_size_class_is_reused(cache):
    a = sk.softmax(_x(5))
    del a
    b = sk.softmax(_x(5, shape=(4096, 1025)))  # 16 MiB: another size class
    assert cache.output_cache_info()["buffers"] == 1
    c = sk.softmax(_x(6, shape=(1025, 2048)))  # same bytes as BIG, another shape: reused
    assert cache.output_cache_info()["buffers"] == 0
    assert b.shape == (4096, 1025) and c.shape == (1025, 2048)


def test_the_limit_bounds_the_cache_and_drops_the_oldest(cache):
    # one buffer of BIG float32 holds its size class, 8 MiB + 2 MiB (8.0078 MiB rounded
    # up to 2 MiB); its 2 MiB of alignment slack is never written and not counted
    size = -(-(BIG[0] * BIG[1] * 4) // _buffers.HUGE_PAGE) * _buffers.HUGE_PAGE
    assert size == 10 << 20
    outs = [sk.softmax(_x(k)) for k in range(3)]
    ptrs = [o.ctypes.data for o in outs]
    assert sk.set_output_cache(2 * size) == _buffers.DEFAULT_LIMIT
    while outs:  # released in order: the first one is dropped at the limit
        outs.pop(0)
    info = cache.output_cache_info()
    assert info["buffers"] == 2 and info["cached_bytes"] == 2 * size
    held = {r.ctypes.data + (-r.ctypes.data % _buffers.HUGE_PAGE) for r in cache.OUTPUTS.free}
    assert held == set(ptrs[1:])
    sk.set_output_cache(size - 1)  # smaller than a buffer: nothing kept
    assert cache.output_cache_info()["cached_bytes"] == 0
    res = sk.softmax(_x(8))
    del res
    assert cache.output_cache_info()["buffers"] == 0
    sk.set_output_cache(0)
    res = sk.softmax(_x(8))
    del res
    assert cache.output_cache_info()["cached_bytes"] == 0


def test_threads_never_share_a_live_output(cache):
    from concurrent.futures import ThreadPoolExecutor

    xs = [_x(10 + k) for k in range(4)]
    want = [ref_softmax(x) for x in xs]

    def work(k):
        for _ in range(6):
            got = sk.softmax(xs[k])
            np.testing.assert_allclose(got, want[k], rtol=2e-6, atol=1e-6)
        return got

    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(work, range(4)))
    for k in range(4):
        np.testing.assert_allclose(outs[k], want[k], rtol=2e-6, atol=1e-6)
        for j in range(k):
            assert not np.shares_memory(outs[k], outs[j])


@pytest.mark.parametrize(
    "text, want",
    [("0", 0), ("1048576", 1 << 20), ("64M", 64 << 20), ("1g", 1 << 30), ("512KiB", 512 << 10)],
)
def test_the_environment_variable(monkeypatch, text, want):
    assert _buffers._parse_limit(text) == want
    monkeypatch.setattr(_buffers.OUTPUTS, "_limit", None)  # read the environment again
    monkeypatch.setenv(_buffers.ENV, text)
    assert sk.output_cache_info()["limit"] == want


@pytest.mark.parametrize("text", ["lots", "-1", "12X", "M", "inf", "nan"])
def test_a_bad_environment_variable_is_named(monkeypatch, text):
    monkeypatch.setattr(_buffers.OUTPUTS, "_limit", None)
    monkeypatch.setenv(_buffers.ENV, text)
    with pytest.raises(ValueError, match=_buffers.ENV):
        sk.output_cache_info()
    with pytest.raises(ValueError, match=_buffers.ENV):  # at the call, not at release
        sk.softmax(np.zeros(BIG, dtype=np.float32))


def test_set_output_cache_rejects_bad_limits():
    with pytest.raises(ValueError, match="limit must be >= 0 bytes, got -1"):
        sk.set_output_cache(-1)
    for bad in ("1M", 1.5, True, None):
        with pytest.raises(TypeError, match="limit must be an int"):
            sk.set_output_cache(bad)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_while_the_lock_is_held_leaves_the_child_a_free_lock():
    held, release = threading.Event(), threading.Event()

    def hold():
        with _buffers.OUTPUTS.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        with warnings.catch_warnings():
            # Another test in this process may have imported JAX, whose threads make
            # CPython warn at every fork; this test forks on purpose, with its own
            # thread holding the lock, and checks the child itself.
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            warnings.filterwarnings(
                "ignore", "This process .* is multi-threaded", DeprecationWarning
            )
            pid = os.fork()
        if pid == 0:  # the child: the cache must still work
            code = 0 if sk.output_cache_info()["limit"] >= 0 else 1
            os._exit(code)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the output cache's lock")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        t.join()
