"""Benchmark cases of the vocab family: one pass over [tokens x vocabulary] logits.

``cases(quick)`` returns :class:`softmaxkit.bench.timing.Case` objects for the runner
behind ``softmaxkit bench --family vocab``; it concatenates the lists of every builder
in ``_BUILDERS`` (sampling here; other parts of issue 21 append theirs).  Peers are
optional: torch implementations are left out when torch is not installed.

Sampling: ``softmaxkit.sample(x, top_p=0.9)`` against PyTorch CPU's routes, each
timed as a user would run it:

* ``torch multinomial``: ``softmax -> torch.multinomial`` (no filter: the cheapest
  torch call, drawing from the unfiltered distribution);
* ``torch race``: ``softmax -> exponential_ -> div -> argmax`` (vLLM's CPU sampler,
  no filter);
* ``torch top-p multinomial`` / ``torch top-p race``: the same after the top-p
  filter as transformers' ``TopPLogitsWarper`` and vLLM's ``apply_top_k_top_p`` do it
  (sort, softmax, cumsum, mask, scatter back): the like-for-like comparison.

``check`` is the fraction of draws outside the top-p set (0 for the filtered routes;
the unfiltered torch routes show how often they draw what top-p removes).

The full run adds ``sample top_k=50``, ``sample min_p=0.1`` and ``sample`` (no
filter) on the same inputs against the two unfiltered torch routes (``check``: the
fraction of draws outside the filter's support).
"""

from __future__ import annotations

import numpy as np

from .timing import Case

__all__ = ["cases"]


def _logits(rows: int, n: int, seed: int) -> np.ndarray:
    # std 3 normal logits (the online family's top-k inputs): top-p 0.9 keeps ~5 % of
    # a 128k row
    return np.random.default_rng(seed).standard_normal((rows, n), dtype=np.float32) * 3


def _sampling_case(rows: int, n: int, top_p: float = 0.9) -> Case:
    from ..sampling import sample, sampling_probs

    x = _logits(rows, n, 21)
    support = sampling_probs(x, top_p=top_p) > 0
    impls = {"softmaxkit": lambda: sample(x, top_p=top_p, seed=1)}
    try:
        import torch

        xt = torch.from_numpy(x)
        gen = torch.Generator().manual_seed(1)

        def top_p_filter(logits):
            s, idx = torch.sort(logits, dim=-1, descending=False)
            cum = s.softmax(dim=-1).cumsum(dim=-1)
            drop = cum <= 1 - top_p
            drop[..., -1:] = False
            return logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))

        def race(logits):
            p = torch.softmax(logits, dim=-1)
            q = torch.empty_like(p).exponential_(generator=gen)
            return p.div_(q).argmax(dim=-1, keepdim=True)

        impls["torch multinomial"] = lambda: torch.multinomial(
            torch.softmax(xt, dim=-1), 1, generator=gen
        )
        impls["torch race"] = lambda: race(xt)
        impls["torch top-p multinomial"] = lambda: torch.multinomial(
            torch.softmax(top_p_filter(xt), dim=-1), 1, generator=gen
        )
        impls["torch top-p race"] = lambda: race(top_p_filter(xt))
    except ImportError:  # pragma: no cover - torch is optional
        pass

    def check(ids) -> float:
        ids = np.asarray(ids).reshape(rows, -1)
        return float(1.0 - np.take_along_axis(support, ids, axis=1).mean())

    return Case(
        family="vocab",
        op="sample top_p",
        label=f"[{rows}, {n}] float32, top_p={top_p}",
        impls=impls,
        baseline="softmaxkit",
        check=check,
        nbytes=x.nbytes,
        extra={"kept_per_row": float(support.sum(axis=1).mean())},
    )


def _filter_case(rows: int, n: int, kw: dict) -> Case:
    """``softmaxkit.sample(x, **kw)`` (top-k, min-p or no filter) against the two
    unfiltered torch routes."""
    from ..sampling import sample, sampling_probs

    x = _logits(rows, n, 21)
    support = sampling_probs(x, **kw) > 0
    impls = {"softmaxkit": lambda: sample(x, seed=1, **kw)}
    try:
        import torch

        xt = torch.from_numpy(x)
        gen = torch.Generator().manual_seed(1)

        def race(logits):
            p = torch.softmax(logits, dim=-1)
            q = torch.empty_like(p).exponential_(generator=gen)
            return p.div_(q).argmax(dim=-1, keepdim=True)

        impls["torch multinomial"] = lambda: torch.multinomial(
            torch.softmax(xt, dim=-1), 1, generator=gen
        )
        impls["torch race"] = lambda: race(xt)
    except ImportError:  # pragma: no cover - torch is optional
        pass

    def check(ids) -> float:
        ids = np.asarray(ids).reshape(rows, -1)
        return float(1.0 - np.take_along_axis(support, ids, axis=1).mean())

    name = " ".join(f"{k}={v}" for k, v in kw.items())
    return Case(
        family="vocab",
        op=f"sample {name}".strip(),
        label=f"[{rows}, {n}] float32",
        impls=impls,
        baseline="softmaxkit",
        check=check,
        nbytes=x.nbytes,
        extra={"kept_per_row": float(support.sum(axis=1).mean())},
    )


def _sampling_cases(quick: bool) -> list[Case]:
    if quick:
        return [_sampling_case(8, 32000), _sampling_case(1, 65536)]
    out = [_sampling_case(64, 128000), _sampling_case(1, 262144)]
    for rows, n in ((64, 128000), (1, 262144)):
        for kw in ({"top_k": 50}, {"min_p": 0.1}, {}):
            out.append(_filter_case(rows, n, kw))
    return out


_BUILDERS = [_sampling_cases]


def cases(quick: bool) -> list[Case]:
    """Sampling with top-p 0.9 on [64, 128000] and [1, 262144] float32 (smaller when
    ``quick``; the full run adds top-k 50, min-p 0.1 and no filter), plus the cases of
    the other builders in ``_BUILDERS``."""
    out: list[Case] = []
    for build in _BUILDERS:
        out.extend(build(quick))
    return out
