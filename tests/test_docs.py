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
    # -W --keep-going: exit status 1 after any Sphinx warning or docutils error, all
    # of them listed in the log (a third-party library's own log lines do not count).
    assert proc.returncode == 0, f"sphinx-build failed:\n{log}"
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
    # ``docs/dense.md`` in a docstring becomes a link to the page on the site
    top = (site / "api" / "softmaxkit.html").read_text()
    assert '<span class="doc">docs/dense.md</span>' in top


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


def test_switching_table_rows_compute_the_same_as_the_peer():
    """Each row of getting-started's SciPy / PyTorch table, on finite inputs."""
    import numpy as np

    import softmaxkit as sk

    ss = pytest.importorskip("scipy.special")
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(19)
    x = rng.standard_normal((6, 5))
    X = torch.tensor(x)
    b = rng.random((6, 5))
    m = rng.random((6, 5)) > 0.3
    m[:, 0] = True  # no fully masked row: there the peers give NaN and we give 0
    t = rng.integers(0, 5, 6)
    T = torch.tensor(t)
    close = np.testing.assert_allclose
    for peer, ours in [
        (ss.softmax(x, axis=1), sk.softmax(x, axis=1)),
        (ss.log_softmax(x, axis=1), sk.log_softmax(x, axis=1)),
        (ss.logsumexp(x, axis=1), sk.logsumexp(x, axis=1)),
        (ss.logsumexp(x, b=b, return_sign=True), sk.logsumexp(x, b=b, return_sign=True, axis=None)),
        (ss.softmax(x), sk.softmax(x, axis=None)),
        (torch.softmax(X, dim=1), sk.softmax(x, axis=1)),
        (torch.log_softmax(X, dim=1), sk.log_softmax(x, axis=1)),
        (torch.logsumexp(X, dim=1), sk.logsumexp(x, axis=1)),
        (torch.softmax(X / 2.5, dim=-1), sk.softmax(x, temperature=2.5)),
        (X.masked_fill(~torch.tensor(m), -np.inf).softmax(-1), sk.softmax(x, where=m)),
        (F.cross_entropy(X, T), sk.cross_entropy(x, t)),
        (F.cross_entropy(X, T, label_smoothing=0.1), sk.cross_entropy(x, t, label_smoothing=0.1)),
    ]:
        close(np.asarray(peer), np.asarray(ours), rtol=1e-12, atol=1e-15)
    x3 = rng.standard_normal((4, 5, 3))
    t3 = rng.integers(0, 5, (4, 3))
    t3[0, 0] = -100
    close(
        F.cross_entropy(torch.tensor(x3), torch.tensor(t3)).item(),
        sk.cross_entropy(x3, t3, axis=1, ignore_index=-100),
        rtol=1e-12,
    )
    values, indices = torch.topk(torch.softmax(X, -1), 2)
    probs, idx = sk.topk_softmax(x, 2)
    close(values.numpy(), probs, rtol=1e-12)
    np.testing.assert_array_equal(indices.numpy(), idx)
