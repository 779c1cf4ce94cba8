"""The benchmark runner behind ``softmaxkit bench``.

Every family module named in ``_BENCH_FAMILIES`` contributes ``cases(quick)`` (see
``softmaxkit.bench.timing.Case``).  For each case the runner

1. calls every implementation once (warm-up: compiles, faults pages in), keeps
   its result for ``case.check`` (max error against the float64 reference) and
   measures its peak extra memory (``tracemalloc``: NumPy allocations; PyTorch's
   allocator is not traced, so torch shows "n/a");
2. times all implementations *interleaved* (one call of each per round, the order
   rotating; PyTorch's calls are followed by NumPy's and SciPy's, see
   ``_timing_order``), plus a bandwidth floor: a Numba kernel that reads the input and
   writes an output of the same size on the same threads as softmaxkit, once with
   plain stores and once with streaming (non-temporal) stores; the floor is the
   faster of the two.  Two lower bounds are timed with them: a copy into a new
   output taken as softmaxkit's plain calls take theirs ("floor new", what any call
   returning a new array pays; reused from the cache of released outputs, see
   ``_buffers``) and one read of the input ("floor read").  That read also runs,
   untimed, before every timed call, so that each call starts with the input as warm
   as the caches allow, whatever the call before it evicted;
3. reports medians (and, in the JSON, each implementation's minimum and quartiles),
   each peer's time as a multiple of softmaxkit's, every implementation's floor
   fraction (floor time / its time) and, for the dense ops, "reach x": the best
   multiple any implementation could show against the nearer of PyTorch's plain
   call and SciPy (their time / the case's bound).

The tables, JSON and plot are written by :mod:`softmaxkit.bench.report` (its names
are re-exported here).  Nothing is written unless an output path is given.
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._core import coldstart
from .report import (  # noqa: F401  (re-exported: softmaxkit.bench.core.X stays valid)
    _PEERS,
    _generic_rows,
    _ours,
    _reach,
    _rows,
    _split,
    _text,
    format_markdown,
    format_table,
    machine,
    plot,
    to_json,
)
from .timing import Case

__all__ = [
    "format_markdown",
    "format_table",
    "machine",
    "plot",
    "run_cases",
    "select_cases",
    "to_json",
]

_BENCH_FAMILIES = (
    "softmaxkit.bench.dense",
    "softmaxkit.bench.online",
    "softmaxkit.bench.losses",
    "softmaxkit.bench.distill",
    "softmaxkit.bench.vocab",
    "softmaxkit.bench.segments",
    "softmaxkit.bench.dask",
    "softmaxkit.bench.quantized",
    "softmaxkit.bench.torch",
    "softmaxkit.bench.vocab_outputs",
)
# Run only when asked for with --family: the Dask case starts a LocalCluster and moves
# ~8 GB through it (minutes per round); the torch family compiles torch.compile graphs
# and needs torch (and jax/optax for its JAX case); quantized runs the real runtimes;
# distill, vocab and vocab_outputs time [8192, 32000] / [64, 128000] / linear
# [2048 x 32000] cases (seconds per call).
_OPT_IN = ("dask", "quantized", "torch", "distill", "vocab", "vocab_outputs")


def select_cases(quick: bool, families: Sequence[str] | None = None) -> list[Case]:
    """Collect the cases of every family (or of ``families`` only: "dense", ...).

    Without ``families``, every family but the opt-in ones (``dask``) runs.
    """
    out: list[Case] = []
    known = [m.rsplit(".", 1)[-1] for m in _BENCH_FAMILIES]
    if families:
        bad = sorted(set(families) - set(known))
        if bad:
            raise ValueError(f"--family must be among {known}; got {bad}")
    for mod, fam in zip(_BENCH_FAMILIES, known, strict=True):
        if (families and fam not in families) or (not families and fam in _OPT_IN):
            continue
        out.extend(importlib.import_module(mod).cases(quick))
    return out


# --------------------------------------------------------------------------- floor
_FLOOR_BLOCK = 1 << 16


def _floor_kernels():
    from numba import njit

    from .._kernels.exp import fmax
    from .._kernels.nt import nt_copy

    @njit(nogil=True, cache=True)
    def copy_range(x, o, nt, t0, t1):  # pragma: no cover - jitted
        n = x.shape[0]
        for t in range(t0, t1):
            lo = t * _FLOOR_BLOCK
            hi = min(lo + _FLOOR_BLOCK, n)
            xs = x[lo:hi]
            if nt:
                nt_copy(xs, o, lo, hi)
            else:
                os = o[lo:hi]
                for j in range(xs.shape[0]):
                    os[j] = xs[j]

    @njit(nogil=True, cache=True)
    def max_range(x, o, t0, t1):  # pragma: no cover - jitted
        # a vectorised max (llvm.maxnum) reads each value once: memory-bound
        n = x.shape[0]
        for t in range(t0, t1):
            xs = x[t * _FLOOR_BLOCK : min((t + 1) * _FLOOR_BLOCK, n)]
            m = xs[0]
            for j in range(xs.shape[0]):
                m = fmax(m, xs[j])
            o[t] = m

    return copy_range, max_range


_KERNELS = None


def _floor_impls(x: np.ndarray) -> dict[str, Callable[[], Any]]:
    """The bandwidth floors of an input, each a call on softmaxkit's threads:

    - ``"floor"`` / ``"floor nt"``: read ``x`` and write a same-size output, with plain
      and with streaming (non-temporal) stores (one output buffer shared by both);
      each returns the output.  Streaming stores skip the write-allocate read of the
      output: faster once the data exceeds the caches.  The reported floor is the
      faster copy.
    - ``"floor new"``: take a new output (as any call that returns a new array must)
      the way softmaxkit's plain calls do (``_buffers.empty_like``: 2 MiB-aligned, and
      from 4 MiB on reused from the cache of released outputs), then copy into it
      (streaming stores from ``NT_MIN_BYTES`` on, as the kernels do): a lower bound
      for a plain softmax / log_softmax call.
    - ``"floor read"``: read ``x`` once (a vectorised max): a lower bound for an op
      whose output is small (logsumexp).
    """
    global _KERNELS
    from .._core.buffers import empty_like
    from .._kernels._parallel import run, threads_for
    from .._kernels.nt import NT_MIN_BYTES

    if _KERNELS is None:
        _KERNELS = _floor_kernels()
    copy, xmax = _KERNELS
    flat = np.ascontiguousarray(x).reshape(-1)
    nt_ok = flat.dtype in (np.float32, np.float64)
    out = np.empty_like(flat)
    ntask = -(-flat.size // _FLOOR_BLOCK)
    maxes = np.empty(ntask, dtype=flat.dtype)
    nt_threads = threads_for(flat.size, flat.itemsize)

    def make(nt: bool) -> Callable[[], Any]:
        def floor() -> np.ndarray:
            run(copy, ntask, nt_threads, flat, out, nt)
            return out

        return floor

    def floor_new() -> np.ndarray:
        fresh = empty_like(flat, flat.dtype)
        run(copy, ntask, nt_threads, flat, fresh, nt_ok and flat.nbytes >= NT_MIN_BYTES)
        return fresh

    def floor_read() -> np.ndarray:
        run(xmax, ntask, nt_threads, flat, maxes)
        return maxes

    return {
        "floor": make(False),
        "floor nt": make(nt_ok),
        "floor new": floor_new,
        "floor read": floor_read,
    }


# --------------------------------------------------------------------------- running
def _peak_bytes(f: Callable[[], Any]) -> int:
    # the young generations only: tracemalloc counts what ``f`` allocates after
    # ``start``, whatever garbage is left, and a full collection takes 0.2-0.3 s with
    # torch and jax loaded (9 s of a 20 s quick bench run of four tiny cases)
    gc.collect(1)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        res = f()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del res
    return int(peak)


def run_cases(
    cases: Sequence[Case],
    *,
    repeats: int = 7,
    budget_s: float = 3.0,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time every case; return one result dict per case (see module docstring)."""
    with coldstart.foreground():  # time the kernels, never the cold-start fallback
        return _run_cases(cases, repeats, budget_s, memory, progress)


