"""The first call of a ``softmaxkit::`` operator without importing ``torch._dynamo``.

PyTorch wraps every :func:`torch.library.custom_op` implementation in
``torch._disable_dynamo``, which imports ``torch._dynamo`` on the op's first call
(1.5–4 s on the 2-core development machine: more than everything else the first
call does) only to mark the implementation as not to be traced.  While
``torch._dynamo`` has not been imported, nothing can be tracing, so the mark is not
needed: :func:`defer` gives each of our implementations a stand-in for the mark that
calls the implementation directly until ``torch._dynamo`` is imported (by
``torch.compile``, say), and from then on installs and uses the real one.  It uses
the attribute ``torch._compile._disable_dynamo`` caches the mark in
(``__dynamo_disable``, PyTorch 2.13); if PyTorch's layout differs it does nothing,
and the op behaves as PyTorch makes it (``tests/test_torch_first_call.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

_ATTR = "__dynamo_disable"


def _stand_in(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return fn(*args, **kwargs)  # nothing is tracing: no mark needed
        real = dynamo.disable(fn, False, wrapping=False)
        setattr(fn, _ATTR, real)  # (what torch._disable_dynamo caches)
        return real(*args, **kwargs)

    return call


def defer(ops: Iterable[Any]) -> int:
    """Give the implementations of the custom ops ``ops`` the stand-in; returns how
    many were changed (0 where PyTorch's layout is not the expected one)."""
    if "torch._dynamo" in sys.modules:
        return 0  # already paid for: keep PyTorch's own path
    n = 0
    for op in ops:
        fns = getattr(op, "_backend_fns", None)
        if not isinstance(fns, dict):
            continue
        for wrapper in fns.values():
            fn = getattr(wrapper, "__wrapped__", None)
            if fn is None or not callable(fn) or getattr(fn, _ATTR, None) is not None:
                continue
            setattr(fn, _ATTR, _stand_in(fn))
            n += 1
    return n


def our_ops(modules: Iterable[Any]) -> list[Any]:
    """The ``torch.library.custom_op`` objects defined in ``modules``."""
    try:
        from torch._library.custom_ops import CustomOpDef
    except ImportError:  # pragma: no cover - another PyTorch layout
        return []
    return [v for m in modules for v in vars(m).values() if isinstance(v, CustomOpDef)]
