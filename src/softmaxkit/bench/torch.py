"""Benchmark cases of the framework front doors: ``softmaxkit.torch`` and ``softmaxkit.jax``.

Opt-in (``softmaxkit bench --family torch``): it needs torch (and jax/optax for the
JAX case) and compiles ``torch.compile`` graphs.

* softmax / log_softmax / logsumexp on tensors, forward and forward+backward, at
  [4096, 32000] and [65536, 128] in float32 and bfloat16: ``softmaxkit.torch`` vs
  torch eager and ``torch.compile`` (inductor).
* cross_entropy forward+backward at the same shapes (float32, bfloat16).
* Under each of those cases, two bounds measured in the same run: the read+write
  floor (copies of the input, its memory bound) and one exp pass (our logsumexp
  forward on the input, its compute bound: ``_exp_pass``).
* linear_cross_entropy forward+backward at N=1024, d=512, V=32000 float32 (the
  issue's [8192, 2048] x [128000, 2048] scaled down by 128x in matmul work so the
  case finishes on a 2-core VM: at N=4096, d=1024, V=128000 one forward+backward
  took ~50 s materialised, ~2 min ours and ~3 min ``F.linear_cross_entropy``
  chunked, extrapolated from 1.5 / 3.9 / 6-7.7 s of CPU time measured here at
  this size, so the case never finished): ours vs materialised logits and
  ``F.linear_cross_entropy`` with ``LinearCrossEntropyOptions()`` (its chunked
  path), each with its peak extra resident memory.
* ``softmaxkit.jax.cross_entropy`` vs ``optax.softmax_cross_entropy_with_integer_labels``
  under ``jax.jit(jax.value_and_grad(...))`` at [4096, 32000] float32.

Inputs are built on first use and shared by the cases of one shape and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .losses import _with_peak
from .timing import Case

__all__ = ["cases"]

_INPUTS: dict[tuple, Any] = {}


def _input(shape, dtype_name):
    import torch

    key = (shape, dtype_name)
    if key not in _INPUTS:
        _INPUTS.clear()  # one shape's inputs at a time
        g = torch.Generator().manual_seed(0)
        x = (torch.randn(*shape, generator=g) * 2).to(getattr(torch, dtype_name))
        t = torch.randint(0, shape[-1], shape[:-1], generator=g)
        _INPUTS[key] = (x, t)
    return _INPUTS[key]


def _floor_input(shape, dtype_name):
    """The case's input as a NumPy array (bfloat16 as its bits), for the floor copy."""

    def get():
        import numpy as np
        import torch

        x = _input(shape, dtype_name)[0]
        if x.dtype == torch.bfloat16:
            return x.view(torch.int16).numpy().view(np.uint16)
        return x.numpy()

    return get


def _exp_pass(shape, dtype_name) -> Callable[[], Any]:
    """``"floor exp"``: our logsumexp forward on the case's input, without autograd.
    One read of the input and one exp a value, nothing input-sized written: the
    compute bound of any op that exponentiates every value once (a softmax forward, a
    cross-entropy forward+backward), as the read+write floor is its memory bound."""
    import softmaxkit.torch as skt

    return lambda: skt.logsumexp(_input(shape, dtype_name)[0], -1)


def _dense_cases(shape, dtype_name, backward: bool) -> list[Case]:
    import torch

    import softmaxkit.torch as skt

    ours = {"softmax": skt.softmax, "log_softmax": skt.log_softmax, "logsumexp": skt.logsumexp}
    theirs = {
        "softmax": lambda a: torch.softmax(a, -1),
        "log_softmax": lambda a: torch.log_softmax(a, -1),
        "logsumexp": lambda a: torch.logsumexp(a, -1),
    }
    out = []
    for op in ("softmax", "log_softmax", "logsumexp"):
        compiled = torch.compile(theirs[op], fullgraph=True)

        def make(f):
            if not backward:
                return lambda: f(_input(shape, dtype_name)[0])

            upstream: dict = {}  # the upstream gradient, made once (not timed)

            def run():
                x = _input(shape, dtype_name)[0].detach().requires_grad_()
                y = f(x)
                g = upstream.get(y.shape)
                if g is None:
                    g = upstream[y.shape] = torch.ones_like(y)
                y.backward(g)
                return x.grad

            return run

        impls: dict[str, Callable[[], Any]] = {
            "softmaxkit": make(ours[op]),
            "torch eager": make(theirs[op]),
            "torch.compile": make(compiled),
            "floor exp": _exp_pass(shape, dtype_name),
        }
        itemsize = 2 if dtype_name == "bfloat16" else 4
        n = shape[0] * shape[1] * itemsize
        # input-sized arrays moved, in copies of the input (a read and a write each):
        # softmax / log_softmax forward reads x, writes y (1); forward + backward adds
        # reading y and g and writing the gradient (3/2); logsumexp's forward only
        # reads x (1/2), its backward reads x and writes the gradient (1).  The
        # upstream gradient g is made once per case, outside the timing: a fresh
        # torch.ones_like of [65536, 128] float32 took 7-10 ms (its pages faulted in
        # on every call), more than either implementation's backward
        lse = op == "logsumexp"
        copies = (1.5 if lse else 2.5) if backward else (0.5 if lse else 1.0)
        out.append(
            Case(
                family="torch",
                op=f"{op} {'fwd+bwd' if backward else 'fwd'}",
                label=f"[{shape[0]}, {shape[1]}] {dtype_name}",
                impls=impls,
                baseline="softmaxkit",
                nbytes=int(2 * copies * n),
                extra={"input": _floor_input(shape, dtype_name), "floor_copies": copies},
            )
        )
    return out


