"""``.npy`` files for the streaming driver and the CLI: positional reads and writes,
atomic outputs, stale temporaries, progress lines.

Reading.  Input files are read with ``preadv`` into a fresh buffer per block, never
memory-mapped: resident memory is then the blocks in flight (bounded by the budget)
whatever the row length, and a file truncated while it is read gives a short read,
reported as a ``ValueError`` naming the file, instead of a ``SIGBUS`` on a mapped page
(``tests/test_stream_faults.py::test_truncated_while_streaming_is_a_clear_error``).
Only regular files are accepted; the file is opened with ``O_NONBLOCK`` and checked
with ``fstat`` before anything is read, so a FIFO or a device never blocks the call.
Big-endian (non-native) files are converted block by block.

Writing.  An output goes to a temporary file beside the target named
``.NAME.softmaxkit-tmp.PID.RAND``; its space is reserved (``posix_fallocate``) before
any work, blocks are written with ``pwritev``, then ``fsync`` and ``os.replace``.
Targets that exist and are not regular files (devices, FIFOs, sockets, directories)
and symbolic links are refused: renaming over them would replace the node or the link
itself.  A temporary whose PID is no longer running is stale (a run killed by SIGKILL);
``softmaxkit clean DIR`` and every new write to the same target remove them.

Signals.  A temporary's name is recorded (:data:`_LIVE`) before the file is created
and forgotten only after it has been renamed or removed, so a Ctrl-C or SIGTERM that
lands at any point, even between a file's creation and the assignment that would have
let a handler see it, finds it: the CLI calls :func:`remove_live` on both, and so does
an exit handler for library callers.  ``tests/test_stream_faults.py`` raises the
interrupt at every bytecode of a write in turn and checks that no temporary is left.
"""

from __future__ import annotations

import atexit
import errno
import io
import math
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "NpyIn",
    "NpyOut",
    "Progress",
    "check_target",
    "clean",
    "open_regular",
    "remove_live",
    "temp_name",
    "write_atomic",
]

TMP_TAG = "softmaxkit-tmp"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\." + TMP_TAG + r"\.(?P<pid>[0-9]+)\.[0-9a-f]{8}$")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def open_regular(path: Any, what: str = "input file") -> tuple[int, os.stat_result]:
    """Open ``path`` read-only without blocking; refuse anything but a regular file.

    Returns the descriptor and its ``fstat``.  ``O_NONBLOCK`` makes opening a FIFO
    return at once (then refused), where a plain ``open`` would wait for a writer.
    """
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {p!r} does not exist") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{what} {p!r} is a directory, not a .npy file") from None
    except PermissionError:
        raise PermissionError(f"{what} {p!r} is not readable (permission denied)") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{what} {p!r} is a directory, not a .npy file")
        raise ValueError(f"{what} {p!r} is a {_kind(st.st_mode)}, not a regular file")
    return fd, st


def _read_exact(fd: int, buf: memoryview, offset: int, path: str) -> None:
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            raise ValueError(
                f"input file {path!r} shrank while it was being read (expected "
                f"{len(buf)} bytes at offset {offset}, got {got}): was it truncated?"
            )
        got += n


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwritev(fd, [data[done:]], offset + done)


class NpyIn:
    """The header of a ``.npy`` file and positional reads of its data.

    ``dtype`` is the native-byte-order dtype of the values (what :meth:`read`
    returns); ``file_dtype`` is the one on disk.
    """

    def __init__(self, path: Any, check_dtype: Callable[[np.dtype, str], None] | None = None):
        self.path = os.fspath(path)
        self.fd, st = open_regular(self.path)
        try:
            self._header(st.st_size, check_dtype)
        except BaseException:
            os.close(self.fd)
            raise

    def _header(self, size: int, check_dtype) -> None:
        p = self.path
        with io.FileIO(self.fd, "rb", closefd=False) as raw:
            f = io.BufferedReader(raw)
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            except Exception as exc:  # any failure to parse a header
                # (ValueError, EOFError, SyntaxError, tokenize.TokenError, OverflowError,
                # found by tests/test_cli_fuzz.py) means the same thing to the user
                detail = " ".join(str(exc).split()) or type(exc).__name__
                raise ValueError(f"{p!r} is not a valid .npy file ({detail})") from None
            self.offset = f.tell()
        if any(d < 0 for d in shape):
            # NumPy's header reader accepts them; the product would pass the size check
            # below (tests/test_cli_fuzz.py: (2**31, -1) made logsumexp loop for minutes)
            raise ValueError(
                f"{p!r} is not a valid .npy file (negative dimension in shape {shape})"
            )
        if check_dtype is not None:
            check_dtype(dtype, p)
        n = math.prod(shape)  # Python ints: a header saying (2**64,) cannot overflow here
        self.nbytes = n * dtype.itemsize
        if size < self.offset + self.nbytes:
            raise ValueError(
                f"{p!r} is truncated: its header says shape {shape} of {dtype} "
                f"({self.nbytes} data bytes), the file has {size - self.offset}"
            )
        self.shape = tuple(int(s) for s in shape)
        self.order = "F" if fortran and len(shape) > 1 else "C"
        self.file_dtype = dtype
        self.dtype = dtype if dtype.isnative else dtype.newbyteorder("=")

    def read(self, start: int, count: int) -> np.ndarray:
        """``count`` values from element ``start`` (in file order), native byte order."""
        buf = np.empty(count, dtype=self.file_dtype)
        if count:
            _read_exact(
                self.fd,
                memoryview(buf.view(np.uint8)),
                self.offset + start * self.file_dtype.itemsize,
                self.path,
            )
        if not self.file_dtype.isnative:
            buf = buf.astype(self.dtype)
        return buf

    def read_all(self) -> np.ndarray:
        return self.read(0, math.prod(self.shape)).reshape(self.shape, order=self.order)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> NpyIn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def span(shape: tuple[int, ...], order: str, sl: tuple[slice, ...]) -> tuple[int, int]:
    """(first element, count) of the block ``sl`` in the file's memory order.

    Valid for the blocks of ``_stream._blocks`` (cut in memory order), which are
    one contiguous range of the file."""
    axes = range(len(shape)) if order == "C" else range(len(shape) - 1, -1, -1)
    start = 0
    count = 1
    for a in axes:
        lo, hi, _ = sl[a].indices(shape[a]) if a < len(sl) else (0, shape[a], 1)
        start = start * shape[a] + lo
        count *= hi - lo
    return start, count


