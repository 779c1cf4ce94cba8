"""Floor fractions of the dense ops (``out=``), all timings of a case in one process.

    PYTHONPATH=src python tools/floor_probe.py [--cpu] [--rounds N] [--case NAME ...]
                                               [--op OP ...] [--ort] [--dtype float64]

For each case: the bench's bandwidth floor (the faster of a plain and a streaming-store
copy of the input, on softmaxkit's threads) and our ``out=`` call, one call of each per
round, the order rotating; prints the medians as floor / ours ("floor %").  ``--ort``
adds ONNX Runtime's io-bound call (``ort out=``) and prints ort / ours (> 1: we are
faster).

``--cpu`` runs everything on one thread (softmaxkit, the floor copy and ONNX Runtime)
and times each call's CPU time (``time.thread_time``), not wall time: on a shared
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


def _case(x, op, axis, use_ort, rounds, clock, fl):
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
    names = list(impls)
    for fn in impls.values():
        fn()
    ts: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t0 = clock()
            impls[k]()
            ts[k].append(clock() - t0)
    return {k: float(np.median(v)) for k, v in ts.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--case", action="append", choices=list(CASES))
    ap.add_argument("--op", action="append", choices=OPS)
    ap.add_argument("--ort", action="store_true")
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
    from softmaxkit.bench.core import _floor_impls

    print("load average before:", os.getloadavg(), "(--cpu: one thread, CPU time)" * a.cpu)
    for cname in a.case or list(CASES):
        shape, axis = CASES[cname]
        rng = np.random.default_rng(0)
        x = (rng.standard_normal(shape) * 4.0).astype(a.dtype)
        fl = _floor_impls(x)
        for op in a.op or OPS:
            med = _case(x, op, axis, a.ort and op != "logsumexp", a.rounds, clock, fl)
            floor = min(med["floor"], med["floor nt"])
            line = f"{cname:12s} {op:12s} ours {med['ours'] * 1e3:8.2f} ms"
            line += f"  floor {100 * floor / med['ours']:5.1f}%"
            if "ort out=" in med:
                line += f"  ort/ours {med['ort out='] / med['ours']:.2f}"
            print(line, flush=True)
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
