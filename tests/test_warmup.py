"""``softmaxkit warmup``, the compile log and the no-disk cache fallback (issue 24).

A cold compile of every kernel takes minutes, so the subprocess tests warm up one
cheap case; the full table is only checked for shape here (``tools/first_call.py``
times it).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import softmaxkit
from softmaxkit.cli import core as cli
from softmaxkit.cli import warmup as _cli_warmup

SRC = Path(softmaxkit.__file__).resolve().parent.parent

# One cheap real case (stream_logsumexp's chunk-state kernel: one kernel, ~0.7 s cold),
# patched in as the whole "online" family of a child process.
_ONE_CASE = """
import numpy as np, softmaxkit
from softmaxkit.cli import warmup as _cli_warmup
x = np.random.default_rng(0).standard_normal((8, 100))
_cli_warmup.CASES["online"] = [
    ("stream_logsumexp", "float64", lambda: softmaxkit.stream_logsumexp([x[:, :50], x[:, 50:]])),
]
"""


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _fake_kernels(module: str):
    """A jitted kernel calling a jitted helper, both reported as defined in ``module``."""
    from numba import njit

    ns: dict = {"__name__": module}
    exec("def helper(x):\n    return x + 1\n\ndef kernel(x):\n    return helper(x) * 2\n", ns)
    ns["helper"] = njit(ns["helper"])
    return njit(ns["kernel"])


def test_first_compile_logs_one_info_line_per_kernel(caplog):
    from softmaxkit._kernels import _hooks

    kernel = _fake_kernels("softmaxkit._kernels._test_fake")
    before = dict(_hooks.COMPILED)
    with caplog.at_level(logging.INFO, logger="softmaxkit"):
        assert kernel(3) == 8
        first = [r for r in caplog.records if r.name == "softmaxkit"]
        assert len(first) == 1  # the helper compiled on the way is not logged
        assert first[0].levelno == logging.INFO
        assert "_test_fake.kernel(int64)" in first[0].getMessage()
        assert kernel(4) == 10  # compiled already: silent
        assert len([r for r in caplog.records if r.name == "softmaxkit"]) == 1
        assert kernel(1.5) == 5.0  # a new signature: one more line
        records = [r for r in caplog.records if r.name == "softmaxkit"]
        assert len(records) == 2 and "float64" in records[1].getMessage()
    assert _hooks.COMPILED["top"] - before["top"] == 2
    assert _hooks.COMPILED["all"] - before["all"] == 4  # kernel + helper, twice


def test_compile_log_ignores_other_libraries(caplog):
    kernel = _fake_kernels("someone_else.kernels")
    with caplog.at_level(logging.DEBUG):
        assert kernel(3) == 8
    assert not [r for r in caplog.records if r.name.startswith("softmaxkit")]


def test_cases_table_covers_every_family_once():
    rows = _cli_warmup.cases()
    assert {r[0] for r in rows} == set(_cli_warmup.FAMILIES)
    labels = [(f, op, dt) for f, op, dt, _ in rows]
    assert len(labels) == len(set(labels))
    assert _cli_warmup.cases(["all"]) == rows
    with pytest.raises(ValueError, match=r"family must be one of .*; got 'nope'"):
        _cli_warmup.cases(["nope"])


def test_warmup_rejects_unknown_family(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["warmup", "--family", "nope"])
    assert e.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_warmup_caches_so_a_new_process_compiles_nothing(tmp_path):
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    warm = _ONE_CASE + "from softmaxkit import cli; raise SystemExit(cli.main(%r))"
    r = _run(warm % (["warmup", "--family", "online"],), env)
    assert r.returncode == 0, r.stderr
    assert "1 cases" in r.stdout and "0 kernels compiled" not in r.stdout
    assert "[1/1] online stream_logsumexp float64" in r.stderr  # plain progress line
    assert list((tmp_path / "cache").rglob("*.nbi")), "no cache index written"

    # a new process with the same cache: the kernel loads, no "numba:compile" event,
    # and no INFO line reaches the (unconfigured) root logger: nothing on stderr
    check = _ONE_CASE + textwrap.dedent(
        """
    from softmaxkit._kernels import _hooks
    _cli_warmup.CASES["online"][0][2]()
    print(_hooks.COMPILED["top"], _hooks.COMPILED["all"])
    """
    )
    r = _run(check, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"]
    assert r.stderr == ""

    r = _run(warm % (["warmup", "--where"],), env)
    assert r.stdout.strip().startswith(str(tmp_path / "cache"))
    r = _run(warm % (["warmup", "--clear"],), env)
    assert r.returncode == 0 and r.stdout.startswith("removed ")
    assert int(r.stdout.split()[1]) > 0
    assert not list((tmp_path / "cache").rglob("*.nb[ic]"))


def test_cold_first_call_prints_nothing_by_default(tmp_path):
    env = _env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    r = _run(
        _ONE_CASE
        + textwrap.dedent(
            """
    from softmaxkit._kernels import _hooks
    _cli_warmup.CASES["online"][0][2]()
    print(_hooks.COMPILED["top"])
    """
        ),
        env,
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 1 and r.stderr == ""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX cache directories")
def test_no_writable_cache_compiles_in_memory_with_one_warning(tmp_path):
    # The package in a directory where no __pycache__ can be made (a regular file is in
    # the way: this holds for root too), HOME a regular file (no ~/.cache), no
    # NUMBA_CACHE_DIR / XDG_CACHE_HOME: Numba has no locator.  Before the fallback,
    # importing a kernel module raised "cannot cache function ...: no locator available".
    pkg = tmp_path / "site" / "softmaxkit"
    shutil.copytree(SRC / "softmaxkit", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    kernel_dirs = [p for p in (pkg / "_kernels").rglob("*") if p.is_dir()]  # rows/, losses/, ...
    for d in (pkg, pkg / "_kernels", *kernel_dirs):
        (d / "__pycache__").write_text("not a directory")
    home = tmp_path / "home"
    home.write_text("not a directory")
    env = _env(HOME=str(home), PYTHONPATH=str(tmp_path / "site"), PYTHONDONTWRITEBYTECODE="1")
    r = _run(
        """
        import warnings
        import numpy as np
        import softmaxkit
        warnings.simplefilter("always")
        x = np.random.default_rng(0).standard_normal((8, 100))
        with warnings.catch_warnings(record=True) as caught:
            a = softmaxkit.stream_logsumexp([x[:, :50], x[:, 50:]])
            b = softmaxkit.stream_logsumexp([x[:, :30], x[:, 30:]])
        from softmaxkit._kernels import _hooks
        ours = [w for w in caught if "no writable directory" in str(w.message)]
        print(len(ours), ours[0].category.__name__, _hooks.cache_dir(), _hooks.COMPILED["top"])
        want = np.log(np.exp(x).sum(axis=1))
        print(np.allclose(a, want, rtol=1e-14, atol=0), np.allclose(b, want, rtol=1e-14, atol=0))
        """,
        env,
    )
    assert r.returncode == 0, r.stderr
    assert "no locator available" not in r.stderr
    lines = r.stdout.split("\n")
    count, category, where, compiled = lines[0].split()
    assert (count, category, where) == ("1", "RuntimeWarning", "None") and int(compiled) >= 1
    assert lines[1].split() == ["True", "True"]
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc")]
