"""Tests of the online CLI plugin: softmax / logsumexp / topk on .npy files, and the demo."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import softmaxkit
from softmaxkit.cli import main


@pytest.fixture
def arr(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 500)).astype(np.float32) * 3
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, path


def test_softmax_and_log(arr, tmp_path, capsys):
    x, path = arr
    out = tmp_path / "p.npy"
    assert main(["softmax", str(path), "-o", str(out), "--memory", "4K", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out), softmaxkit.softmax(x), rtol=2e-6)
    assert main(["softmax", str(path), "-o", str(out), "--log", "--axis", "0",
                 "--temperature", "2"]) == 0  # fmt: skip
    np.testing.assert_allclose(
        np.load(out), softmaxkit.log_softmax(x, axis=0, temperature=2), rtol=2e-6, atol=1e-6
    )
    assert main(["softmax", str(path), "-o", str(out), "--axis", "0,1"]) == 0
    np.testing.assert_allclose(np.load(out), softmaxkit.softmax(x, axis=(0, 1)), rtol=2e-6)
    assert capsys.readouterr().err == ""  # not a TTY: no progress bar


def test_logsumexp_print_and_save(arr, tmp_path, capsys):
    x, path = arr
    assert main(["logsumexp", str(path), "--axis", "none"]) == 0
    printed = float(capsys.readouterr().out)
    np.testing.assert_allclose(printed, softmaxkit.logsumexp(x, axis=None), rtol=2e-6)
    out = tmp_path / "l.npy"
    assert main(["logsumexp", str(path), "-o", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), softmaxkit.logsumexp(x), rtol=2e-6)


def test_topk(arr, tmp_path):
    x, path = arr
    out = tmp_path / "t.npz"
    assert main(["topk", str(path), "-k", "5", "-o", str(out), "--memory", "4K"]) == 0
    with np.load(out) as f:
        p, i = f["probabilities"], f["indices"]
    pw, iw = softmaxkit.topk_softmax(x, 5)
    np.testing.assert_array_equal(i, iw)
    np.testing.assert_allclose(p, pw, rtol=1e-6)
    assert main(["topk", str(path), "-k", "2", "-o", str(out), "--axis", "0"]) == 0
    with np.load(out) as f:
        assert f["indices"].shape == (2, 500)


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_input_one_line_errors(arr, tmp_path, capsys):
    _x, path = arr
    out = str(tmp_path / "o.npy")
    assert main(["softmax", str(tmp_path / "missing.npy"), "-o", out]) == 2
    assert "does not exist" in _err(capsys)
    (tmp_path / "t.txt").write_text("1 2 3")
    assert main(["softmax", str(tmp_path / "t.txt"), "-o", out]) == 2
    assert "not a .npy" in _err(capsys)
    (tmp_path / "fake.npy").write_text("1 2 3")
    assert main(["logsumexp", str(tmp_path / "fake.npy")]) == 2
    assert "not a valid .npy" in _err(capsys)
    np.save(tmp_path / "c.npy", np.zeros(3, complex))
    assert main(["softmax", str(tmp_path / "c.npy"), "-o", out]) == 2
    assert "dtype complex128" in _err(capsys)
    assert main(["softmax", str(path), "-o", out, "--axis", "5"]) == 2
    assert "axis 5 is out of bounds" in _err(capsys)
    assert main(["topk", str(path), "-k", "501", "-o", str(tmp_path / "t.npz")]) == 2
    assert "k must satisfy" in _err(capsys)
    with pytest.raises(SystemExit) as e:  # an option error, from argparse: one line too
        main(["softmax", str(path), "-o", out, "--memory", "lots"])
    assert e.value.code == 2
    assert "memory" in _err(capsys)
    assert main(["softmax", str(path), "-o", str(tmp_path / "nodir" / "o.npy")]) == 2
    assert "does not exist" in _err(capsys)
    assert not os.path.exists(out)


def test_no_space(arr, tmp_path, capsys, monkeypatch):
    _, path = arr

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "o.npy"
    assert main(["softmax", str(path), "-o", str(out)]) == 2
    assert "no space to write" in _err(capsys)
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_demo_step_online(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "two halves, merged" in out
    assert "(0.7761150, 6.9828933)" in out  # the notebook's merged (m, d)
    assert "(-inf, 0.0)" in out


def test_headers_that_ask_for_too_much_are_refused_before_any_work(tmp_path):
    # NumPy's header reader accepts negative dimensions, and a file of zero-size rows
    # holds no data however many rows its header claims: stream_logsumexp looped for
    # minutes on (2**31, -1) and, on (2**31, 0), allocated a 32 GiB state that the OOM
    # killer ended while it was filled (a crashed test worker, tests/test_cli_fuzz.py)
    import math
    import os

    from softmaxkit import stream_logsumexp

    def npy(shape):
        p = tmp_path / f"h{len(list(tmp_path.iterdir()))}.npy"
        with open(p, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": shape}
            )
        return p

    with pytest.raises(ValueError, match=r"negative dimension in shape \(2147483648, -1\)"):
        stream_logsumexp(npy((2**31, -1)))
    phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    rows = 2 ** math.ceil(math.log2(phys / 24 + 1))  # their state and result exceed RAM
    with pytest.raises(MemoryError, match=f"state and result of {rows} rows"):
        stream_logsumexp(npy((rows, 0)))
    # within reach, zero-size rows still give -inf rows
    np.testing.assert_array_equal(stream_logsumexp(npy((5, 0))), np.full(5, -np.inf))
    assert main(["logsumexp", str(npy((rows, 0)))]) == 2
