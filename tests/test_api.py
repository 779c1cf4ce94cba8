"""The public surface: ``__all__`` completeness, signatures, docstrings, no mutation.

The ``__all__`` and docstring tests are generic over ``softmaxkit.__all__`` so that
every family added later is covered without editing this file.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from strategies import OPS, call, call_reference, make_array

import softmaxkit
from softmaxkit import reference

SRC = Path(softmaxkit.__file__).resolve().parents[1]


def _public_names(module):
    """Names a user would take for API: not underscored, not a submodule, not an import."""
    names = set()
    for name, obj in vars(module).items():
        if name.startswith("_") or isinstance(obj, types.ModuleType):
            continue
        if name in ("annotations", "version", "PackageNotFoundError"):
            continue  # __future__ feature and importlib.metadata helpers
        names.add(name)
    return names


@pytest.mark.parametrize("module", [softmaxkit, reference], ids=["softmaxkit", "reference"])
def test_all_is_complete_sorted_and_exists(module):
    exported = module.__all__
    assert exported == sorted(exported), "__all__ must be sorted"
    assert len(set(exported)) == len(exported), "__all__ has duplicates"
    for name in exported:
        assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name!r}"
    missing = _public_names(module) - set(exported)
    assert not missing, f"public names not in {module.__name__}.__all__: {sorted(missing)}"


def test_all_lists_the_dense_api():
    assert {"softmax", "log_softmax", "logsumexp", "__version__"} <= set(softmaxkit.__all__)
    assert isinstance(softmaxkit.__version__, str) and softmaxkit.__version__


def test_submodule_all_entries_exist():
    # every module's own __all__ must name things it defines
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(softmaxkit.__path__, "softmaxkit."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", []):
            assert hasattr(mod, name), f"{info.name}.__all__ lists missing {name!r}"


def _public_functions():
    return [
        (name, getattr(softmaxkit, name))
        for name in softmaxkit.__all__
        if inspect.isfunction(getattr(softmaxkit, name))
    ]


@pytest.mark.parametrize(
    ("name", "fn"), _public_functions(), ids=lambda v: getattr(v, "__name__", v)
)
def test_public_function_docstrings(name, fn):
    doc = inspect.getdoc(fn) or ""
    # A function without parameters has no Parameters section (numpydoc would render
    # a "None" entry as a parameter named None).
    sections = ("Parameters", "Returns", "Examples")
    if not inspect.signature(fn).parameters:
        sections = sections[1:]
    for section in sections:
        assert f"\n{section}\n" in doc, f"{name}: numpydoc section {section!r} missing"
    assert ">>>" in doc, f"{name}: no doctested example"
    assert "memory" in doc.lower(), f"{name}: the peak extra memory is not documented"


@pytest.mark.parametrize("name", OPS)
def test_dense_signatures(name):
    sig = inspect.signature(getattr(softmaxkit, name))
    params = list(sig.parameters.values())
    assert params[0].name == "x" and params[0].kind is inspect.Parameter.POSITIONAL_ONLY
    assert params[1].name == "axis" and params[1].default == -1
    kw = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    common = {"temperature": 1.0, "where": None, "dtype": None, "out": None}
    assert common.items() <= kw.items()
    if name == "logsumexp":
        assert {"b": None, "keepdims": False, "return_sign": False}.items() <= kw.items()
    # the reference twin has the same signature without dtype= and out=
    rsig = inspect.signature(getattr(reference, name))
    expected = [p for p in params if p.name not in ("dtype", "out")]
    assert [(p.name, p.kind, p.default) for p in rsig.parameters.values()] == [
        (p.name, p.kind, p.default) for p in expected
    ]


def test_reference_twins_are_public_functions():
    for name in reference.__all__:
        assert name in softmaxkit.__all__, f"reference.{name} has no public counterpart"


def test_import_is_light():
    # import softmaxkit must not import Numba (kernels load lazily), Dask, SciPy or torch
    code = (
        "import sys, softmaxkit; "
        "print(sorted(m for m in ('numba', 'dask', 'scipy', 'torch', 'matplotlib') "
        "if m in sys.modules))"
    )
    env_path = str(SRC)
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    assert res.stdout.strip() == "[]", res.stdout


# --------------------------------------------------------------------------- no mutation

KWARG_SETS = [
    {},
    {"axis": 0},
    {"axis": None},
    {"axis": (0, 2)},
    {"temperature": 0.5},
    {"where": "mask"},
    {"dtype": np.float32},
    {"b": "weights"},
    {"b": "weights", "return_sign": True, "keepdims": True},
]


NO_MUTATION_CASES = [
    pytest.param(op, impl, kwargs, id=f"{op}-{impl}-{','.join(kwargs) or 'defaults'}")
    for op in OPS
    for impl in ("fast", "reference")
    for kwargs in KWARG_SETS
    if not ("b" in kwargs and op != "logsumexp")  # b, return_sign: logsumexp only
    and not (impl == "reference" and "dtype" in kwargs)  # the reference has no dtype=
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize(("op", "impl", "kwargs"), NO_MUTATION_CASES)
def test_no_mutation(op, impl, kwargs, dtype):
    x = make_array((3, 4, 5), dtype, "F", seed=21)
    x[0, 0, 0] = 100 if np.dtype(dtype).kind == "i" else np.inf  # special rows too
    mask = np.arange(60).reshape(3, 4, 5) % 3 != 0
    weights = np.linspace(-1.0, 2.0, 5)
    kw = dict(kwargs)
    kw["where"] = mask if "where" in kw else None
    if "b" in kw:
        kw["b"] = weights
    originals = [a.copy() for a in (x, mask, weights)]
    axis = kw.pop("axis", -1)
    (call if impl == "fast" else call_reference)(op, x, axis, **kw)
    for before, after in zip(originals, (x, mask, weights), strict=True):
        np.testing.assert_array_equal(after, before)
