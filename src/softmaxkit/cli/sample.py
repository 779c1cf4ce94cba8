"""CLI plugin of sampling: ``softmaxkit sample LOGITS.npy ... -o IDS.npy`` and a demo step."""

from __future__ import annotations

import os
from typing import TextIO

import numpy as np

__all__ = ["DEMO_STEPS", "register"]


def _cmd_sample(args) -> int:
    from .._core import npyio as _npyio
    from ..sampling import sample
    from .segments import _load

    outs = [("output", args.output)]
    if args.logprobs is not None:
        outs.append(("--logprobs", args.logprobs))
    for what, path in [("input", args.input), *outs]:
        if not path.endswith(".npy"):
            raise ValueError(f"{what} {path!r} must be a .npy file (a name ending in .npy)")
    for _, path in outs:
        _npyio.check_target(path)  # refuse a bad target before any work
    fd, _ = _npyio.open_regular(args.input)  # a FIFO or device is refused, not waited on
    os.close(fd)
    x = _load(args.input, mmap_mode="r")
    res = sample(
        x,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        num_samples=args.num_samples,
        seed=args.seed,
        axis=args.axis,
        return_logprobs=args.logprobs is not None,
    )
    ids, lp = res if args.logprobs is not None else (res, None)
    _npyio.write_atomic(args.output, lambda f: np.save(f, ids))
    if lp is not None:
        _npyio.write_atomic(args.logprobs, lambda f: np.save(f, lp))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample token ids from the logits in a .npy file (top-k / top-p / min-p)",
        description="Draw --num-samples token ids per row of LOGITS.npy along --axis from "
        "softmax(logits / T) filtered by top-k, then top-p, then min-p (transformers' "
        "order); saved to IDS.npy as int64 of shape [..., num_samples].  The same --seed "
        "gives the same ids on any machine and thread count.  Temperature 0 is greedy.",
    )
    p.add_argument("input", metavar="LOGITS.npy", help="logits (.npy)")
    p.add_argument("-o", "--output", metavar="IDS.npy", required=True, help="token ids (.npy)")
    p.add_argument("--temperature", "-t", type=float, default=1.0, help="T >= 0 (default 1)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="keep the K largest")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus mass P")
    p.add_argument("--min-p", type=float, default=None, metavar="P", help="keep p >= P p_max")
    p.add_argument("--num-samples", "-n", type=int, default=1, metavar="N", help="per row")
    p.add_argument("--seed", type=int, default=None, help="0 <= SEED < 2**64 (default: random)")
    p.add_argument("--axis", type=int, default=-1, help="vocabulary axis (default -1)")
    p.add_argument(
        "--logprobs", metavar="LP.npy", default=None, help="also save the ids' log-probabilities"
    )
    p.set_defaults(func=_cmd_sample)


def _step_sample(out: TextIO) -> None:
    from ..sampling import sample, sampling_probs

    x = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03]))
    out.write("Sampling 1. top-p 0.8 from one row of logits, seeded\n")
    out.write(f"   p                       = {np.exp(x).round(3).tolist()}\n")
    out.write(f"   sampling_probs(top_p=.8) = {sampling_probs(x, top_p=0.8).round(3).tolist()}\n")
    ids = sample(x, top_p=0.8, num_samples=12, seed=7)
    out.write(f"   sample(seed=7), 12 draws = {ids.tolist()}\n")
    try:
        sample([-np.inf, -np.inf])
    except ValueError as exc:
        out.write(f"   an all -inf row: ValueError: {exc}\n")


DEMO_STEPS = [_step_sample]
