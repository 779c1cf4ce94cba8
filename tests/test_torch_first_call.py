"""The first call of a ``softmaxkit::`` operator does not import ``torch._dynamo``
(``softmaxkit/torch/_nodynamo.py``), and ``torch.compile`` still works after it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

_CHILD = textwrap.dedent(
    """
    import sys, torch
    import softmaxkit.torch as skt
    from softmaxkit.torch import _nodynamo, _ops_dense
    x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1, 2, 3, 4])
    eager = [skt.softmax(x), skt.log_softmax(x), skt.logsumexp(x), skt.cross_entropy(x, t)]
    sum(e.sum() for e in eager).backward()
    g_eager = x.grad.clone()
    assert "torch._dynamo" not in sys.modules, "the first calls imported torch._dynamo"
    fn = next(iter(_ops_dense._softmax_op._backend_fns.values())).__wrapped__
    assert getattr(fn, "__dynamo_disable").__qualname__.startswith("_stand_in")
    x.grad = None
    f = torch.compile(lambda a: [skt.softmax(a), skt.log_softmax(a), skt.logsumexp(a),
                                 skt.cross_entropy(a, t)], fullgraph=True)
    comp = f(x)
    sum(c.sum() for c in comp).backward()
    for a, b in zip(eager, comp):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(x.grad, g_eager)
    assert "torch._dynamo" in sys.modules
    # eager again: the stand-in has put PyTorch's own marker in its place
    skt.softmax(x)
    assert not getattr(fn, "__dynamo_disable").__qualname__.startswith("_stand_in")
    print("ok")
    """
)


def test_first_call_does_not_import_dynamo_and_compile_still_works():
    env = dict(os.environ, SOFTMAXKIT_COMPILE="foreground")
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                       env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


def test_defer_changes_nothing_once_dynamo_is_imported():
    import torch._dynamo  # noqa: F401

    from softmaxkit.torch import _nodynamo, _ops_dense

    assert _nodynamo.defer([_ops_dense._softmax_op]) == 0


def test_our_ops_finds_every_operator_module():
    import softmaxkit.torch  # noqa: F401
    from softmaxkit.torch import _nodynamo

    mods = [m for k, m in sys.modules.items() if k.startswith("softmaxkit.torch._ops")]
    names = {op._name for op in _nodynamo.our_ops(mods)}
    assert {"softmax", "log_softmax", "cross_entropy"} <= names
