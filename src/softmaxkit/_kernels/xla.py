"""An XLA CPU custom-call target that runs Python host functions on XLA's own buffers.

``softmaxkit.jax`` reaches the kernels through this instead of ``jax.pure_callback``:
XLA hands the target the addresses of its operand and result buffers; the target
views them as NumPy arrays (no copy) and calls a host function that writes the
results in place (the public NumPy functions with ``out=``).  ``pure_callback``
instead copies every operand into a fresh buffer before the callback and every
result out of the NumPy array it returns (a 131 MB operand: ~52 ms in, ~85 ms out
on the 2-core VM, docs/frameworks.md), which made cross-entropy loss+grad 0.2-0.4x
optax's speed.

How (jax >= 0.4.31; checked with jax 0.10.2):

* One target, ``softmaxkit_host``, registered on first use with
  ``jax.ffi.register_ffi_target(..., platform="cpu", api_version=0)`` (the legacy
  custom-call registry).  Calls use custom-call API version 3
  (``API_VERSION_STATUS_RETURNING_UNIFIED``), whose CPU signature is
  ``void(void* out, const void** in, const char* opaque, size_t len, void* status)``;
  version 2 is refused by XLA:CPU, version 4 (the typed FFI) needs an
  ``XLA_FFI_CallFrame`` parser.  ``out`` is the result buffer, or an array of
  result buffers when the call has several results.
* The function behind the address is a ``ctypes.CFUNCTYPE`` of a Python function:
  ctypes takes the GIL for it on whatever thread XLA runs it (JAX releases the
  GIL while a computation runs, as ``pure_callback`` also requires), so nothing is
  compiled (no first-call cost) and the host functions use the kernels' own
  thread pool (``_parallel.run``, safe for concurrent callers) exactly as a NumPy
  call does.
* The opaque string is a plan number: :func:`plan` records ``(host, operand
  specs, result specs)`` for each distinct call signature (traced shapes and
  dtypes) and returns its number, which the lowering puts in ``backend_config``.
* Result buffers of 4 MiB and more get ``madvise(MADV_HUGEPAGE)`` before the host
  function writes them (:func:`_ask_huge_pages`): XLA allocates them with 4 KiB
  pages, whose faults cost more than the kernels (``docs/frameworks.md``).
* XLA:CPU offers no way to report an error from a legacy target (its
  ``XlaCustomCallStatusSetFailure`` is not exported by jaxlib): a host function
  that raises (it should not: the JAX layer validates everything at trace time)
  fills its float results with NaN and logs the traceback at ERROR level.

This module imports neither JAX nor Numba; :func:`register` imports JAX.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["TARGET", "plan", "register"]

TARGET = "softmaxkit_host"
API_VERSION = 3  # API_VERSION_STATUS_RETURNING_UNIFIED

_log = logging.getLogger("softmaxkit.jax")

Spec = tuple[tuple[int, ...], np.dtype]
Host = Callable[[list[np.ndarray], list[np.ndarray]], None]

_PLANS: list[tuple[Host, tuple[Spec, ...], tuple[Spec, ...]]] = []
_PLAN_IDS: dict[tuple, int] = {}
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def plan(host: Host, ins: Sequence[Spec], outs: Sequence[Spec]) -> int:
    """The number of the plan ``(host, ins, outs)``, recorded on first sight.

    ``host`` must be hashable (plans are reused by identity of ``host`` and equality
    of the specs); it is called as ``host(inputs, outputs)`` with read-only input
    arrays and writable output arrays (views of XLA's buffers) and must fill every
    output.
    """
    key = (
        host,
        tuple((tuple(s), np.dtype(d)) for s, d in ins),
        tuple((tuple(s), np.dtype(d)) for s, d in outs),
    )
    with _LOCK:
        k = _PLAN_IDS.get(key)
        if k is None:
            k = len(_PLANS)
            _PLANS.append(key)
            _PLAN_IDS[key] = k
        return k


class _Buf:
    __slots__ = ("__array_interface__",)


def _view(addr: int, spec: Spec, readonly: bool) -> np.ndarray:
    shape, dtype = spec
    b = _Buf()
    b.__array_interface__ = {
        "data": (addr, readonly),
        "shape": shape,
        "typestr": dtype.str,
        "version": 3,
    }
    return np.asarray(b)


_VOIDP = ctypes.POINTER(ctypes.c_void_p)

HUGE_PAGE = 1 << 21
HUGE_MIN_BYTES = 1 << 22  # NumPy's threshold for asking huge pages for its own arrays
_MADV_HUGEPAGE = 14


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - a libc without madvise
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _load_madvise()
HUGEPAGES = _MADVISE is not None  # a switch for measurements and tests


def _ask_huge_pages(addr: int, nbytes: int) -> bool:
    """``madvise(MADV_HUGEPAGE)`` on the whole 2 MiB spans of a fresh result buffer.

    XLA:CPU allocates each result with ``malloc`` (4 KiB pages: a fresh 512 MiB result
    takes 131072 page faults, ~250 ms of CPU on the 2-core VM, five times the
    softmax that fills it); NumPy asks the kernel for transparent huge pages on its
    own arrays of 4 MiB and more, and the kernels write such arrays 2-5x faster
    when fresh (``docs/frameworks.md``, "Speed under jax.jit").  Done on the
    2 MiB-aligned interior only (``malloc`` returns 16 bytes past a page boundary);
    a buffer already faulted in is unaffected; any error is ignored (the advice is
    only a hint).  True when the advice was given.
    """
    if not HUGEPAGES or nbytes < HUGE_MIN_BYTES or _MADVISE is None:
        return False
    lo = -(-addr // HUGE_PAGE) * HUGE_PAGE
    hi = (addr + nbytes) // HUGE_PAGE * HUGE_PAGE
    if hi <= lo:
        return False
    return _MADVISE(lo, hi - lo, _MADV_HUGEPAGE) == 0


def _target(out: int, ins, opaque: bytes, opaque_len: int, status: int) -> None:
    outs: list[np.ndarray] = []
    try:
        host, in_specs, out_specs = _PLANS[int(ctypes.string_at(opaque, opaque_len))]
        if len(out_specs) == 1:
            out_addrs = [out]
        else:
            out_arr = ctypes.cast(out, _VOIDP)
            out_addrs = [out_arr[k] for k in range(len(out_specs))]
        outs = [_view(a or 0, s, False) for a, s in zip(out_addrs, out_specs, strict=True)]
        in_addrs = {ins[k] for k in range(len(in_specs))}
        for a, o in zip(out_addrs, outs, strict=True):
            if a and a not in in_addrs:  # (an aliased result is an operand's pages)
                _ask_huge_pages(a, o.nbytes)
        # the operands are writeable views: the host functions (softmaxkit's public
        # functions) never write their inputs, and a read-only array would be another
        # Numba type (the losses copy it: 512 MiB of logits cost ~95 ms, one thread)
        inputs = [_view(ins[k] or 0, s, False) for k, s in enumerate(in_specs)]
        host(inputs, outs)
    except BaseException:  # nothing may propagate into XLA's C++ frames
        _log.exception("softmaxkit.jax: a custom-call host function failed")
        for o in outs:
            if o.dtype.kind == "f":
                o.fill(np.nan)


_CFUNC = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, _VOIDP, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p
)


def register() -> bool:
    """Register :data:`TARGET` with XLA on the CPU (once); True when it works.

    The first call also runs one small jitted call through it and compares the
    result (a jax release without legacy custom calls on the CPU makes this False,
    and ``softmaxkit.jax`` then uses ``jax.pure_callback``).  Cost: one XLA compile
    of a tiny computation (tens of ms), once per process.
    """
    with _LOCK:
        if "ok" in _STATE:
            return bool(_STATE["ok"])
        try:
            import jax

            fn = _CFUNC(_target)
            new = ctypes.pythonapi.PyCapsule_New
            new.restype = ctypes.py_object
            new.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
            addr = ctypes.cast(fn, ctypes.c_void_p).value
            capsule = new(addr, b"xla._CUSTOM_CALL_TARGET", None)
            jax.ffi.register_ffi_target(TARGET, capsule, platform="cpu", api_version=0)
            _STATE["fn"] = fn  # the ctypes thunk must outlive every call
        except Exception:
            _log.warning("softmaxkit.jax: no XLA custom call; using pure_callback", exc_info=True)
            _STATE["ok"] = False
            return False
    ok = _self_test()
    with _LOCK:
        _STATE["ok"] = ok
    return ok


def _self_test() -> bool:
    import jax
    import jax.numpy as jnp

    def twice(ins, outs):
        np.multiply(ins[0], 2.0, out=outs[0])

    spec = ((3,), np.dtype(np.float32))
    k = plan(twice, [spec], [spec])
    try:
        f = jax.ffi.ffi_call(
            TARGET,
            jax.ShapeDtypeStruct((3,), jnp.float32),
            custom_call_api_version=API_VERSION,
            legacy_backend_config=str(k),
        )
        # compiled and run apart from any trace in progress (the first use is usually
        # inside a jax.jit trace)
        arg = np.arange(3, dtype=np.float32)
        with jax.ensure_compile_time_eval():
            lowered = jax.jit(f).lower(jax.ShapeDtypeStruct((3,), jnp.float32))
            got = np.asarray(lowered.compile()(arg))
        ok = bool(np.array_equal(got, [0.0, 2.0, 4.0]))
    except Exception:
        _log.warning(
            "softmaxkit.jax: the XLA custom call failed; using pure_callback", exc_info=True
        )
        return False
    if not ok:
        _log.warning("softmaxkit.jax: the XLA custom call gave %s; using pure_callback", got)
    return ok
