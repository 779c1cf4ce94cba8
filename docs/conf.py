"""Sphinx configuration for the softmaxkit documentation site.

Build locally (from the repository root, after ``pip install -e ".[docs]"``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

``tests/test_docs.py`` runs the same build with warnings as errors, so a broken
cross-reference, a malformed docstring or a public name without a docstring fails CI.

The API reference pages (``docs/api/*.rst``) are written at build time from each
module's ``__all__`` (see ``_write_api_pages``): a new public name appears in the
reference without editing anything here.  The family pages are the Markdown files
in ``docs/`` (rendered by MyST with ``$$`` maths); ``index.md`` lists the known ones
in reading order and picks up any other ``docs/*.md`` through a glob.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_SRC = HERE.parent / "src"
if (_SRC / "softmaxkit").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))  # document this checkout, installed or not

import softmaxkit  # noqa: E402

project = "softmaxkit"
author = "The softmaxkit developers"
copyright = "The softmaxkit developers"
release = softmaxkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinxarg.ext",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# bench/bench.md is raw benchmark output that performance.md links to as a file.
exclude_patterns = ["_build", "bench/bench.md", "Thumbs.db", ".DS_Store"]

# -- MyST: the family pages are Markdown with $$ maths -------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- autodoc / numpydoc ---------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc Parameters sections carry the types
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# GL08: the object has no docstring; PR02: the docstring documents a parameter the
# signature does not have (a typo, or a parameter renamed or removed).  Either fails
# the build.  (PR01, an undocumented parameter, is not checked yet: about 80 hits,
# mostly methods and the torch / jax wrappers that say "as softmaxkit.X".)
numpydoc_validation_checks = {"GL08", "PR02"}

# Broken Python cross-references are errors too (-W), except for names of other
# projects: the build runs offline, so there is no intersphinx inventory to check
# them against.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|jax|jnp|dask|da|scipy|array_api_strict|optax)(\..*)?"),
    (r"py:.*", r"(int|float|bool|str|bytes|tuple|list|dict|object|callable|None)"),
    (r"py:.*", r"(ArrayLike|NDArray|DTypeLike|Sequence|Iterable|Iterator|Callable|Literal)"),
]

# -- HTML -------------------------------------------------------------------------
html_theme = "furo"
html_title = f"softmaxkit {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
smartquotes = False  # keep -- in option names and command lines as typed

# -- API pages from __all__ ---------------------------------------------------------
# (module, title, intro, required): optional framework modules are documented when
# they import (torch / jax installed), and skipped with a note otherwise.
API_MODULES = [
    ("softmaxkit", "softmaxkit", "The top-level functions and classes.", True),
    (
        "softmaxkit.quantized",
        "softmaxkit.quantized",
        "int8 / uint8 / int16 softmax, bit-exact with TensorFlow Lite and CMSIS-NN.",
        True,
    ),
    (
        "softmaxkit.reference",
        "softmaxkit.reference",
        "Plain float64 NumPy twins of the public functions: the tests' reference.",
        True,
    ),
    (
        "softmaxkit.torch",
        "softmaxkit.torch",
        "PyTorch front door: autograd-aware ops and ``nn.Module`` layers.",
        False,
    ),
    (
        "softmaxkit.jax",
        "softmaxkit.jax",
        "JAX front door: ops with ``custom_vjp`` rules.",
        False,
    ),
]


# Public constants have no docstring of their own (autodoc would show their type's):
# say here what each one is.  A new public constant without an entry fails the build.
DATA_DOCS = {
    "softmaxkit.quantized.RUNTIMES": (
        "The runtime names :func:`softmax` accepts as ``runtime=`` (the TFLite and "
        "CMSIS-NN integer kernels, then the runtimes that use a lookup table or a "
        "float route); ``docs/quantized.md`` describes each."
    ),
}


def _api_page(modname: str, title: str, names: list[str]) -> str:
    mod = importlib.import_module(modname)
    lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
    lines += [f".. currentmodule:: {modname}", "", ".. autosummary::", ""]
    lines += [f"   {n}" for n in names]
    lines.append("")
    for n in names:
        obj = getattr(mod, n)
        if isinstance(obj, type):
            lines += [f".. autoclass:: {n}", "   :members:", ""]
        elif callable(obj):
            lines += [f".. autofunction:: {n}", ""]
        else:
            doc = DATA_DOCS.get(f"{modname}.{n}")
            if doc is None:
                raise RuntimeError(f"docs/conf.py: DATA_DOCS has no entry for {modname}.{n}")
            lines += [f".. py:data:: {n}", f"   :value: {obj!r}", "", f"   {doc}", ""]
    return "\n".join(lines)


def _write_api_pages(app) -> None:
    out = Path(app.srcdir) / "api"
    out.mkdir(exist_ok=True)
    toc = []
    skipped = []
    for modname, title, intro, required in API_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            if required:
                raise
            skipped.append(modname)
            continue
        names = [n for n in mod.__all__ if not n.startswith("__")]
        text = _api_page(modname, title, names)
        page = out / f"{modname.replace('.', '_')}.rst"
        if not page.exists() or page.read_text() != text:  # keep mtimes for incremental builds
            page.write_text(text)
        toc.append((page.stem, modname, intro))
    index = ["API reference", "=============", ""]
    index += [
        "Every public name, generated from each module's ``__all__``.  The maths and the",
        "edge-case contracts behind them are on the family pages.",
        "",
    ]
    if skipped:
        index += ["Not importable in this build (optional dependency missing): "]
        index[-1] += ", ".join(f"``{m}``" for m in skipped) + ".", ""
    for stem, modname, intro in toc:
        index += [f"* :doc:`{modname} <{stem}>`: {intro}"]
    index += ["", ".. toctree::", "   :hidden:", ""] + [f"   {t[0]}" for t in toc] + [""]
    text = "\n".join(index)
    idx = out / "index.rst"
    if not idx.exists() or idx.read_text() != text:
        idx.write_text(text)


_DOCS_PAGE = re.compile(r"``docs/([A-Za-z0-9_-]+)\.md``")


def _link_family_pages(app, what, name, obj, options, lines):
    # Docstrings name the family pages as ``docs/dense.md`` (readable in a terminal);
    # on the site that becomes a link to the page.
    def link(m: re.Match) -> str:
        page = m.group(1)
        if (Path(app.srcdir) / f"{page}.md").is_file():
            return f":doc:`docs/{page}.md </{page}>`"
        return m.group(0)

    lines[:] = [_DOCS_PAGE.sub(link, line) for line in lines]


def _skip_member(app, what, name, obj, skip, options):
    # torch.nn.Module's repr hook is not API; documenting it would need a docstring.
    return True if name == "extra_repr" else None


def setup(app):
    app.connect("builder-inited", _write_api_pages)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _link_family_pages)
    os.environ.setdefault("COLUMNS", "100")  # argparse help wraps the same everywhere
