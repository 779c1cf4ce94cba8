"""The ``softmaxkit`` command line: ``demo`` in-process and as ``python -m softmaxkit``."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import softmaxkit
from softmaxkit.cli import core as cli

SRC = str(Path(softmaxkit.__file__).resolve().parents[1])


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONWARNINGS"] = "error"  # a warning escaping the demo fails the run
    return env


def test_demo_in_process(capsys):
    assert cli.main(["demo"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("softmaxkit demo")
    assert out.rstrip().endswith("All demo steps done.")
    # the dense steps: the naive failure beside our answer
    assert "1. Overflow" in out and "nan" in out  # naive softmax of the notebook row
    assert "softmaxkit.logsumexp   = 100000.0" in out
    assert "2. The axis mistake" in out
    assert "3. A fully masked row" in out
    assert "4. log(softmax(x))" in out
    assert "log(softmax(x))[0]          = 0.0" in out
    # -log1p(e^-40 + e^-50), the dominant entry of log_softmax([0, -40, -50])
    line = next(li for li in out.splitlines() if "softmaxkit.log_softmax(x)[0]" in li)
    value = float(line.split("=")[1])
    assert value == pytest.approx(-math.log1p(math.exp(-40) + math.exp(-50)), rel=1e-15, abs=0)


def test_demo_steps_each_print_a_section():
    import io

    for plugin in cli._plugins():
        assert hasattr(plugin, "DEMO_STEPS") and callable(plugin.register)
        for step in plugin.DEMO_STEPS:
            buf = io.StringIO()
            step(buf)
            assert buf.getvalue().strip(), step


def test_demo_subprocess():
    res = subprocess.run(
        [sys.executable, "-m", "softmaxkit", "demo"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "All demo steps done." in res.stdout
    assert "Traceback" not in res.stderr


_CONSOLE = """
import atexit, sys
import softmaxkit.cli.core as core
sys.stdout = open(1, "w", buffering=1 << 16, closefd=False)  # block-buffered, whatever the env
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
core.main = lambda argv=None: (print("result"), {code})[1]
core.console()
"""


@pytest.mark.parametrize("code", [0, 2])
def test_console_runs_the_exit_handlers_flushes_and_keeps_the_status(code):
    # the console entry ends with os._exit (no interpreter teardown): the exit
    # handlers still run, buffered output still arrives, main's status is the status
    res = subprocess.run(
        [sys.executable, "-c", _CONSOLE.format(code=code)],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert res.returncode == code, res.stderr
    assert res.stdout == "result\n" and "exit handler ran" in res.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_console_reports_an_output_that_cannot_be_written():
    # the last flush of stdout fails (a full disk): one line on stderr, status 2
    with open("/dev/full", "w") as full:
        res = subprocess.run(
            [sys.executable, "-c", _CONSOLE.format(code=0)],
            stdout=full, stderr=subprocess.PIPE, text=True, env=_env(), timeout=120,
        )  # fmt: skip
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln and "exit handler ran" not in ln]
    assert len(lines) == 1 and "writing the output" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: softmaxkit")
    if argv == ["--help"]:
        assert "demo" in out


def test_help_subprocess():
    res = subprocess.run(
        [sys.executable, "-m", "softmaxkit", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert res.returncode == 0 and res.stdout.startswith("usage: softmaxkit")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"softmaxkit {softmaxkit.__version__}"


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "usage: softmaxkit" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