def _ce_case(shape, dtype_name) -> Case:
    import torch
    import torch.nn.functional as F

    import softmaxkit.torch as skt

    compiled = torch.compile(F.cross_entropy, fullgraph=True)

    def make(f):
        def run():
            x, t = _input(shape, dtype_name)
            x = x.detach().requires_grad_()
            loss = f(x, t)
            loss.backward()
            return x.grad

        return run

    return Case(
        family="torch",
        op="cross_entropy fwd+bwd",
        label=f"[{shape[0]}, {shape[1]}] {dtype_name}",
        # reads the logits, writes their gradient: one copy
        nbytes=2 * math.prod(shape) * (2 if dtype_name == "bfloat16" else 4),
        extra={"input": _floor_input(shape, dtype_name), "floor_copies": 1.0},
        impls={
            "softmaxkit": make(skt.cross_entropy),
            "torch eager": make(F.cross_entropy),
            "torch.compile": make(compiled),
            "floor exp": _exp_pass(shape, dtype_name),
        },
        baseline="softmaxkit",
    )


def _lce_case(N, d, V) -> Case:
    import torch
    import torch.nn.functional as F

    import softmaxkit.torch as skt

    g = torch.Generator().manual_seed(1)
    h0 = torch.randn(N, d, generator=g)
    W0 = torch.randn(V, d, generator=g) * d**-0.5
    t = torch.randint(0, V, (N,), generator=g)
    extra: dict[str, Any] = {"logits_MiB": round(N * V * 4 / 2**20, 1)}

    def make(f):
        def run():
            h = h0.detach().requires_grad_()
            W = W0.detach().requires_grad_()
            loss = f(h, W)
            loss.backward()
            return float(loss.detach())

        return run

    impls: dict[str, Callable[[], Any]] = {
        "softmaxkit": make(lambda h, W: skt.linear_cross_entropy(h, W, t)),
        "torch materialised": make(lambda h, W: F.cross_entropy(h @ W.T, t)),
    }
    if hasattr(torch.nn, "LinearCrossEntropyOptions") and hasattr(F, "linear_cross_entropy"):
        opts = torch.nn.LinearCrossEntropyOptions()
        impls["torch F.linear_cross_entropy chunked"] = make(
            lambda h, W: F.linear_cross_entropy(h, W, t, options=opts)
        )
    return Case(
        family="torch",
        op="linear_cross_entropy fwd+bwd",
        label=f"N={N} d={d} V={V} float32",
        impls={k: _with_peak(k, f, extra) for k, f in impls.items()},
        baseline="softmaxkit",
        extra=extra,
    )


def _jax_case(shape) -> Case | None:
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:  # pragma: no cover - jax is in the test extra
        return None
    import numpy as np

    import softmaxkit.jax as skj

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * 2)
    t = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]).astype(np.int32))
    ours = jax.jit(jax.value_and_grad(lambda a: skj.cross_entropy(a, t)))
    ref = jax.jit(
        jax.value_and_grad(lambda a: optax.softmax_cross_entropy_with_integer_labels(a, t).mean())
    )

    def block(f):
        return lambda: jax.block_until_ready(f(x))

    return Case(
        family="torch",
        op="jax cross_entropy jit value_and_grad",
        label=f"[{shape[0]}, {shape[1]}] float32",
        impls={"softmaxkit": block(ours), "optax": block(ref)},
        baseline="softmaxkit",
    )


def cases(quick: bool) -> list[Case]:
    """The framework cases; ``quick`` uses small shapes."""
    shapes = [(512, 8000), (16384, 128)] if quick else [(4096, 32000), (65536, 128)]
    out: list[Case] = []
    for shape in shapes:
        for dt in ("float32", "bfloat16"):
            out += _dense_cases(shape, dt, backward=False)
            out += _dense_cases(shape, dt, backward=True)
            out.append(_ce_case(shape, dt))
    out.append(_lce_case(*((512, 128, 16000) if quick else (1024, 512, 32000))))
    jc = _jax_case(shapes[0])
    if jc is not None:
        out.append(jc)
    return out
