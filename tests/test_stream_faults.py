"""Files and faults of the streaming driver and the CLI (issue 18, items 13-16):
special output targets, signals and stale temporaries, truncated inputs, a full disk,
big-endian files, top-k over rows longer than the budget."""

from __future__ import annotations

import dis
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import softmaxkit
from softmaxkit import stream_logsumexp, stream_softmax
from softmaxkit._core import npyio as _npyio
from softmaxkit.cli import main
from softmaxkit.cli.core import Terminated
from softmaxkit.drivers import stream as _stream


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def x_path(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 300))
    np.save(tmp_path / "x.npy", x)
    return x, tmp_path / "x.npy"


# -- output targets (item 13) --------------------------------------------------------


def _targets(tmp_path):
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    real = tmp_path / "real.npy"
    np.save(real, np.arange(3.0))
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    dangling = tmp_path / "dangling.npy"
    dangling.symlink_to(tmp_path / "nowhere.npy")
    sock_path = tmp_path / "s.npy"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    return sock, {
        "FIFO": fifo,
        "symbolic link": link,
        "symbolic link ": dangling,
        "socket": sock_path,
        "character device": Path(os.devnull),
    }


@pytest.mark.parametrize(
    "cmd", ["softmax", "logsumexp", "topk", "int8", "sample", "bench-json", "bench-md", "bench-png"]
)
def test_special_output_targets_are_refused_untouched(x_path, tmp_path, capsys, cmd):
    """-o onto a FIFO, a symlink (live or dangling), a socket or /dev/null: exit 2 naming
    the path, and the node is still what it was (the refusal comes before any write;
    the bench's before any timing)."""
    if cmd == "bench-png":
        pytest.importorskip("matplotlib")
    _, src = x_path
    sock, targets = _targets(tmp_path)
    try:
        for kind, target in targets.items():
            before = os.lstat(target)
            argv = {
                "softmax": ["softmax", str(src), "-o", str(target)],
                "logsumexp": ["logsumexp", str(src), "-o", str(target)],
                "topk": ["topk", str(src), "-k", "2", "-o", str(target)],
                "int8": ["int8", "1", "2", "--input-scale", "0.1", "-o", str(target)],
                "sample": ["sample", str(src), "-o", str(target)],
                "bench-json": ["bench", "--quick", "--json", str(target)],
                "bench-md": ["bench", "--quick", "--markdown", str(target)],
                "bench-png": ["bench", "--quick", "--plot", str(target)],
            }[cmd]
            assert main(argv) == 2, kind
            line = _one_line(capsys.readouterr().err)
            assert str(target) in line, line
            # sample names the .npy rule first for /dev/null; every other refusal its kind
            assert kind.strip() in line or (cmd == "sample" and "a .npy file" in line), line
            after = os.lstat(target)
            assert (after.st_mode, after.st_ino, after.st_rdev) == (
                before.st_mode,
                before.st_ino,
                before.st_rdev,
            )
        np.testing.assert_array_equal(np.load(tmp_path / "real.npy"), np.arange(3.0))
        leftovers = [p for p in os.listdir(tmp_path) if _npyio.TMP_TAG in p]
        assert leftovers == []
    finally:
        sock.close()


def test_special_output_targets_are_refused_by_the_api(tmp_path):
    os.mkfifo(tmp_path / "f.npy")
    with pytest.raises(ValueError, match="FIFO, not a regular file"):
        stream_softmax(np.zeros((2, 3)), tmp_path / "f.npy")
    (tmp_path / "l.npy").symlink_to(tmp_path / "t.npy")
    with pytest.raises(ValueError, match="symbolic link"):
        stream_softmax(np.zeros((2, 3)), tmp_path / "l.npy")
    assert not (tmp_path / "t.npy").exists()


# -- input files ---------------------------------------------------------------------


