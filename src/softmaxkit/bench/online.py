"""Benchmark cases of the online family: fused top-k and streaming softmax.

``cases(quick)`` returns :class:`softmaxkit.bench.timing.Case` objects for the runner
behind ``softmaxkit bench``.  Peers are optional: torch cases are skipped when torch
is not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from .timing import Case

__all__ = ["cases"]


def _topk_case(rows: int, n: int, k: int) -> Case:
    from ..online import topk_softmax
    from ..softmax import softmax

    x = np.random.default_rng(0).standard_normal((rows, n), dtype=np.float32) * 3
    ref_i = np.argsort(-x.astype(np.float64), axis=-1, kind="stable")[:, :k]
    ref_p = np.take_along_axis(softmax(x.astype(np.float64)), ref_i, axis=-1)

    def numpy_pair():
        p = softmax(x)
        i = np.argpartition(-p, k - 1, axis=-1)[:, :k]
        pv = np.take_along_axis(p, i, axis=-1)
        o = np.argsort(-pv, axis=-1, kind="stable")
        return np.take_along_axis(pv, o, axis=-1), np.take_along_axis(i, o, axis=-1)

    impls = {"softmaxkit": lambda: topk_softmax(x, k), "numpy": numpy_pair}
    try:
        import torch

        xt = torch.from_numpy(x)
        impls["torch"] = lambda: torch.topk(torch.softmax(xt, -1), k, dim=-1)
    except ImportError:  # pragma: no cover - torch is optional
        pass

    def check(res) -> float:
        p, i = res
        p = np.asarray(p, dtype=np.float64)
        same = np.asarray(i) == ref_i
        err = float(np.max(np.abs(p - ref_p) / ref_p))
        return err if same.all() else float("inf")

    return Case(
        family="online",
        op="topk_softmax",
        label=f"[{rows}, {n}] float32, k={k}",
        impls=impls,
        baseline="torch" if "torch" in impls else "softmaxkit",
        check=check,
        nbytes=x.nbytes + rows * k * 12,
    )


class _StreamFiles:
    """The stream case's input ``x.npy`` and output ``p.npy``, in a temporary directory
    made on first use (so that building the case, e.g. for a run that ``--op``
    filters it out of, writes nothing) and removed by :meth:`release`, which the
    runner calls after the case, also when the case fails or is interrupted."""

    def __init__(self, rows: int, n: int) -> None:
        self.shape = (rows, n)
        self.tmp: str | None = None
        self.x: np.ndarray | None = None

    def paths(self) -> tuple[str, str]:
        if self.tmp is None:
            x = np.random.default_rng(1).standard_normal(self.shape, dtype=np.float32)
            self.tmp = tempfile.mkdtemp(prefix="softmaxkit-bench-")
            self.x = x
            np.save(os.path.join(self.tmp, "x.npy"), x)
        return os.path.join(self.tmp, "x.npy"), os.path.join(self.tmp, "p.npy")

    def input(self) -> np.ndarray:
        self.paths()
        assert self.x is not None
        return self.x

    def release(self) -> None:
        tmp, self.tmp, self.x = self.tmp, None, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _stream_case(rows: int, n: int) -> Case:
    from ..online import stream_softmax
    from ..softmax import softmax

    files = _StreamFiles(rows, n)

    def stream():
        src, dst = files.paths()
        return stream_softmax(src, dst, memory="64M")

    def dense_load_save():
        src, dst = files.paths()
        np.save(dst, softmax(np.load(src)))
        return dst

    def check(path) -> float:
        want = softmax(files.input().astype(np.float64))
        return float(np.max(np.abs(np.load(path) - want) / want))

    nbytes = rows * n * 4
    return Case(
        family="online",
        op="stream_softmax",
        label=f"[{rows}, {n}] float32 .npy, memory=64M",
        impls={
            "softmaxkit stream": stream,
            "numpy load+softmax+save": dense_load_save,
        },
        baseline="numpy load+softmax+save",
        check=check,
        nbytes=2 * nbytes,
        extra={"file_bytes": nbytes, "release": files.release},
    )


def cases(quick: bool) -> list[Case]:
    """Top-k on [4096, 32000] k=5 (smaller when ``quick``) and a streaming case."""
    if quick:
        return [_topk_case(256, 32000, 5), _stream_case(64, 100_000)]
    return [_topk_case(4096, 32000, 5), _stream_case(512, 200_000)]
