"""The documentation site builds with no warning, and its pages say what the code does.

``sphinx-build -W --keep-going`` turns every warning into a failure: a broken
cross-reference (``nitpicky``), a malformed docstring (docutils), a public name
without a docstring (numpydoc's GL08 check), a Markdown page that no toctree
reaches.  The build tests skip where the ``docs`` extra is not installed.
"""

from __future__ import annotations

import doctest
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

DOCS_EXTRA = ("sphinx", "numpydoc", "myst_parser", "sphinxarg", "furo")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site from a copy of docs/ (the API pages it writes stay out of the tree)."""
    for mod in DOCS_EXTRA:
        pytest.importorskip(mod)
    tmp = tmp_path_factory.mktemp("docs")
    src = tmp / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "*.rst"))
    out = tmp / "html"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp / "doctrees"), str(src), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"sphinx-build failed:\n{log}"
    assert "WARNING" not in log and "ERROR" not in log, log
    return out


def test_docs_build_has_a_page_for_every_markdown_file(site):
    pages = sorted(p.stem for p in DOCS.glob("*.md"))
    assert {"index", "getting-started", "dense", "performance"} <= set(pages)
    for stem in pages:
        assert (site / f"{stem}.html").is_file(), stem
    # the maths of the family pages is rendered (MyST dollarmath -> MathJax blocks)
    assert "math notranslate" in (site / "dense.html").read_text()


def test_api_reference_documents_every_public_name(site):
    import softmaxkit
    import softmaxkit.quantized
    import softmaxkit.reference

    modules = [softmaxkit, softmaxkit.quantized, softmaxkit.reference]
    for optional in ("softmaxkit.torch", "softmaxkit.jax"):
        try:
            modules.append(__import__(optional, fromlist=["_"]))
        except ImportError:
            pass
    for mod in modules:
        html = (site / "api" / f"{mod.__name__.replace('.', '_')}.html").read_text()
        for name in mod.__all__:
            if name.startswith("__"):
                continue
            assert f'id="{mod.__name__}.{name}"' in html, f"{mod.__name__}.{name}"


def test_cli_reference_lists_every_subcommand_and_option(site):
    import argparse

    from softmaxkit.cli import build_parser

    html = (site / "api" / "cli.html").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 8
    for name, subparser in sub.choices.items():
        assert f'id="softmaxkit-{name}"' in html, name
        for action in subparser._actions:
            for flag in action.option_strings:
                if flag.startswith("--"):
                    assert flag in html, (name, flag)
    # smartquotes off: "--input-scale" in help texts must not become "\u2013input-scale"
    assert "\u2013" not in html and "&#8211;" not in html


def test_getting_started_examples_run():
    result = doctest.testfile(
        str(DOCS / "getting-started.md"),
        module_relative=False,
        optionflags=doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted >= 15
    assert result.failed == 0
