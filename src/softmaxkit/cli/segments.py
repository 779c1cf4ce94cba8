"""CLI plugin of the segment family: ``segment-softmax`` on .npy files, and the demo
step of the HMM forward algorithm (``logmatmulexp``) checked against brute force."""

from __future__ import annotations

import itertools
from typing import TextIO

import numpy as np

__all__ = ["DEMO_STEPS", "hmm_forward", "hmm_weather", "register"]


def _load(path: str, mmap_mode=None) -> np.ndarray:
    """``np.load`` of one array; any parse failure is a one-line ``ValueError``."""
    try:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except OSError:
        raise
    except Exception as exc:  # malformed headers raise many types (tokenize errors, ...)
        raise ValueError(f"{path!r} is not a valid .npy file ({type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path!r} is not a .npy file (an .npz archive?)")
    return arr


def _cmd_segment_softmax(args) -> int:
    from ..segments import segment_log_softmax, segment_softmax

    for path, what in ((args.input, "input"), (args.output, "output")):
        if not path.endswith(".npy"):
            raise ValueError(f"{what} {path!r} must be a .npy file (a name ending in .npy)")
    if (args.ids is None) == (args.offsets is None):
        raise ValueError("give exactly one of --ids IDS.npy and --offsets OFFSETS.npy")
    x = _load(args.input, mmap_mode="r")
    ids = _load(args.ids) if args.ids is not None else None
    offsets = _load(args.offsets) if args.offsets is not None else None
    op = segment_log_softmax if args.log else segment_softmax
    res = op(
        x,
        ids,
        offsets=offsets,
        num_segments=args.num_segments,
        axis=args.axis,
        temperature=args.temperature,
    )
    np.save(args.output, res)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "segment-softmax",
        help="softmax within groups given by segment ids (or CSR offsets) of an axis",
        description="Softmax (--log: log_softmax) of X.npy within the segments of an axis, "
        "given by integer ids (one per position; sorted or not) or CSR offsets.",
    )
    p.add_argument("input", metavar="X.npy", help="values (.npy)")
    p.add_argument("--ids", metavar="IDS.npy", default=None, help="segment id per position")
    p.add_argument("--offsets", metavar="OFFSETS.npy", default=None, help="CSR offsets")
    p.add_argument("-o", "--output", metavar="OUT.npy", required=True, help="result (.npy)")
    p.add_argument("--axis", type=int, default=0, help="the segmented axis (default 0)")
    p.add_argument("--num-segments", type=int, default=None, help="default: max id + 1")
    p.add_argument("--temperature", type=float, default=1.0, help="act on x / T (default 1)")
    p.add_argument("--log", action="store_true", help="log_softmax instead of softmax")
    p.set_defaults(func=_cmd_segment_softmax)


# --------------------------------------------------------------------------- demo: HMM
def hmm_weather(T: int = 2000, seed: int = 0):
    """A 3-state weather HMM (sunny, cloudy, rainy -> dry, damp, wet) and ``T``
    observations sampled from it: ``(log_pi, log_A, log_E, obs)``."""
    pi = np.array([0.6, 0.3, 0.1])
    A = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.3, 0.5]])
    E = np.array([[0.8, 0.15, 0.05], [0.3, 0.5, 0.2], [0.05, 0.25, 0.7]])
    rng = np.random.default_rng(seed)
    obs = np.empty(T, dtype=np.int64)
    s = rng.choice(3, p=pi)
    for t in range(T):
        obs[t] = rng.choice(3, p=E[s])
        s = rng.choice(3, p=A[s])
    return np.log(pi), np.log(A), np.log(E), obs


def hmm_forward(log_pi, log_A, log_E, obs) -> float:
    """Log-likelihood by the forward algorithm in log space:
    ``alpha_t = logmatmulexp(alpha_{t-1}, log A) + log E[:, o_t]``."""
    from ..scan import logmatmulexp
    from ..softmax import logsumexp

    alpha = (log_pi + log_E[:, obs[0]])[None, :]
    for o in obs[1:]:
        alpha = logmatmulexp(alpha, log_A) + log_E[:, o]
    return float(logsumexp(alpha[0]))


def _brute_force(log_pi, log_A, log_E, obs) -> float:
    """log of the sum over every hidden path of its joint probability (float64)."""
    pi, A, E = np.exp(log_pi), np.exp(log_A), np.exp(log_E)
    total = 0.0
    for path in itertools.product(range(3), repeat=len(obs)):
        p = pi[path[0]] * E[path[0], obs[0]]
        for t in range(1, len(obs)):
            p *= A[path[t - 1], path[t]] * E[path[t], obs[t]]
        total += p
    return float(np.log(total))


def _naive_forward(log_pi, log_A, log_E, obs) -> float:
    pi, A, E = np.exp(log_pi), np.exp(log_A), np.exp(log_E)
    alpha = pi * E[:, obs[0]]
    for o in obs[1:]:
        alpha = (alpha @ A) * E[:, o]
    with np.errstate(divide="ignore"):  # on purpose: the underflow is the point
        return float(np.log(alpha.sum()))


def _step_hmm(out: TextIO) -> None:
    log_pi, log_A, log_E, obs = hmm_weather()
    out.write("HMM forward algorithm in log space with logmatmulexp\n")
    out.write(f"   weather HMM (3 states), {obs.size} observations sampled from it\n")
    short = obs[:8]
    bf = _brute_force(log_pi, log_A, log_E, short)
    ours_short = hmm_forward(log_pi, log_A, log_E, short)
    out.write(f"   first 8: brute force over 3^8 paths {bf!r}\n")
    out.write(f"            logmatmulexp forward        {ours_short!r}\n")
    naive = _naive_forward(log_pi, log_A, log_E, obs)
    ours = hmm_forward(log_pi, log_A, log_E, obs)
    out.write(f"   all {obs.size}: probability-space forward log p = {naive} (underflow)\n")
    out.write(f"            logmatmulexp forward        log p = {ours:.6f}\n")


DEMO_STEPS = [_step_hmm]
