"""Compile kernels in a background process, into the on-disk cache.

``submit(dispatcher, argtypes)`` is called by the compile listener (``_hooks``) when
a small call inside ``_core.coldstart.allow`` would compile a kernel.  The signature
is queued and handed to a child process: ``python -c ...`` with this process's
``sys.path``, the pickled Numba argument types on its stdin, ``SOFTMAXKIT_COMPILE=
foreground`` in its environment, a lower CPU priority (``nice`` 5), its own session
(it survives the parent, so a short-lived process still leaves its kernels cached)
and no output.  The child imports each kernel's module and calls
``dispatcher.compile(argtypes)``, which compiles the kernel (and the helpers it
calls) and saves it to the cache; the parent loads it from there on its next call.

One child runs at a time; signatures that arrive meanwhile wait for the next one,
and the ones still waiting when the parent exits are handed to a last child.  A
signature whose child has finished is not submitted again: if the cache still
misses (the child failed, or wrote elsewhere), the parent compiles it itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import subprocess
import sys
import threading

__all__ = ["child_main", "submit", "wait"]

log = logging.getLogger("softmaxkit")

_lock = threading.Lock()
_queue: list[tuple[str, str, tuple]] = []  # waiting for a child
_running: list[tuple[str, str, tuple]] = []  # handed to the running child
_done: set[tuple[str, str, str]] = set()  # handed to a child that has finished
_keys: set[tuple[str, str, str]] = set()  # queued or running
_proc: subprocess.Popen | None = None
_pid = os.getpid()
_broken = False

_CHILD = (
    "import os, pickle, sys; p = pickle.load(sys.stdin.buffer); sys.path[:0] = p['path']\n"
    "if hasattr(os, 'nice'): os.nice(5)\n"
    "from softmaxkit._kernels._background import child_main; child_main(p)"
)


def _key(item: tuple[str, str, tuple]) -> tuple[str, str, str]:
    return item[0], item[1], repr(item[2])


def _reap() -> None:
    """Move the finished child's signatures to ``_done`` (lock held)."""
    global _proc, _running
    if _proc is not None and _proc.poll() is not None:
        for item in _running:
            k = _key(item)
            _keys.discard(k)
            _done.add(k)
        _running = []
        _proc = None


def _spawn(items: list[tuple[str, str, tuple]]) -> subprocess.Popen:
    payload = pickle.dumps({"path": [p for p in sys.path if p], "items": items})
    env = dict(os.environ, SOFTMAXKIT_COMPILE="foreground")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    return proc


def _start() -> None:
    """Start a child for the queue when none runs (lock held)."""
    global _proc, _queue, _running, _broken
    _reap()
    if _proc is not None or not _queue:
        return
    try:
        _proc = _spawn(_queue)
    except (OSError, ValueError, pickle.PicklingError) as exc:
        _broken = True
        log.info("softmaxkit: cannot start a background compile (%s): compiling here", exc)
        for item in _queue:
            _keys.discard(_key(item))
        _queue = []
        return
    _running, _queue = _queue, []


def submit(dispatcher, argtypes) -> bool:
    """Queue ``dispatcher`` for ``argtypes`` in a background compile.

    Returns True when the caller should not compile it now (queued, or compiling in
    a child), False when it should (background compiling unavailable, or a child
    already tried this signature)."""
    if _broken or os.getpid() != _pid or not sys.executable:
        return False
    fn = getattr(dispatcher, "py_func", None)
    if fn is None or "<locals>" in fn.__qualname__:
        return False
    item = (fn.__module__, fn.__qualname__, tuple(argtypes))
    k = _key(item)
    with _lock:
        _reap()
        if k in _done:
            return False
        if k not in _keys:
            _keys.add(k)
            _queue.append(item)
            log.info(
                "compiling Numba kernel %s.%s in a background process; small calls use "
                "the float64 reference formulas until it is cached",
                item[0].rpartition(".")[2],
                item[1],
            )
        _start()
        return not _broken


def wait(timeout: float | None = None) -> bool:
    """Wait for the background compiles (those queued too); True when none is left."""
    import time

    end = None if timeout is None else time.monotonic() + timeout
    while True:
        with _lock:
            _start()
            proc = _proc
        if proc is None:
            return True
        try:
            proc.wait(None if end is None else max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False


@atexit.register
def _at_exit() -> None:
    # the signatures still queued go to a last child, which outlives this process
    global _proc
    if os.getpid() != _pid:
        return
    with _lock:
        _reap()
        if _queue and not _broken:
            if _proc is not None:
                _proc = None  # a second child: the running one finishes on its own
            _start()


def child_main(payload: dict) -> None:
    """The child: compile each queued signature into the cache."""
    import importlib

    for module, qualname, argtypes in payload["items"]:
        try:
            obj = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
            # a kernel wrapped by _parallel.over_rows keeps its dispatcher as .kernel
            (obj if hasattr(obj, "compile") else obj.kernel).compile(argtypes)
        except Exception:  # the parent compiles it itself then
            continue