def test_fifo_input_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading waits for a writer; the reader must not (it used to
    hang forever).  A real subprocess, so a regression is a timeout, not a hung suite."""
    os.mkfifo(tmp_path / "in.npy")
    res = subprocess.run(
        [sys.executable, "-m", "softmaxkit", "logsumexp", str(tmp_path / "in.npy")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert "is a FIFO, not a regular file" in _one_line(res.stderr)


def test_truncated_while_streaming_is_a_clear_error(x_path, tmp_path, monkeypatch):
    """The input shrinks after the first block is read: a ValueError naming the file
    (through a mapping this was SIGBUS, exit 135)."""
    _, src = x_path
    real_read = _npyio.NpyIn.read
    calls = []

    def read_then_truncate(self, start, count):
        out = real_read(self, start, count)
        if not calls:
            os.truncate(self.path, 200)
        calls.append(start)
        return out

    monkeypatch.setattr(_npyio.NpyIn, "read", read_then_truncate)
    with pytest.raises(ValueError, match="shrank while it was being read"):
        stream_logsumexp(src, memory="4K", workers=1)
    np.save(src, np.zeros((5, 300)))
    calls.clear()
    with pytest.raises(ValueError, match="shrank"):
        stream_softmax(src, tmp_path / "o.npy", memory="4K", workers=1)
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


@pytest.mark.parametrize("cmd", ["softmax", "logsumexp", "topk"])
def test_big_endian_file_streams_right(tmp_path, cmd):
    x = np.random.default_rng(1).normal(size=(4, 37)) * 5
    np.save(tmp_path / "be.npy", x.astype(">f8"))
    np.save(tmp_path / "be4.npy", x.astype(">f4"))
    if cmd == "softmax":
        stream_softmax(tmp_path / "be.npy", tmp_path / "p.npy", memory="2K")
        np.testing.assert_allclose(np.load(tmp_path / "p.npy"), softmaxkit.softmax(x), rtol=1e-13)
        stream_softmax(tmp_path / "be4.npy", tmp_path / "p4.npy", memory="2K")
        got = np.load(tmp_path / "p4.npy")
        assert got.dtype == np.float32
        want = softmaxkit.softmax(x.astype(np.float32))
        np.testing.assert_allclose(got, want, rtol=2e-6)
    elif cmd == "logsumexp":
        got = stream_logsumexp(tmp_path / "be.npy", memory="2K")
        np.testing.assert_allclose(got, softmaxkit.logsumexp(x), rtol=1e-14)
    else:
        assert (
            main(["topk", str(tmp_path / "be.npy"), "-k", "3", "-o", str(tmp_path / "t.npz")]) == 0
        )
        p, i = softmaxkit.topk_softmax(x, 3)
        with np.load(tmp_path / "t.npz") as f:
            np.testing.assert_array_equal(f["indices"], i)
            np.testing.assert_allclose(f["probabilities"], p, rtol=1e-13)


def test_big_endian_arrays_and_chunks_stream_right(tmp_path):
    """Big-endian in-memory sources (an array, an iterable of chunks) are converted
    block by block too; they used to reach the kernels and fail Numba typing."""
    x = np.random.default_rng(3).normal(size=(3, 50)) * 4
    be = x.astype(">f8")
    np.testing.assert_allclose(stream_logsumexp(be, memory="1K"), softmaxkit.logsumexp(x))
    chunks = [be[:, :20], be[:, 20:]]
    np.testing.assert_allclose(stream_logsumexp(chunks), softmaxkit.logsumexp(x), rtol=1e-14)
    for src in (be, chunks):
        out = stream_softmax(src, tmp_path / "p.npy", memory="1K")
        got = np.load(out)
        assert got.dtype == np.float64 and got.dtype.isnative
        np.testing.assert_allclose(got, softmaxkit.softmax(x), rtol=1e-13)


# -- top-k over rows longer than a block -----------------------------------------------


@pytest.mark.parametrize("memory", ["2K", "1M"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_topk_rows_longer_than_the_budget_match_dense(tmp_path, axis, memory):
    """topk reads rows in column chunks when they exceed the budget or are strided in
    the file, else blocks of whole rows: either way the same indices (ties by index,
    NaN first, +inf rows) and probabilities as the dense kernel."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4000, 5)).astype(np.float32)
    x[0, 17, 0] = x[0, 3000, 0] = 9.0  # a tie across chunks
    x[1, :, 2] = 1.0  # all equal: indices 0..k-1
    x[2, 2500, 1] = np.nan
    x[2, 100, 3] = x[2, 3900, 3] = np.inf
    x[1, :, 4] = -np.inf
    if axis == 0:  # the long axis first
        x = np.ascontiguousarray(np.moveaxis(x, 1, 0))
    path = tmp_path / "x.npy"
    np.save(path, x)
    k = 4
    _stream.topk_to_file(path, tmp_path / "t.npz", k, axis, 1.5, memory, False)
    pw, iw = softmaxkit.topk_softmax(x, k, axis=axis, temperature=1.5)
    with np.load(tmp_path / "t.npz") as f:
        np.testing.assert_array_equal(f["indices"], iw)
        np.testing.assert_allclose(f["probabilities"], pw, rtol=1e-6, atol=1e-30)


