"""Tests of the streaming / out-of-core driver (stream_logsumexp, stream_softmax, ...)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxkit
from softmaxkit import Normalizer, stream_logsumexp, stream_normalizer, stream_softmax
from softmaxkit.drivers.stream import _blocks, parse_memory


def _arr(shape, dtype=np.float64, seed=0, order="C"):
    x = np.random.default_rng(seed).normal(size=shape) * 4
    return np.asarray(x, dtype=dtype, order=order)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None, 1])
def test_file_matches_dense(tmp_path, axis, order):
    x = _arr((7, 33, 20), order=order)
    x[1, 2, :] = -np.inf  # an all -inf row (for axis -1)
    x[2, 3, 4] = np.inf
    x[3, 0, 0] = np.nan
    src = tmp_path / "x.npy"
    np.save(src, x)
    for mem, workers in (("2K", 1), ("3K", 3), ("1G", None)):
        got = stream_logsumexp(src, axis=axis, memory=mem, workers=workers)
        want = softmaxkit.logsumexp(x, axis=axis)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
        for log, fn in ((False, softmaxkit.softmax), (True, softmaxkit.log_softmax)):
            dst = stream_softmax(
                src, tmp_path / "p.npy", axis=axis, log=log, memory=mem, workers=workers
            )
            # log: absolute error ~eps (1 + |value|), see Normalizer.log_softmax
            atol = 1e-14 if log else 1e-300
            np.testing.assert_allclose(np.load(dst), fn(x, axis=axis), rtol=1e-12, atol=atol)


def test_results_do_not_depend_on_workers(tmp_path):
    x = _arr((3, 5000))
    src = tmp_path / "x.npy"
    np.save(src, x)
    a = stream_normalizer(src, memory="4K", workers=1)
    b = stream_normalizer(src, memory="4K", workers=4)
    np.testing.assert_array_equal(a.s, b.s)  # merged in block order: bit-identical


def test_float32_where_temperature_ndarray_source(tmp_path):
    x = _arr((5, 300), np.float32)
    mask = np.random.default_rng(1).random((5, 300)) > 0.3
    mask[4] = False
    got = stream_logsumexp(x, temperature=1.7, where=mask, memory="2K")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, softmaxkit.logsumexp(x, temperature=1.7, where=mask), rtol=2e-6)
    dst = stream_softmax(x, tmp_path / "p.npy", temperature=1.7, where=mask, memory="2K")
    p = np.load(dst)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, softmaxkit.softmax(x, temperature=1.7, where=mask), rtol=2e-6)


def test_iterable_source(tmp_path):
    x = _arr((4, 3, 100))
    chunks = [x[:, :, a : a + 17] for a in range(0, 100, 17)]
    np.testing.assert_allclose(
        stream_logsumexp(iter(chunks), axis=2), softmaxkit.logsumexp(x), rtol=1e-13
    )
    st = stream_normalizer(chunks, axis=-1)
    assert isinstance(st, Normalizer) and st.shape == (4, 3)
    dst = stream_softmax(chunks, tmp_path / "p.npy", axis=-1, log=True)
    np.testing.assert_allclose(np.load(dst), softmaxkit.log_softmax(x), rtol=1e-12)
    # along axis 0
    rows = [x[a : a + 3] for a in range(0, 4, 3)]
    np.testing.assert_allclose(
        stream_logsumexp(rows, axis=0), softmaxkit.logsumexp(x, axis=0), rtol=1e-13
    )
    with pytest.raises(TypeError, match="re-iterable"):
        stream_softmax(iter(chunks), tmp_path / "q.npy")
    with pytest.raises(ValueError, match="does not concatenate"):
        stream_logsumexp([np.zeros((2, 3)), np.zeros((3, 3))])
    with pytest.raises(ValueError, match="empty"):
        stream_logsumexp([])


def test_zero_size(tmp_path):
    x = np.zeros((3, 0))
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(stream_logsumexp(tmp_path / "x.npy"), [-np.inf] * 3)
    out = stream_softmax(tmp_path / "x.npy", tmp_path / "p.npy")
    assert np.load(out).shape == (3, 0)


class _Boom:
    """Re-iterable chunks that raise on the second pass (the write pass)."""

    def __init__(self, exc):
        self.exc = exc
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        for i in range(4):
            if self.passes == 2 and i == 2:
                raise self.exc
            yield np.full((2, 5), float(i))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("disk gone")])
def test_interrupted_write_leaves_nothing(tmp_path, exc):
    dst = tmp_path / "out.npy"
    with pytest.raises(type(exc)):
        stream_softmax(_Boom(exc), dst)
    assert os.listdir(tmp_path) == []  # no target, no temporary
    # an existing target is left untouched
    np.save(dst, np.arange(3.0))
    with pytest.raises(type(exc)):
        stream_softmax(_Boom(exc), dst)
    np.testing.assert_array_equal(np.load(dst), np.arange(3.0))
    assert os.listdir(tmp_path) == ["out.npy"]


def test_no_space_is_a_clear_oserror(tmp_path, monkeypatch):
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    with pytest.raises(OSError, match="no space to write"):
        stream_softmax(tmp_path / "x.npy", tmp_path / "p.npy")
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_bad_inputs(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"not a valid \.npy"):
        stream_logsumexp(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        stream_logsumexp(tmp_path / "missing.npy")
    np.save(tmp_path / "c.npy", np.zeros(3, complex))
    with pytest.raises(TypeError, match="complex"):
        stream_logsumexp(tmp_path / "c.npy")
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    with open(tmp_path / "x.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "x.npy") - 8)
    with pytest.raises(ValueError, match="truncated"):
        stream_logsumexp(tmp_path / "x.npy")
    with pytest.raises(np.exceptions.AxisError):
        stream_logsumexp(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="memory"):
        stream_logsumexp(np.zeros((2, 3)), memory="lots")
    with pytest.raises(FileNotFoundError, match="directory"):
        stream_softmax(np.zeros((2, 3)), tmp_path / "no" / "p.npy")
    with pytest.raises(TypeError, match="src"):
        stream_logsumexp(3.0)


def test_parse_memory_and_blocks():
    assert parse_memory("512M") == 512 * 2**20
    assert parse_memory("1.5g") == int(1.5 * 2**30)
    assert parse_memory("64KiB") == 65536
    assert parse_memory(4096) == 4096
    with pytest.raises(ValueError, match="at least 1K"):
        parse_memory(10)
    # blocks tile the array exactly once, each within the limit when possible
    shape = (3, 5, 7)
    for order in "CF":
        for limit in (1, 4, 12, 40, 1000):
            seen = np.zeros(shape, int)
            for sl in _blocks(shape, order, limit):
                seen[sl] += 1
                assert seen[sl].size <= max(limit, 1)
            np.testing.assert_array_equal(seen, 1)


_CHILD = textwrap.dedent(
    """
    import resource, sys, numpy as np
    from softmaxkit import stream_softmax, stream_logsumexp
    from softmaxkit.drivers.stream import topk_to_file
    src, dst, small, limit_as = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stream_softmax(small, dst + ".warm.npy", memory="8M")   # compile + warm up
    stream_logsumexp(small, memory="8M")
    topk_to_file(small, dst + ".warm.npz", 2, -1, 1.0, "8M", False)

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    if limit_as:  # address space: what is mapped now plus limit_as, far below the file
        vm = status("VmSize") + limit_as
        resource.setrlimit(resource.RLIMIT_AS, (vm, vm))
    growth = []
    for run in (
        lambda: np.save(dst + ".lse.npy", stream_logsumexp(src, memory="8M")),
        lambda: stream_softmax(src, dst, memory="8M"),
        lambda: topk_to_file(src, dst + ".top.npz", 3, -1, 1.0, "8M", False),
    ):
        # reset the peak-RSS mark so that JIT compilation above does not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status("VmRSS")
        run()
        growth.append(status("VmHWM") - base)
    print(*growth)
    """
)


@pytest.mark.parametrize("limit_as", [0, 96 << 20], ids=["rss", "rlimit_as"])
def test_large_file_bounded_memory(tmp_path, limit_as):
    """Rows of 8M float32 (32 MB, 4x the 8 MB budget), 128 MB in all: peak RSS grows by
    less than the budget + 16 MB for logsumexp, softmax and topk (measured: 2-6 MB;
    with mappings it was up to 1.7 GB on larger files), and all three run under an
    address-space limit of 96 MB beyond what is mapped after warm-up."""
    rows, n = 4, 8_000_000
    src = tmp_path / "big.npy"
    x = np.lib.format.open_memmap(src, mode="w+", dtype=np.float32, shape=(rows, n))
    rng = np.random.default_rng(0)
    for i in range(rows):
        x[i] = rng.standard_normal(n, dtype=np.float32) * 3
    x[3, 7_654_321] = 40.0  # a dominant entry far from the start, in a late chunk
    x.flush()
    del x
    np.save(tmp_path / "small.npy", np.ones((2, 10), np.float32))
    dst = tmp_path / "out.npy"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(src),
            str(dst),
            str(tmp_path / "small.npy"),
            str(limit_as),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if res.returncode != 0 and "clear_refs" in res.stderr:
        pytest.skip("cannot reset the peak-RSS mark (/proc/self/clear_refs) here")
    assert res.returncode == 0, res.stderr
    budget = 8 << 20
    for g in map(int, res.stdout.split()):
        assert g < budget + (16 << 20), res.stdout
    if limit_as:
        return  # the results are checked once, in the "rss" run
    xm = np.load(src, mmap_mode="r")
    out = np.load(dst, mmap_mode="r")
    lse = np.load(str(dst) + ".lse.npy")
    with np.load(str(dst) + ".top.npz") as f:
        top_i, top_p = f["indices"], f["probabilities"]
    for i in range(rows):
        row = np.asarray(xm[i], dtype=np.float64)
        want = softmaxkit.logsumexp(row)
        np.testing.assert_allclose(lse[i], want, rtol=2e-6)
        p = np.asarray(out[i], dtype=np.float64)
        np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-4)
        np.testing.assert_allclose(p[::9973], np.exp(row[::9973] - want), rtol=1e-5)
        pw, iw = softmaxkit.topk_softmax(row, 3)  # the dense kernel, whole row in memory
        np.testing.assert_array_equal(top_i[i], iw)
        np.testing.assert_allclose(top_p[i], pw, rtol=1e-6)
