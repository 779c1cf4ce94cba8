"""Which driver takes a non-NumPy input, and the registry of framework adapters.

Decision (issue 19, "no import cycles"): the public functions hand a torch tensor
to ``softmaxkit.torch``'s operators, and those operators call the public functions
on NumPy views.  So that the import graph stays one-way (``softmaxkit.torch`` ->
public layer -> drivers -> kernels), the public layer never imports the adapter:
it calls :func:`route` with a *kind* (``"torch"``), and the adapter registers its
handler with :func:`register` when it is imported.  The first :func:`route` of a
kind imports the adapter by the module name listed in ``ADAPTERS`` (a string, as
``cli/core.py`` loads its plugins), which registers it.  A new framework adapter is
one line in that table plus one ``register`` call in its module.

Private.  :func:`foreign` decides by the type's module name and ``sys.modules``,
so it never imports dask or torch itself.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ADAPTERS", "foreign", "register", "route", "routed"]

F = TypeVar("F", bound=Callable[..., Any])

#: Handler of one kind: ``handler(name, args)`` runs public function ``name`` with its
#: arguments ``args`` (a dict), or returns ``NotImplemented`` to decline the call.
Handler = Callable[[str, dict[str, Any]], Any]

#: kind -> module that registers that kind's handler when imported.
ADAPTERS: dict[str, str] = {"torch": "softmaxkit.torch._route"}

_HANDLERS: dict[str, Handler] = {}


def foreign(x: Any) -> str | None:
    """Name of the non-NumPy driver that should handle ``x``, if any."""
    mod = type(x).__module__.split(".")[0]
    if mod == "dask" and "dask" in sys.modules:
        return "dask"
    if mod == "torch" and "torch" in sys.modules:
        return "torch"  # softmaxkit.torch's operators (the Array API path where they stop)
    if mod in ("torch", "cupy", "jax", "jaxlib", "array_api_strict"):
        return "array_api"
    return None


def register(kind: str, handler: Handler) -> None:
    """Make ``handler`` the adapter of ``kind`` (called by the adapter module itself)."""
    _HANDLERS[kind] = handler


def route(kind: str, name: str, args: dict[str, Any]) -> Any:
    """Run public function ``name`` through the adapter of ``kind`` (imported on first use).

    Returns what the handler returns: the result, or ``NotImplemented`` when the
    adapter does not cover the call (the caller then takes its generic path).
    """
    handler = _HANDLERS.get(kind)
    if handler is None:
        importlib.import_module(ADAPTERS[kind])  # the module registers itself
        handler = _HANDLERS[kind]
    return handler(name, args)


def routed(name: str) -> Callable[[F], F]:
    """Decorator: a call whose first argument is a torch tensor goes to the torch adapter.

    The call's arguments are bound to the function's signature (defaults applied) and
    passed to :func:`route` as one dict; when the adapter declines
    (``NotImplemented``) the function runs as written.  Any other first argument costs
    one type-name check.  The wrapper keeps the function's signature, docstring and
    ``__wrapped__`` (autodoc and doctest see the original).
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if args and foreign(args[0]) == "torch":
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                res = route("torch", name, dict(bound.arguments))
                if res is not NotImplemented:
                    return res
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