# -- full disk (item 16) ----------------------------------------------------------------


def test_no_space_is_reported_before_pass_1(x_path, tmp_path, monkeypatch):
    """The docs promise the full-disk error "before any work": the output is reserved
    before the state pass (it used to be reserved after pass 1)."""
    _, src = x_path

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_pass(*a, **k):
        raise AssertionError("pass 1 ran before the output was reserved")

    monkeypatch.setattr(os, "posix_fallocate", full)
    monkeypatch.setattr(_stream, "_state_pass", no_pass)
    with pytest.raises(OSError, match="no space to write"):
        stream_softmax(src, tmp_path / "o.npy", axis=0)  # axis 0: two passes
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
def test_one_pass_equals_two_passes_bitwise(tmp_path, monkeypatch, order, log):
    """Blocks of whole rows are normalised in one pass with their own state; that state
    is the rows' final state exactly, so the output is bit-identical to two passes."""
    x = np.asarray(np.random.default_rng(4).normal(size=(7, 9, 40)) * 30, order=order)
    x[2, 3, 5] = np.inf
    x[4, 1, :] = -np.inf
    x[5, 0, 7] = np.nan
    path = tmp_path / "x.npy"
    np.save(path, x)
    axis = -1 if order == "C" else 0
    where = np.random.default_rng(5).random(x.shape) > 0.2
    for w in (None, where):
        one = np.load(stream_softmax(path, tmp_path / "a.npy", axis=axis, log=log, where=w,
                                     memory="64K", temperature=0.7))  # fmt: skip
        with monkeypatch.context() as mp:
            mp.setattr(_stream, "_whole_rows", lambda *a: False)
            two = np.load(stream_softmax(path, tmp_path / "b.npy", axis=axis, log=log,
                                         where=w, memory="64K", temperature=0.7))  # fmt: skip
        np.testing.assert_array_equal(one, two)
        dense = (softmaxkit.log_softmax if log else softmaxkit.softmax)(
            x, axis=axis, where=w, temperature=0.7
        )
        np.testing.assert_allclose(one, dense, rtol=1e-12, atol=1e-15)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and mount(2); skipped elsewhere)."""
    d = tmp_path / "tfs"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(d)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_real_full_disk_every_command(small_tmpfs, x_path, tmp_path, capsys):
    """On a real 1 MiB file system: a 2 MB softmax output fails at once with exit 2 and
    leaves nothing; with the disk filled, logsumexp -o, topk and int8 -o leave nothing
    either (int8 --out used to leave a 0-byte file)."""
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((2, 125_000)))
    assert main(["softmax", str(big), "-o", str(small_tmpfs / "o.npy")]) == 2
    assert "no space to write" in _one_line(capsys.readouterr().err)
    assert os.listdir(small_tmpfs) == []
    with open(small_tmpfs / "filler", "wb") as f:  # fill the disk
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    _, src = x_path
    runs = [
        ["logsumexp", str(src), "-o", str(small_tmpfs / "l.npy")],
        ["topk", str(src), "-k", "2", "-o", str(small_tmpfs / "t.npz")],
        ["int8", "1", "2", "3", "--input-scale", "0.1", "-o", str(small_tmpfs / "i.npy")],
        ["int8", "1", "2", "3", "--input-scale", "0.1", "--out", str(small_tmpfs / "i.npy")],
    ]
    for argv in runs:
        assert main(argv) == 2, argv
        line = _one_line(capsys.readouterr().err)
        assert "No space left on device" in line or "no space" in line, line
        assert os.listdir(small_tmpfs) == ["filler"], argv


# -- signals and stale temporaries (item 14) ------------------------------------------


def _start_slow_softmax(tmp_path):
    x = np.lib.format.open_memmap(tmp_path / "in.npy", mode="w+", dtype=np.float64,
                                  shape=(40, 100_000))  # fmt: skip
    x[:] = 1.0
    del x
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "softmaxkit",
            "softmax",
            str(tmp_path / "in.npy"),
            "-o",
            str(tmp_path / "out.npy"),
            "--memory",
            "16K",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        temps = [p for p in os.listdir(tmp_path) if _npyio.TMP_TAG in p]
        if temps:
            return proc, temps
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no temporary file appeared within 60 s")


def test_sigterm_removes_the_temporary_and_exits_143(tmp_path):
    proc, temps = _start_slow_softmax(tmp_path)
    assert temps[0].startswith(f".out.npy.{_npyio.TMP_TAG}.{proc.pid}.")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated" in _one_line(err)
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def test_sigkill_leftover_is_found_and_cleaned(tmp_path, capsys):
    proc, temps = _start_slow_softmax(tmp_path)
    # while its process runs, the temporary is not stale: clean keeps it
    assert main(["clean", str(tmp_path)]) == 0
    assert "kept" in capsys.readouterr().out
    assert temps[0] in os.listdir(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert temps[0] in os.listdir(tmp_path)  # SIGKILL cannot be caught: the file stays
    assert main(["clean", str(tmp_path)]) == 0
    assert f"removed {tmp_path / temps[0]}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["in.npy"]


def test_next_write_removes_stale_temporaries_of_its_target(x_path, tmp_path):
    _, src = x_path
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".p.npy.{_npyio.TMP_TAG}.{pid}.0123abcd"
    live = tmp_path / f".p.npy.{_npyio.TMP_TAG}.{os.getpid()}.0123abcd"
    other = tmp_path / f".q.npy.{_npyio.TMP_TAG}.{pid}.0123abcd"
    lookalike = tmp_path / ".p.npy.softmaxkit-tmp.notapid.0123abcd"
    for p in (stale, live, other, lookalike):
        p.write_bytes(b"x" * 100)
    stream_softmax(src, tmp_path / "p.npy")
    names = set(os.listdir(tmp_path))
    assert stale.name not in names  # dead pid, same target: removed
    assert {live.name, other.name, lookalike.name} <= names  # live / other target / not ours
    removed, kept = _npyio.clean(tmp_path)
    assert removed == [other] and kept == [live]


def test_clean_of_a_non_directory_is_one_line(tmp_path, capsys):
    assert main(["clean", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in _one_line(capsys.readouterr().err)


# -- an interrupt at every bytecode of a write ----------------------------------------

_WRITERS = {"softmax_to_file", "topk_to_file", "create", "commit", "abort", "write_atomic",
            "_remove_temp"}  # fmt: skip


_NOP = dis.opmap["NOP"]


def _interrupted_at(k, call):
    """Run ``call()`` with KeyboardInterrupt raised at the ``k``-th bytecode executed
    in the main thread by the functions that create, rename or remove an output's
    temporary: a signal's Python handler runs between two bytecodes of the main
    thread, so these are all the places one can land (a ``NOP``, a line marker that
    CPython leaves outside every exception handler, is skipped: the interpreter never
    runs a signal handler there).  Returns whether ``call`` finished without the
    interrupt (its result, or False if it raised it)."""
    n = 0

    def local(frame, event, arg):
        nonlocal n
        if event == "opcode" and frame.f_code.co_code[frame.f_lasti] != _NOP:
            n += 1
            if n == k:
                raise KeyboardInterrupt
        return local

    def scope(frame, event, arg):
        code = frame.f_code
        if code.co_name in _WRITERS and code.co_filename.endswith(("npyio.py", "stream.py")):
            frame.f_trace_opcodes = True
            return local
        return None

    sys.settrace(scope)
    try:
        return call()
    except KeyboardInterrupt:
        return False
    finally:
        sys.settrace(None)


def _temporaries(d):
    return [p for p in os.listdir(d) if _npyio.TMP_TAG in p]


# An interrupt between ``open`` and the binding of its result leaves the file object to
# the garbage collector, which closes it with a ResourceWarning; the file on disk is
# removed all the same (asserted below).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("api", ["cli-softmax", "cli-topk", "library-chunks"])
def test_an_interrupt_at_any_bytecode_leaves_no_temporary(tmp_path, api):
    """Every position an interrupt can land in, one run each: no temporary is left,
    and none is still recorded as live.  The CLI removes what is live on Ctrl-C; the
    library's own handlers must leave nothing for the exit handler at all."""
    x = np.random.default_rng(1).normal(size=(3, 40))
    src = tmp_path / "x.npy"
    np.save(src, x)
    if api == "cli-softmax":
        argv = ["softmax", str(src), "-o", str(tmp_path / "o.npy"), "--quiet"]
    elif api == "cli-topk":
        argv = ["topk", str(src), "-k", "2", "-o", str(tmp_path / "t.npz")]

    def call():
        if api == "library-chunks":  # shape known only after pass 1: created later
            stream_softmax([x[:, :25], x[:, 25:]], tmp_path / "o.npy", progress=False)
            return True
        rc = main(argv)
        assert rc in (0, 130)
        return rc == 0

    call()  # compiled, and the target exists as it will for most runs below
    k = 0
    while True:
        k += 1
        finished = _interrupted_at(k, call)
        assert _temporaries(tmp_path) == [], (api, k)
        assert not _npyio._LIVE, (api, k)
        if finished:
            break
    assert k > 100, k  # the interrupt really landed at every one of them


