"""Floor fractions of the dense ops (``out=``), all timings of a case in one process.

    PYTHONPATH=src python tools/floor_probe.py [--cpu] [--rounds N] [--case NAME ...]
                                               [--op OP ...] [--ort] [--jax] [--bound]
                                               [--dtype float64]

For each case: the bench's bandwidth floor (the faster of a plain and a streaming-store
copy of the input, on softmaxkit's threads) and our ``out=`` call, one call of each per
round, the order rotating; prints the medians as floor / ours ("floor %").  ``--ort``
adds ONNX Runtime's io-bound call (``ort out=``) and prints ort / ours (> 1: we are
faster); ``--jax`` adds ``jax.jit`` of the ``jax.nn`` op (compile excluded) and prints
jax / ours.

``--bound`` also times the same kernel on a cache-resident piece of the case (about
384 KiB of input, so input and output stay in L2; rows of the same length where
they fit, else one row of 96K values; the column case as ``[384, 256]`` axis 0, whose
384 reduced rows amortise the per-column finish as the case's 8192 do),
called through the kernel entry points (no public-layer overhead) until it has
processed as many values as the case, and prints ``cache-resident floor %`` = floor /
that time: the floor fraction the kernel would reach if memory traffic were free,
i.e. the compute bound of the current kernel.  A target above it needs fewer
instructions per value, not better memory use.

``--cpu`` runs everything on one thread (softmaxkit, the floor copy, ONNX Runtime and
XLA, whose single-threaded computations are timed with ``time.process_time`` since
XLA may run them on a thread of its own) and times each call's CPU time
(``time.thread_time``), not wall time: on a shared
machine a call that loses its core for a while is not charged for it, so the
ratios hold at a load average where wall-clock medians move 2x.  It measures the
work each call does, not how well it uses two threads.  A development tool: compare
ratios on the same machine only.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

CASES = {
    "1x1e6": ((1, 1_000_000), -1),
    "1x3.2e7": ((1, 32_000_000), -1),
    "4096x32000": ((4096, 32000), -1),
    "65536x128": ((65536, 128), -1),
    "1e6x10": ((1_000_000, 10), -1),
    "8192x4096a0": ((8192, 4096), 0),
}
OPS = ("softmax", "log_softmax", "logsumexp")


def _bound_call(x, op, axis):
    """The op's kernel entry on a cache-resident piece of ``x`` (see ``--bound``) and
    how many values one call processes."""
    from softmaxkit._kernels import cols, rows

    n = x.shape[1]
    budget = (384 << 10) // x.itemsize
    if axis == 0:
        sub = np.ascontiguousarray(x[:384, :256])
    elif n <= budget:
        sub = np.ascontiguousarray(x[: max(1, budget // n)])
    else:
        sub = np.ascontiguousarray(x.reshape(-1)[:budget].reshape(1, budget))
    inv = rows.inv_temperature(1.0, sub.dtype)
    if axis == 0:
        s3 = sub.reshape(1, *sub.shape)
        if op == "logsumexp":
            lse, sign = np.empty((1, sub.shape[1])), np.empty((1, sub.shape[1]))
            return (lambda: cols.logsumexp_cols3d(s3, None, None, 1.0, inv, lse, sign)), sub.size
        o3 = np.empty_like(s3)
        log = op == "log_softmax"
        return (lambda: cols.softmax_cols3d(s3, None, o3, 1.0, inv, log)), sub.size
    if op == "logsumexp":
        lse, sign = np.empty(sub.shape[0], sub.dtype), np.empty(0)
        return (lambda: rows.logsumexp_rows2d(sub, None, None, 1.0, inv, lse, sign)), sub.size
    out = np.empty_like(sub)
    log = op == "log_softmax"
    return (lambda: rows.softmax_rows2d(sub, None, out, 1.0, inv, log)), sub.size


def _case(x, op, axis, use_ort, use_jax, bound, rounds, clock, fl):
    import softmaxkit as sk
    from softmaxkit.bench import peers

    f = getattr(sk, op)
    if op == "logsumexp":
        out = np.empty(tuple(s for i, s in enumerate(x.shape) if i != axis % x.ndim), x.dtype)
    else:
        out = np.empty_like(x)
    impls = {
        "floor": fl["floor"],
        "floor nt": fl["floor nt"],
        "ours": lambda: f(x, axis=axis, out=out),
    }
    if use_ort:
        state: dict = {}
        impls["ort out="] = peers.ort_dense(lambda: x, op, axis, lambda _name: state)["ort out="]
    clocks = dict.fromkeys(impls, clock)
    if use_jax:
        compile_s: dict[str, float] = {}
        jstate: dict = {}
        jx = np.ascontiguousarray(x)
        impls.update(peers.jax_dense(lambda: jx, op, axis, compile_s, lambda _n: jstate))
        if clock is time.thread_time:
            clocks["jax jit"] = time.process_time
    if bound:
        call, size = _bound_call(x, op, axis)
        reps = max(1, -(-x.size // size))

        def cached() -> None:
            for _ in range(reps):
                call()

        impls["cached"] = cached
        clocks["cached"] = clock
    names = list(impls)
    for fn in impls.values():
        fn()
    ts: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            c = clocks.get(k, clock)
            t0 = c()
            impls[k]()
            ts[k].append(c() - t0)
    med = {k: float(np.median(v)) for k, v in ts.items()}
    if bound:
        med["cached"] *= x.size / (reps * size)
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--case", action="append", choices=list(CASES))
    ap.add_argument("--op", action="append", choices=OPS)
    ap.add_argument("--ort", action="store_true")
    ap.add_argument("--jax", action="store_true")
    ap.add_argument("--bound", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    clock = time.perf_counter
    if a.cpu:
        import numba

        from softmaxkit.bench import peers

        numba.set_num_threads(1)
        peers.ORT_THREADS = 1
        clock = time.thread_time
        if a.jax:  # before jax is imported: XLA's CPU client on one thread
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    from softmaxkit.bench.core import _floor_impls

    print("load average before:", os.getloadavg(), "(--cpu: one thread, CPU time)" * a.cpu)
    for cname in a.case or list(CASES):
        shape, axis = CASES[cname]
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(shape) * 4.0).astype(a.dtype)
        fl = _floor_impls(x)
        for op in a.op or OPS:
            use_ort = a.ort and op != "logsumexp"
            med = _case(x, op, axis, use_ort, a.jax, a.bound, a.rounds, clock, fl)
            floor = min(med["floor"], med["floor nt"])
            line = f"{cname:12s} {op:12s} ours {med['ours'] * 1e3:8.2f} ms"
            line += f"  floor {100 * floor / med['ours']:5.1f}%"
            if "ort out=" in med:
                line += f"  ort/ours {med['ort out='] / med['ours']:.2f}"
            if "jax jit" in med:
                line += f"  jax/ours {med['jax jit'] / med['ours']:.2f}"
            if "cached" in med:
                line += f"  cache-resident floor {100 * floor / med['cached']:5.1f}%"
            print(line, flush=True)
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