# -- outputs -------------------------------------------------------------------------


def temp_name(dst: Path) -> Path:
    """``.NAME.softmaxkit-tmp.PID.RAND`` beside ``dst`` (found again by :func:`clean`)."""
    return dst.with_name(f".{dst.name}.{TMP_TAG}.{os.getpid()}.{secrets.token_hex(4)}")


_LIVE: set[Path] = set()  # temporaries of this process not yet renamed or removed
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_LIVE.clear)  # a child never removes its parent's


def _remove_temp(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass  # never created, or already renamed over its target
    _LIVE.discard(tmp)


def remove_live() -> None:
    """Remove every temporary this process has not yet renamed or removed: what an
    interrupt (Ctrl-C, SIGTERM) left behind, wherever it landed."""
    for tmp in list(_LIVE):
        _remove_temp(tmp)


atexit.register(remove_live)


def check_target(dst: Any) -> Path:
    """Refuse an output path that is a directory, a symlink or a special file, or whose
    directory does not exist.  Called again just before the final rename."""
    p = Path(dst)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise FileNotFoundError(f"output directory {str(p.parent)!r} is not a directory") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"output {str(p)!r} is a directory")
        if stat.S_ISLNK(st.st_mode):
            raise ValueError(
                f"output {str(p)!r} is a symbolic link; outputs are replaced atomically, "
                f"which would replace the link itself: give its target "
                f"{os.path.realpath(p)!r} instead"
            )
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(
                f"output {str(p)!r} is a {_kind(st.st_mode)}, not a regular file; "
                "refusing to replace it"
            )
    if not p.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(p.parent)!r} does not exist")
    return p


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never ours to judge: keep
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except (OverflowError, ValueError):
        return False  # not a possible pid
    return True


def stale_temps(directory: Any, name: str | None = None) -> tuple[list[Path], list[Path]]:
    """softmaxkit temporaries in ``directory`` (for target ``name`` only, if given):
    (stale ones, whose process is gone; live ones)."""
    stale, live = [], []
    with os.scandir(directory) as it:
        for entry in it:
            mt = _TMP_RE.match(entry.name)
            if not mt or (name is not None and mt.group("name") != name):
                continue
            if not entry.is_file(follow_symlinks=False):
                continue
            (live if _pid_alive(int(mt.group("pid"))) else stale).append(Path(entry.path))
    return sorted(stale), sorted(live)


def clean(directory: Any, name: str | None = None) -> tuple[list[Path], list[Path]]:
    """Remove the stale temporaries of :func:`stale_temps`; returns (removed, live)."""
    stale, live = stale_temps(directory, name)
    removed = []
    for p in stale:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass  # another cleaner was first
    return removed, live


def _drop_stale(dst: Path) -> None:
    try:
        clean(dst.parent, dst.name)
    except OSError:
        pass  # best effort: an unreadable directory fails later with a clear error


def _no_space(exc: OSError, nbytes: int, where: Path) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OSError(
            exc.errno,
            f"no space to write {nbytes} bytes to {str(where)!r} ({os.strerror(exc.errno)})",
        )
    return exc