@pytest.mark.parametrize("exc, code", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_the_cli_removes_what_a_writer_left_live(x_path, tmp_path, monkeypatch, exc, code):
    """The net under the writers' own handlers: a temporary still recorded as live when
    Ctrl-C or SIGTERM ends a command is removed (here a writer whose abort forgot it)."""
    _, src = x_path

    def interrupted(*args):
        raise exc

    monkeypatch.setattr(_npyio.NpyOut, "abort", _npyio.NpyOut._close)  # the file stays
    monkeypatch.setattr(_npyio.NpyOut, "write_block", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["softmax", str(src), "-o", str(out / "o.npy"), "--quiet"]) == code
    assert os.listdir(out) == [] and not _npyio._LIVE


def test_a_forked_child_never_removes_its_parents_temporary(tmp_path):
    out = _npyio.NpyOut(tmp_path / "o.npy", (2, 3), np.float64)
    out.create()
    try:
        with warnings.catch_warnings():  # 3.12+: fork of a multi-threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: its exit handler (remove_live) must find nothing of ours
            _npyio.remove_live()
            os._exit(0 if not _npyio._LIVE else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _temporaries(tmp_path) == [out.tmp.name]
    finally:
        out.abort()
    assert _temporaries(tmp_path) == [] and not _npyio._LIVE
