"""The type annotations: ``mypy --strict`` on the public layer, and a user's view of them.

One mypy run (configuration: ``[tool.mypy]`` in ``pyproject.toml``) checks

* the public layer (the ``files`` of the configuration): no error;
* ``tests/typecheck/user_script.py``, which calls every public name of ``softmaxkit``,
  ``softmaxkit.quantized`` and ``softmaxkit.reference`` and pins the return types of
  the flag-dependent overloads with ``assert_type``: no error;
* ``tests/typecheck/user_errors.py``, wrong calls (a string axis, a misspelt
  reduction, a tuple taken for an array...): exactly the error codes marked there.

mypy's cache lives under pytest's cache directory (``.pytest_cache``, git-ignored),
so a second run takes seconds (a temporary directory under ``-p no:cacheprovider``).
The tests skip where mypy is not installed.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

import softmaxkit
import softmaxkit.quantized
import softmaxkit.reference

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "typecheck"
USER_SCRIPT = SCRIPTS / "user_script.py"
USER_ERRORS = SCRIPTS / "user_errors.py"

_LINE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


@pytest.fixture(scope="module")
def mypy_report(request, tmp_path_factory):
    """``{path relative to the root: [(line, code, message)]}`` of one mypy run."""
    api = pytest.importorskip("mypy.api")
    pytest_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    base = pytest_cache.mkdir("mypy") if pytest_cache else tmp_path_factory.mktemp("mypy")
    cache = base / os.environ.get("PYTEST_XDIST_WORKER", "main")
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)  # the configuration's paths are relative to the repository root
    try:
        # The configured public layer plus the two user scripts, in one run.
        files = [*_configured_files(), str(USER_SCRIPT), str(USER_ERRORS)]
        stdout, stderr, status = api.run(
            ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache), *files]
        )
    finally:
        mp.undo()
    assert status in (0, 1), f"mypy crashed (status {status}):\n{stdout}\n{stderr}"
    report: dict[str, list[tuple[int, str, str]]] = {}
    for line in stdout.splitlines():
        m = _LINE.match(line)
        if m:
            path = Path(m["path"])
            rel = (ROOT / path).resolve().relative_to(ROOT).as_posix()
            report.setdefault(rel, []).append((int(m["line"]), m["code"], line))
        elif ": error:" in line:
            report.setdefault("?", []).append((0, "?", line))
    return report


def _configured_files() -> list[str]:
    """The ``files`` of ``[tool.mypy]`` (given on the command line, they replace it)."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    return list(cfg["files"])


def _errors(report, prefix):
    return [msg for path, items in report.items() if path.startswith(prefix) for _, _, msg in items]


def test_public_layer_passes_mypy_strict(mypy_report):
    errors = _errors(mypy_report, "src/") + _errors(mypy_report, "?")
    assert not errors, "mypy --strict on the public layer:\n" + "\n".join(errors)


def test_user_script_calling_every_public_name_type_checks(mypy_report):
    errors = _errors(mypy_report, "tests/typecheck/user_script.py")
    assert not errors, "mypy on the user script:\n" + "\n".join(errors)


def test_wrong_calls_are_reported_by_mypy(mypy_report):
    """Each ``# E: code`` line of user_errors.py gets that error, and no other line any."""
    expected = {}
    for i, text in enumerate(USER_ERRORS.read_text().splitlines(), start=1):
        m = re.search(r"# E: ([a-z-]+)$", text)
        if m:
            expected[i] = m[1]
    assert len(expected) >= 10
    got: dict[int, set[str]] = {}
    for line, code, _ in mypy_report.get("tests/typecheck/user_errors.py", []):
        got.setdefault(line, set()).add(code)
    assert got == {line: {code} for line, code in expected.items()}


@pytest.mark.parametrize(
    ("module", "alias"),
    [(softmaxkit, "sk"), (softmaxkit.quantized, "q"), (softmaxkit.reference, "ref")],
    ids=["softmaxkit", "quantized", "reference"],
)
def test_user_script_uses_every_public_name(module, alias):
    """A name added to an ``__all__`` must be added to the user script too."""
    tree = ast.parse(USER_SCRIPT.read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == alias
    }
    missing = sorted(set(module.__all__) - used)
    assert not missing, f"tests/typecheck/user_script.py does not use {alias}.{missing}"