def _run_cases(
    cases: Sequence[Case],
    repeats: int,
    budget_s: float,
    memory: bool,
    progress: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    results = []
    for k, case in enumerate(cases):
        if progress:
            progress(f"[{k + 1}/{len(cases)}] {case.family} {case.op} {case.label}")
        try:
            results.append(_run_case(case, repeats, budget_s, memory))
        finally:
            # the case's own clean-up (its lazily built inputs, temporary files, a
            # Dask cluster), also when it failed or was interrupted (Ctrl-C, SIGTERM)
            release = case.extra.get("release")
            if release is not None:
                release()
        if not case.nbytes or case.nbytes >= _COLLECT_BYTES:
            gc.collect()  # the case's arrays held in cycles go before the next case
    return results


def _run_case(case: Case, repeats: int, budget_s: float, memory: bool) -> dict[str, Any]:
    """Time one case (see the module docstring); the result row."""
    impls = dict(case.impls)
    get_input = case.extra.get("input")
    if get_input is not None and case.nbytes:
        impls.update(_floor_impls(get_input()))
    errors: dict[str, float | None] = {}
    first: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name, f in list(impls.items()):
        try:
            t0 = time.perf_counter()
            res = f()
            first[name] = time.perf_counter() - t0
        except Exception as exc:  # a peer that cannot do this case
            failed[name] = f"{type(exc).__name__}: {exc}"[:120]
            del impls[name]
            continue
        if case.check is not None and not name.startswith("floor"):
            try:
                errors[name] = float(case.check(res))
            except Exception:  # a result of another type (torch tensor)
                try:
                    errors[name] = float(case.check(np.asarray(res)))
                except Exception:
                    errors[name] = None
        del res
    peaks: dict[str, int | None] = {}
    if memory:
        for name, f in impls.items():
            if name.startswith("floor") or name.startswith("torch"):
                peaks[name] = None
                continue
            peaks[name] = _peak_bytes(f)
    # second warm-up, then interleaved rounds
    for f in impls.values():
        f()
    per_round = sum(first.values())
    n = int(max(3, min(repeats, budget_s / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in impls}
    names = _timing_order(list(impls))
    # an untimed read of the input before each timed call: every call starts with
    # as much of the input in cache as fits, whatever the call before it evicted
    # (SciPy's temporaries pushed an 8 MB input out of L3, so the call after
    # SciPy's paid for memory that the others read from cache)
    settle = impls.get("floor read")
    for r in range(n):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            f = impls[name]
            if settle is not None:
                settle()
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med.get(case.baseline)
    # the floor: the faster of the plain-store and the streaming-store copy
    floors = [med[k] for k in ("floor", "floor nt") if k in med]
    # a case that moves several input-sized arrays (forward + backward) scales the
    # copy: ``extra["floor_copies"]`` copies of the input, 1 by default
    floor = min(floors) * float(case.extra.get("floor_copies", 1)) if floors else None
    row: dict[str, Any] = {
        "family": case.family,
        "op": case.op,
        "label": case.label,
        "baseline": case.baseline,
        "repeats": n,
        "nbytes": case.nbytes,
        "floor_s": floor,
        "impls": {},
        "failed": failed,
        "extra": {k: v for k, v in case.extra.items() if isinstance(v, (int, float, str, dict))},
    }
    base_out = med.get(case.baseline + " out=")
    for name, t in med.items():
        # out= peers are compared with our out= call, plain peers with our plain call
        b = base_out if (name.endswith(" out=") and base_out) else base
        ts = sorted(times[name])
        row["impls"][name] = {
            "median_s": t,
            # the spread: a call whose rounds are bimodal (another library's threads
            # still spinning on one of the cores) shows a first quartile far below
            # its median
            "min_s": ts[0],
            "q1_s": ts[len(ts) // 4],
            "q3_s": ts[(3 * len(ts)) // 4],
            "vs_baseline": (t / b) if b else None,
            "floor_fraction": (floor / t) if floor else None,
            "max_error": errors.get(name),
            "peak_extra_bytes": peaks.get(name),
        }
    impls.clear()
    return row


# cases moving at least this many bytes end with a full garbage collection (0.2-0.3 s
# with torch and jax loaded: more than a small case's whole run)
_COLLECT_BYTES = 1 << 24


def _timing_order(names: list[str]) -> list[str]:
    """The cyclic order of the timed rounds: PyTorch's calls, then NumPy's and SciPy's.

    PyTorch's OpenMP threads keep spinning for a few ms after each of its calls
    (libgomp's default wait policy) and take a core from the next multi-threaded
    call: softmaxkit's log_softmax of [65536, 128] float32 with ``out=`` took 6.1 ms
    (median) right after a PyTorch call against 3.5 ms after its own, and 3.8 ms
    with ``OMP_WAIT_POLICY=PASSIVE``.  The rounds rotate but keep this cyclic order,
    so whatever comes right after PyTorch always pays; putting the single-threaded
    NumPy and SciPy calls there keeps softmaxkit and the floors out of that window.
    (Making PyTorch passive instead would slow PyTorch itself: its plain log_softmax
    of [1, 1e6] 0.69 -> 1.35 ms.)
    """
    peers = [n for n in names if n.startswith(("numpy", "scipy"))]
    # JAX's and ONNX Runtime's pools spin after a call as well
    torch = [n for n in names if n.startswith(("torch", "jax", "ort"))]
    rest = [n for n in names if n not in peers and n not in torch]
    return rest + torch + peers
