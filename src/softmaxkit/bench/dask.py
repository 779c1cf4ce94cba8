"""Benchmark cases for the Dask driver (``softmaxkit bench``).

logsumexp and softmax over the last axis of a lazily generated float64 array
(``dask.array.random``, fixed seed; about 8 GB, or 512 MB with ``quick``) on a
2-worker ``LocalCluster`` (processes, loopback), against the same computation
written with ``dask.array`` primitives (``x - x.max()``, ``exp``, ``sum``).  The
softmax output is reduced by a row sum on the workers (so nothing of array size
comes back to the client).  Each case's ``extra`` holds the peak resident memory
of every worker process seen during each implementation's last run.

The cluster is started when :func:`cases` is called and closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
from typing import Any

import numpy as np

from .timing import Case

__all__ = ["cases", "peak_rss", "start_peak_sampler"]

_SAMPLER: dict[str, Any] = {}


def _sample(stop: threading.Event, interval: float) -> None:
    import psutil

    proc = psutil.Process()
    while not stop.is_set():
        rss = proc.memory_info().rss
        if rss > _SAMPLER["peak"]:
            _SAMPLER["peak"] = rss
        stop.wait(interval)


def start_peak_sampler(interval: float = 0.01) -> int:
    """(Run on a worker.) Restart the peak-RSS sampler thread of this process."""
    import psutil

    old = _SAMPLER.get("stop")
    if old is not None:
        old.set()
    stop = threading.Event()
    _SAMPLER["stop"] = stop
    _SAMPLER["peak"] = psutil.Process().memory_info().rss
    threading.Thread(target=_sample, args=(stop, interval), daemon=True).start()
    return _SAMPLER["peak"]


def peak_rss() -> int:
    """(Run on a worker.) The peak RSS in bytes since :func:`start_peak_sampler`."""
    return int(_SAMPLER.get("peak", 0))


def _measured(client, fn, store: dict[str, list[float]], name: str):
    """Wrap ``fn`` so each call records the workers' peak RSS (MB) in ``store[name]``."""

    def run():
        client.run(start_peak_sampler)
        res = fn()
        time.sleep(0.05)
        peaks = client.run(peak_rss)
        store[name] = sorted(round(v / 2**20, 1) for v in peaks.values())
        return res

    return run


def _cluster(memory_limit: str):
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        # the scheduler's HTTP server on a port of its own choosing: with the dashboard
        # "off" (None) it tried port 8787, and distributed left the socket of a failed
        # bind unclosed when another cluster held it
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit,
        )
    client = Client(cluster, set_as_default=False)

    def close():
        if client.status != "closed":
            client.close()
            cluster.close()

    atexit.register(close)
    return client, close


def cases(quick: bool) -> list[Case]:
    """The Dask cases: logsumexp and softmax of ~8 GB (512 MB when ``quick``)."""
    import dask.array as da

    from ..drivers import dask as _dask

    rows, cols = (4096, 16384) if quick else (32768, 32768)
    chunks = (1024, 4096) if quick else (2048, 8192)  # 32 / 128 MB blocks
    client, close = _cluster("3GB")
    x = da.random.default_rng(20260101).standard_normal((rows, cols), chunks=chunks)
    label = f"[{rows}, {cols}] float64 ({x.nbytes / 1e9:.1f} GB), chunks {chunks}, 2 workers"

    def ours_lse():
        return client.compute(_dask.logsumexp(x, axis=-1)).result()

    def prim_lse():
        m = x.max(axis=-1, keepdims=True)
        lse = m + da.log(da.exp(x - m).sum(axis=-1, keepdims=True))
        return client.compute(lse[:, 0]).result()

    def ours_sm():
        return client.compute(_dask.softmax(x, axis=-1).sum(axis=-1)).result()

    def prim_sm():
        e = da.exp(x - x.max(axis=-1, keepdims=True))
        return client.compute((e / e.sum(axis=-1, keepdims=True)).sum(axis=-1)).result()

    def floor():  # generating the data and one row sum: the cost of reading x once
        return client.compute(x.sum(axis=-1)).result()

    head = None

    def check_lse(r):
        nonlocal head
        if head is None:  # the first rows, regenerated in-process from the same seed
            from ..softmax import logsumexp

            head = logsumexp(x[:8].compute(scheduler="sync"), axis=-1)
        return float(np.max(np.abs(np.asarray(r)[:8] - head)))

    out = []
    for op, ours, prim, check in (
        ("logsumexp", ours_lse, prim_lse, check_lse),
        ("softmax", ours_sm, prim_sm, lambda r: float(np.max(np.abs(r - 1.0)))),
    ):
        # peak resident memory of each worker during each implementation's last call
        peaks: dict[str, list[float]] = {}
        impls = {
            "softmaxkit dask": _measured(client, ours, peaks, "softmaxkit dask"),
            "dask primitives": _measured(client, prim, peaks, "dask primitives"),
            "floor": _measured(client, floor, peaks, "floor"),
        }
        extra: dict[str, Any] = {"peak_worker_MB": peaks}
        out.append(
            Case(
                family="dask",
                op=op,
                label=label,
                impls=impls,
                baseline="dask primitives",
                check=check,
                nbytes=x.nbytes,
                extra=extra,
            )
        )
    out[-1].extra["release"] = close  # the runner's hook after the last case
    return out


def main(
    quick: bool = False, repeats: int = 1, only: str | None = None
) -> None:  # pragma: no cover
    """Run the cases once each and print time, throughput and peak worker memory."""
    for case in cases(quick):
        if only and case.op != only:
            continue
        for name, fn in case.impls.items():
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = fn()
                dt = time.perf_counter() - t0
            err = case.check(res) if case.check and name != "floor" else float("nan")
            print(
                f"{case.op:10s} {name:18s} {dt:7.2f} s  {case.nbytes / dt / 1e9:6.3f} GB/s  "
                f"peak worker RSS {case.extra['peak_worker_MB'][name]} MB  err {err:.2e}",
                flush=True,
            )


if __name__ == "__main__":  # pragma: no cover
    import sys

    from softmaxkit.bench.dask import main as _main  # workers must unpickle by module name

    _main(
        quick="--quick" in sys.argv,
        repeats=2 if "--repeat" in sys.argv else 1,
        only=next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None),
    )
