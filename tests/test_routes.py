"""The import graph of the losses and the framework routing stays one-way (issue 19).

The graph is read statically from every ``import`` statement in the package, the
ones inside functions too (a lazy import is still a dependency), so these tests
import nothing heavy and run in well under a second.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

import softmaxkit
from softmaxkit._core import routes

PKG = pathlib.Path(softmaxkit.__file__).parent


def _modules():
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = ["softmaxkit", *p.relative_to(PKG).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def _graph():
    """module -> the softmaxkit modules it imports anywhere in its source."""
    mods = _modules()
    graph = {}
    for mod, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [f"{prefix}.{a.name}" for a in node.names]
                names = [n if n in mods else prefix for n in names]
            for n in names:
                while n not in mods and "." in n:
                    n = n.rsplit(".", 1)[0]
                if n in mods and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(set(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


LOSS_AND_ROUTING = {
    "softmaxkit.losses",
    "softmaxkit._linear_ce",
    "softmaxkit._margin",
    "softmaxkit._vocab",
    "softmaxkit._core.ce",
    "softmaxkit._core.losscommon",
    "softmaxkit._core.losskw",
    "softmaxkit._core.routes",
    "softmaxkit.softmax",
    "softmaxkit.torch._route",
}


def test_no_import_cycle_through_the_losses_or_the_torch_route():
    graph = _graph()
    assert LOSS_AND_ROUTING <= set(graph)
    bad = [sorted(c) for c in _cycles(graph) if c & LOSS_AND_ROUTING]
    assert not bad, f"import cycles: {bad}"


def test_public_layer_never_imports_the_torch_adapter():
    # softmaxkit.torch sits above the public layer: the public functions reach it
    # through softmaxkit._core.routes by module name, never by an import statement
    above = ("softmaxkit.torch", "softmaxkit.jax", "softmaxkit.cli", "softmaxkit.bench")
    graph = _graph()
    bad = {
        m: sorted(d for d in deps if d.startswith("softmaxkit.torch"))
        for m, deps in graph.items()
        if not m.startswith(above)
    }
    assert not {m: d for m, d in bad.items() if d}


def test_route_calls_the_registered_handler_and_passes_not_implemented(monkeypatch):
    seen = []

    def handler(name, args):
        seen.append((name, args))
        return NotImplemented if name == "decline" else 42

    monkeypatch.setitem(routes._HANDLERS, "fake", handler)
    assert routes.route("fake", "softmax", {"x": 1}) == 42
    assert routes.route("fake", "decline", {}) is NotImplemented
    assert seen == [("softmax", {"x": 1}), ("decline", {})]


def test_route_imports_the_adapter_by_module_name(monkeypatch):
    # an unregistered kind is imported from the ADAPTERS table; the module registers
    monkeypatch.setitem(routes.ADAPTERS, "fake2", "softmaxkit._core.losskw")
    with pytest.raises(KeyError, match="fake2"):  # imported, but it registers nothing
        routes.route("fake2", "softmax", {})


def test_torch_adapter_registers_itself_on_first_route():
    pytest.importorskip("torch")
    code = (
        "import sys, softmaxkit, torch\n"
        "from softmaxkit._core import routes\n"
        "assert 'softmaxkit.torch' not in sys.modules and 'torch' not in routes._HANDLERS\n"
        "y = softmaxkit.softmax(torch.tensor([[1.0, 2.0]]))\n"
        "assert 'softmaxkit.torch._route' in sys.modules and 'torch' in routes._HANDLERS\n"
        "assert type(y) is torch.Tensor and abs(float(y.sum()) - 1.0) < 1e-6\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_no_import_cycle_anywhere_in_the_package():
    cycles = [sorted(c) for c in _cycles(_graph())]
    assert not cycles, f"import cycles: {cycles}"


def test_layers_below_the_public_functions_never_import_them():
    # drivers -> _kernels, _core: never up into the public modules, the CLI or the bench
    lower = ("softmaxkit.drivers", "softmaxkit._kernels", "softmaxkit._core")
    bad = {
        m: sorted(d for d in deps if not d.startswith(lower))
        for m, deps in _graph().items()
        if m.startswith(lower)
    }
    assert not {m: d for m, d in bad.items() if d}
