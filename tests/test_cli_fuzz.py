"""CLI fuzz (issue 18, item 12): malformed ``.npy`` headers, hostile paths and option
values never give a traceback or a hang.  Every run must exit 0, or exit 2 with
exactly one line on stderr, within a time limit.

Runs go in-process through ``cli.main(argv)`` (fast), plus a few real subprocesses:
a pseudo-terminal without tqdm (item 11) and the FIFO case in
``test_stream_faults.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from softmaxkit.cli import main

_LIMIT_S = 30  # per run: a hang (FIFO, a huge loop) fails here instead of stalling CI

COMMANDS = ("softmax", "logsumexp", "topk", "int8")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit status, stdout, stderr), SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(_LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
    except _Timeout:
        pytest.fail(f"softmaxkit {argv} ran over {_LIMIT_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue()


def assert_clean(argv, rc, err, allow_ok=True):
    assert "Traceback" not in err, (argv, err)
    if rc == 0 and allow_ok:
        return
    assert rc == 2, (argv, rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (argv, err)
    assert "error" in lines[0], (argv, err)


def _argv(cmd: str, path: str, out_dir: Path) -> list[str]:
    if cmd == "softmax":
        return ["softmax", path, "-o", str(out_dir / "o.npy"), "--memory", "4K", "-q"]
    if cmd == "logsumexp":
        return ["logsumexp", path, "--memory", "4K", "-q"]
    if cmd == "topk":
        return ["topk", path, "-k", "1", "-o", str(out_dir / "t.npz"), "--memory", "4K"]
    return ["int8", "--npy", path, "--input-scale", "0.1", "-o", str(out_dir / "i.npy")]


# -- malformed headers ---------------------------------------------------------------

_DESCRS = ["<f8", ">f8", "<f4", ">f4", "<f2", "|i1", "<i2", ">i2", "|u1", "|b1", "|O",
           "<c16", "<U3", "|V8", "<m8", "zz", "<f16", "[('a', '<f4')]"]  # fmt: skip
_SHAPE_INTS = st.one_of(
    st.integers(0, 5),
    st.sampled_from([-1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**30]),
)


def _header(descr: str, fortran, shape) -> bytes:
    text = f"{{'descr': {descr if descr.startswith('[') else repr(descr)}, "
    text += f"'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    pad = -(len(text) + 11) % 64
    body = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


@st.composite
def npy_files(draw) -> bytes:
    """A .npy file with a random (often malformed) header and a random data length;
    sometimes a valid header cut short or with bytes flipped."""
    descr = draw(st.sampled_from(_DESCRS))
    fortran = draw(st.sampled_from([False, True, "x", 1]))
    shape = draw(
        st.one_of(
            st.lists(_SHAPE_INTS, max_size=4).map(tuple),
            st.sampled_from([(), "x", (1.5,), [2, 2], None]),
        )
    )
    head = _header(descr, fortran, shape)
    data = draw(st.binary(max_size=96))
    blob = head + data
    cut = draw(st.one_of(st.none(), st.integers(0, len(blob))))
    if cut is not None:
        blob = blob[:cut]
    flips = draw(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3))
    b = bytearray(blob)
    for pos, val in flips:
        if pos < len(b):
            b[pos] = val
    return bytes(b)


@settings(
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(blob=npy_files(), cmd=st.sampled_from(COMMANDS))
@example(blob=_header("<f8", False, (2**64,)), cmd="softmax")  # OverflowError before
@example(blob=_header("<f8", False, (2**64,)), cmd="logsumexp")
@example(blob=_header("<f8", False, (2**64,)), cmd="topk")
@example(blob=_header("|i1", False, (2**64,)), cmd="int8")
@example(blob=b"", cmd="int8")  # EOFError before
@example(blob=_header("<f8", False, ()) + b"\0" * 8, cmd="softmax")  # 0-d: item assignment
@example(blob=_header(">f8", False, (2, 3)) + b"\1" * 48, cmd="softmax")  # big-endian
@example(blob=_header(">i2", False, (2, 3)) + b"\1" * 12, cmd="int8")
@example(blob=_header("<f8", False, (2**31, -1)), cmd="logsumexp")  # looped for minutes
@example(blob=_header("<f8", False, (2**40, 0)), cmd="logsumexp")  # a state beyond RAM
def test_malformed_npy_headers_exit_2_in_one_line(tmp_path, blob, cmd):
    path = tmp_path / "in.npy"
    path.write_bytes(blob)
    argv = _argv(cmd, str(path), tmp_path)
    rc, _, err = run_cli(argv)
    assert_clean(argv, rc, err)


# -- hostile paths -------------------------------------------------------------------


@pytest.fixture
def hostile_paths(tmp_path):
    d = tmp_path / "paths"
    d.mkdir()
    (d / "dir.npy").mkdir()
    os.mkfifo(d / "fifo.npy")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.npy"))
    np.save(d / "ok.npy", np.arange(6, dtype=np.int8).reshape(2, 3))
    (d / "link.npy").symlink_to(d / "ok.npy")
    (d / "dangling.npy").symlink_to(d / "nowhere.npy")
    (d / "loop.npy").symlink_to(d / "loop.npy")
    (d / "unreadable.npy").write_bytes(b"\x93NUMPY")
    os.chmod(d / "unreadable.npy", 0)
    (d / "file").write_bytes(b"")
    paths = {
        "missing": d / "missing.npy",
        "dir": d / "dir.npy",
        "fifo": d / "fifo.npy",
        "socket": d / "sock.npy",
        "char device": Path(os.devnull),
        "proc file": Path("/proc/self/status"),
        "dangling": d / "dangling.npy",
        "symlink loop": d / "loop.npy",
        "unreadable": d / "unreadable.npy",
        "under a file": d / "file" / "x.npy",
        "empty name": Path(""),
        "nul byte": "x\0.npy",
        "long name": d / ("x" * 300 + ".npy"),
        "symlink to ok": d / "link.npy",
    }
    yield paths
    sock.close()


def test_hostile_input_paths(hostile_paths, tmp_path):
    """14 kinds of path x 4 commands, as the input."""
    tried = 0
    for kind, p in hostile_paths.items():
        for cmd in COMMANDS:
            argv = _argv(cmd, str(p), tmp_path)
            rc, _, err = run_cli(argv)
            assert_clean(argv, rc, err, allow_ok=kind in ("symlink to ok", "unreadable"))
            tried += 1
    assert tried == 56


def test_hostile_output_paths(hostile_paths, tmp_path):
    """The same 14 kinds of path x 4 commands, as the output: refused (or, for a missing
    or an unreadable regular file, written); the special files are still what they were."""
    src = tmp_path / "x.npy"
    np.save(src, np.arange(6.0).reshape(2, 3))
    q = tmp_path / "q.npy"
    np.save(q, np.arange(6, dtype=np.int8).reshape(2, 3))
    replaceable = ("missing", "unreadable")  # regular files (or none): written
    before = {
        k: os.lstat(p)
        for k, p in hostile_paths.items()
        if isinstance(p, Path) and str(p) and os.path.lexists(p) and k not in replaceable
    }
    for kind, p in hostile_paths.items():
        for cmd in COMMANDS:
            argv = {
                "softmax": ["softmax", str(src), "-o", str(p), "-q"],
                "logsumexp": ["logsumexp", str(src), "-o", str(p), "-q"],
                "topk": ["topk", str(src), "-k", "1", "-o", str(p), "-q"],
                "int8": ["int8", "--npy", str(q), "--input-scale", "0.1", "-o", str(p)],
            }[cmd]
            rc, _, err = run_cli(argv)
            assert_clean(argv, rc, err, allow_ok=kind in replaceable)
    for k, st0 in before.items():
        st1 = os.lstat(hostile_paths[k])
        assert (st1.st_mode, st1.st_ino) == (st0.st_mode, st0.st_ino), k


# -- options -------------------------------------------------------------------------

_MEMORY = st.one_of(
    st.text(alphabet="0123456789.-+eEkKmMgGtTiIbB xy", max_size=12),
    st.integers(-(2**70), 2**70).map(str),
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**6),
              st.sampled_from(["", "K", "M", "G", "T", "KB", "MB", "GiB", "TB", "P", "b"])),
    st.just("9" * 400),
)  # fmt: skip
_NUM = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e-320", "1e308", "x", ""]),
)
_AXIS = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(["none", "0,1", "1,1", ",", "a"]))


@settings(
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cmd=st.sampled_from(COMMANDS[:3]),
    memory=_MEMORY,
    workers=_NUM,
    temperature=_NUM,
    axis=_AXIS,
    k=_NUM,
)
@example(cmd="softmax", memory="1T", workers="1", temperature="1", axis="-1", k="1")
@example(cmd="softmax", memory="8M", workers="100", temperature="1", axis="-1", k="1")
@example(cmd="logsumexp", memory="9" * 400, workers="1", temperature="1", axis="-1", k="1")
def test_option_values(tmp_path, cmd, memory, workers, temperature, axis, k):
    src = tmp_path / "x.npy"
    if not src.exists():
        np.save(src, np.random.default_rng(0).normal(size=(3, 4, 5)))
    argv = [cmd, str(src), "--memory", memory, "--workers", workers,
            "--temperature", temperature, "--axis", axis, "-q"]  # fmt: skip
    if cmd == "topk":
        argv += ["-k", k]
    if cmd != "logsumexp":
        argv += ["-o", str(tmp_path / ("t.npz" if cmd == "topk" else "o.npy"))]
    rc, _, err = run_cli(argv)
    assert_clean(argv, rc, err)


def test_memory_suffixes_are_documented_units(tmp_path):
    from softmaxkit.drivers.stream import parse_memory

    assert parse_memory("512M") == parse_memory("512MiB") == parse_memory("512m") == 512 << 20
    assert parse_memory("512MB") == 512 * 10**6  # decimal: was read as MiB silently
    assert parse_memory("2G") == 2 << 30 and parse_memory("2GB") == 2 * 10**9
    assert parse_memory("64KiB") == parse_memory("64K") == 65536
    assert parse_memory("1.5K") == 1536 and parse_memory("4096B") == 4096
    for bad in ["9" * 400, "2000P", "1e3", "IB", "12 XB", 2**61]:
        with pytest.raises(ValueError, match="memory must"):
            parse_memory(bad)
    with pytest.raises(ValueError, match="at most 2\\*\\*60"):
        from softmaxkit import stream_softmax

        stream_softmax(np.zeros(3), tmp_path / "never.npy", memory="9" * 400)
    assert os.listdir(tmp_path) == []


def test_workers_and_memory_bounds_in_the_cli(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3)))
    cores = len(os.sched_getaffinity(0))
    for opt, val, msg in [
        ("--workers", str(cores + 1), "usable cores"),
        ("--workers", "0", "usable cores"),
        ("--memory", "1024T", "more than this machine's memory"),
        ("--memory", "512", "at least 1K"),
    ]:
        argv = ["logsumexp", str(tmp_path / "x.npy"), opt, val]
        rc, _, err = run_cli(argv)
        assert rc == 2 and msg in err, err
        assert_clean(argv, rc, err)
    rc, _, err = run_cli(["logsumexp", str(tmp_path / "x.npy"), "--workers", str(cores)])
    assert rc == 0 and err == ""


def test_bench_help_lists_every_family():
    from softmaxkit.bench.core import _BENCH_FAMILIES

    rc, out, _ = run_cli(["bench", "--help"])
    assert rc == 0
    text = " ".join(out.split())
    for mod in _BENCH_FAMILIES:
        assert mod.rsplit(".", 1)[-1] in text
    assert "dask (opt-in)" in text


def test_int8_takes_o_output_and_out(tmp_path):
    for flag in ("-o", "--output", "--out"):
        dst = tmp_path / f"y{flag.strip('-')}.npy"
        rc, _, err = run_cli(["int8", "1", "2", "3", "--input-scale", "0.1", flag, str(dst)])
        assert rc == 0, err
        np.testing.assert_array_equal(np.load(dst), [[-51, -43, -34]])


# -- a terminal without tqdm (item 11) -------------------------------------------------


def test_streaming_commands_in_a_terminal_without_tqdm(tmp_path):
    """A plain install has no tqdm; on a terminal the commands drew a tqdm bar and
    crashed with ModuleNotFoundError.  Now: a text progress line.  stderr is a real
    pseudo-terminal; tqdm is made unimportable by a shim package first on the path."""
    shim = tmp_path / "shim" / "tqdm"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tqdm'\", name='tqdm')\n"
    )
    src = tmp_path / "x.npy"
    x = np.random.default_rng(0).normal(size=(4, 1000))
    np.save(src, x)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "shim"), *sys.path]))
    for argv in (
        ["softmax", str(src), "-o", str(tmp_path / "o.npy"), "--memory", "4K"],
        ["logsumexp", str(src), "--memory", "4K"],
        ["topk", str(src), "-k", "2", "-o", str(tmp_path / "t.npz"), "--memory", "4K"],
    ):
        try:
            master, slave = pty.openpty()
        except OSError as exc:  # no pseudo-terminals in this sandbox
            pytest.skip(f"cannot open a pseudo-terminal: {exc}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "softmaxkit", *argv],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.stdout.read()
        proc.stdout.close()
        rc = proc.wait(timeout=120)
        os.close(master)
        term = b"".join(chunks).decode(errors="replace")
        assert rc == 0, term
        assert "Traceback" not in term and "tqdm" not in term, term
        assert "blocks" in term, term  # the built-in progress line was drawn
    want = np.exp(x - np.log(np.exp(x).sum(-1, keepdims=True)))
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), want, rtol=1e-12)