def _reserve(fd: int, nbytes: int, where: Path) -> None:
    """Allocate the file's blocks now, so a full disk fails before any work."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise _no_space(exc, nbytes, where) from None
        os.ftruncate(fd, nbytes)  # cannot reserve here: at least size the file


def _header_bytes(shape: tuple[int, ...], dtype: np.dtype, fortran: bool) -> bytes:
    d = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": fortran,
        "shape": tuple(shape),
    }
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # header over 64 KiB: version 2
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


class NpyOut:
    """A ``.npy`` output written in place by blocks into a reserved temporary, then
    renamed over the target (:meth:`commit`) or removed (:meth:`abort`).

    The constructor only checks the target; :meth:`create` makes the temporary.  Bind
    the object first and call :meth:`create` inside the ``try`` whose handler calls
    :meth:`abort`, so no interrupt can land between the file's creation and a name for
    it (:func:`remove_live` covers the rest)."""

    def __init__(self, dst: Any, shape: tuple[int, ...], dtype: Any, order: str = "C"):
        self.dst = check_target(dst)
        self.dtype = np.dtype(dtype)
        self._hdr = _header_bytes(shape, self.dtype, order == "F" and len(shape) > 1)
        self.offset = len(self._hdr)
        self.total = self.offset + math.prod(shape) * self.dtype.itemsize
        self.fd = -1
        self._file: io.FileIO | None = None
        self.tmp: Path | None = None

    def create(self) -> None:
        """Create the temporary, reserve its space and write the header (returns
        nothing: ``out = NpyOut(...).create()`` would reopen the window above)."""
        _drop_stale(self.dst)
        self.tmp = temp_name(self.dst)
        try:
            _LIVE.add(self.tmp)  # before the file exists
            # a file object, not a bare descriptor: if an interrupt lands between the
            # open and the assignment, the garbage collector still closes it
            self._file = open(self.tmp, "xb", buffering=0)
            self.fd = self._file.fileno()
            _reserve(self.fd, self.total, self.dst.parent)
            _write_all(self.fd, memoryview(self._hdr), 0)
        except BaseException:
            self.abort()
            raise

    def write(self, start: int, values: np.ndarray) -> None:
        """Write the 1-D ``values`` (this file's dtype) from element ``start``."""
        data = np.ascontiguousarray(values, dtype=self.dtype).view(np.uint8)
        try:
            _write_all(self.fd, memoryview(data), self.offset + start * self.dtype.itemsize)
        except OSError as exc:
            raise _no_space(exc, data.nbytes, self.dst.parent) from None

    def write_block(
        self, shape: tuple[int, ...], order: str, sl: tuple[slice, ...], block: np.ndarray
    ) -> None:
        """Write ``block`` at the hyper-rectangle ``sl`` of the array ``shape``: one
        ``pwritev`` per contiguous run (one in all for a block cut in memory order)."""
        nd = len(shape)
        axes = list(range(nd)) if order == "C" else list(range(nd - 1, -1, -1))
        lo = [sl[a].indices(shape[a])[0] for a in range(nd)]
        b = block.shape
        k = nd
        while k > 0 and b[axes[k - 1]] == shape[axes[k - 1]]:
            k -= 1
        outer = axes[: max(k - 1, 0)]  # axes[k - 1], the innermost partial axis, is in the run
        run = math.prod(b[a] for a in axes[len(outer) :])
        data = block.ravel(order=order)
        for j, idx in enumerate(np.ndindex(*[b[a] for a in outer])):
            pos = list(lo)
            for a, i in zip(outer, idx, strict=True):
                pos[a] += i
            start = 0
            for a in axes:
                start = start * shape[a] + pos[a]
            self.write(start, data[j * run : (j + 1) * run])

    def commit(self) -> Path:
        assert self.tmp is not None, "NpyOut.commit before create"
        os.fsync(self.fd)
        self._close()
        check_target(self.dst)
        os.replace(self.tmp, self.dst)
        _LIVE.discard(self.tmp)
        return self.dst

    def _close(self) -> None:
        self.fd = -1
        if self._file is not None:
            self._file.close()

    def abort(self) -> None:
        self._close()
        if self.tmp is not None:
            _remove_temp(self.tmp)


def write_atomic(dst: Any, writer: Callable[[BinaryIO], None]) -> Path:
    """Write a small output through ``writer(f)`` into a temporary, then rename it over
    ``dst``; any failure (a full disk included) leaves ``dst`` as it was."""
    p = check_target(dst)
    _drop_stale(p)
    tmp = temp_name(p)
    try:
        _LIVE.add(tmp)  # before the file exists
        with open(tmp, "xb") as f:
            try:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                raise _no_space(exc, f.tell(), p.parent) from None
        check_target(p)
        os.replace(tmp, p)
        _LIVE.discard(tmp)
    except BaseException:
        _remove_temp(tmp)
        raise
    return p


# -- progress ----------------------------------------------------------------------


class Progress:
    """A tqdm bar on stderr when tqdm is installed; otherwise a plain text line
    (``\\rLABEL 12/40 blocks``) redrawn at most every 0.2 s."""

    def __init__(self, total: int | None, desc: str):
        self.total = total
        self.desc = desc
        self.n = 0
        self._last = 0.0
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=total, desc=desc, unit="block", file=sys.stderr, leave=False)

    def update(self, k: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(k)
            return
        self.n += k
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            sys.stderr.write(f"\r{self.desc} {self.n}{of} blocks")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._last:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
