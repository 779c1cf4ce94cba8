"""The segment family's speed targets (issue 22) on ONE thread, in one process.

    PYTHONPATH=src python tools/segments_probe.py [--rounds N] [--case NAME ...]

Each case times softmaxkit and its peers with the same inputs as
``softmaxkit bench --family segments`` (``bench/segments.py``), interleaved, one call
of each per round with the order rotating, every library on one thread (Numba,
OpenBLAS / MKL, PyTorch), by the calling thread's CPU time (``time.thread_time``).
On a shared host the wall clock of a 2-thread run moves 2x with the other jobs'
load; one thread's CPU time does not, and it compares the work each library does
(numbagg's grouped kernels are single-threaded).  Prints the median times and the
ratios the targets are stated in.  A development tool, not a test.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ.setdefault("SOFTMAXKIT_COMPILE", "foreground")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402


def _cases():
    from softmaxkit import logcumsumexp, logmatmulexp, segment_logsumexp, segment_softmax

    out = {}
    n, groups = 10**7, 10**5
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    ids_sorted = np.sort(rng.integers(0, groups, n))
    perm = rng.permutation(n)
    try:
        from numbagg import group_nansum
    except ImportError:  # pragma: no cover - optional peer
        group_nansum = None
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - optional peer
        torch = None
    for order in ("sorted", "unsorted"):
        ids = ids_sorted if order == "sorted" else ids_sorted[perm]
        xs = x if order == "sorted" else x[perm]
        impls = {"ours lse": lambda xs=xs, ids=ids: segment_logsumexp(xs, ids, num_segments=groups)}
        impls["ours softmax"] = lambda xs=xs, ids=ids: segment_softmax(xs, ids, num_segments=groups)
        ratios = []
        if group_nansum is not None:
            impls["numbagg group_nansum"] = lambda xs=xs, ids=ids: group_nansum(
                xs, ids, num_labels=groups
            )
            ratios.append(
                ("ours lse / numbagg (target <= 1.5)", "ours lse", "numbagg group_nansum")
            )
        if torch is not None:
            from softmaxkit.bench.segments import _torch_segment

            xt, it = torch.from_numpy(xs), torch.from_numpy(ids)
            impls["torch PyG softmax"] = lambda xt=xt, it=it: _torch_segment(
                torch, xt, it, groups, "softmax"
            )
            ratios.append(("PyG / ours softmax (target >= 5)", "torch PyG softmax", "ours softmax"))
        out[f"segments-{order}"] = (impls, ratios)
    xl = np.random.default_rng(1).standard_normal((512, 32000), dtype=np.float32) * 3
    impls = {
        "ours": lambda: logcumsumexp(xl),
        "np.logaddexp.accumulate": lambda: np.logaddexp.accumulate(xl, axis=-1),
    }
    ratios = [("NumPy / ours (target >= 20)", "np.logaddexp.accumulate", "ours")]
    if torch is not None:
        xlt = torch.from_numpy(xl)
        impls["torch.logcumsumexp"] = lambda: torch.logcumsumexp(xlt, -1)
        ratios.append(("torch / ours (target >= 2)", "torch.logcumsumexp", "ours"))
    out["logcumsumexp [512, 32000] float32"] = (impls, ratios)
    rng = np.random.default_rng(2)
    A = rng.standard_normal((1024, 1024))
    B = rng.standard_normal((1024, 1024))

    def naive64():  # 64 of the 1024 rows of the broadcast form; scaled by 16 below
        t = A[:64, :, None] + B[None]
        m = t.max(1)
        return m + np.log(np.exp(t - m[:, None]).sum(1))

    impls = {"ours": lambda: logmatmulexp(A, B), "BLAS A @ B": lambda: A @ B, "naive/16": naive64}
    ratios = [
        ("ours / BLAS (target <= 3)", "ours", "BLAS A @ B"),
        ("naive / ours (target >= 50)", "naive/16", "ours"),
    ]
    out["logmatmulexp [1024, 1024]^2 float64"] = (impls, ratios)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--case", action="append", help="a case name prefix (repeatable)")
    args = ap.parse_args()
    numba.set_num_threads(1)
    for name, (impls, ratios) in _cases().items():
        if args.case and not any(name.startswith(c) for c in args.case):
            continue
        for f in impls.values():  # warm-up (compiles)
            f()
        names = list(impls)
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.rounds):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.thread_time()
                impls[k]()
                times[k].append(time.thread_time() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        if "naive/16" in med:
            med["naive/16"] *= 16
        print(f"{name}:")
        for k in names:
            print(f"    {k:28s} {1e3 * med[k]:9.1f} ms")
        for label, a, b in ratios:
            print(f"    {label}: {med[a] / med[b]:.2f}")


if __name__ == "__main__":
    main()
