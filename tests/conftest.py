"""Shared fixtures for the softmaxkit tests (helpers and strategies: ``strategies.py``).

The hypothesis profile ``softmaxkit`` is loaded for the whole suite: no deadline
(the first call of a Numba kernel compiles it, which would trip any deadline) and
a moderate default number of examples, so the suite stays fast on 2 cores.
Set ``HYPOTHESIS_PROFILE=thorough`` for a longer run.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from strategies import FLOAT_DTYPES, INPUT_DTYPES, OPS

# The suite tests the kernels: every call compiles in the test process, never the
# cold-start fallback to the reference formulas (tests/test_coldstart.py turns that on
# where it tests it).  Subprocesses inherit the setting.
os.environ.setdefault("SOFTMAXKIT_COMPILE", "foreground")

settings.register_profile(
    "softmaxkit",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("softmaxkit"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "softmaxkit"))


@pytest.fixture(autouse=True)
def _module_rng_per_test(request):
    """A test module's ``RNG`` generator restarts for every test from a seed of the
    test's own id.  Under ``pytest -n`` a worker runs a varying subset and order of a
    module's tests, so a generator shared across them handed each test other data
    from run to run (a zero-sign row once made torch's reference gradient NaN in one
    order only).  The state is reset in place: helpers that took ``RNG`` as a default
    argument see it too."""
    g = getattr(request.module, "RNG", None)
    if isinstance(g, np.random.Generator):
        seed = zlib.crc32(request.node.nodeid.encode())
        g.bit_generator.state = type(g.bit_generator)(seed).state
    yield


# Temporary files.  The run (its xdist workers, and the subprocesses they start: the
# CLI, the background compiler, Dask's workers) gets a temporary directory of its own
# (TMPDIR), and fails if a temporary of ours is left in it at the end: a test,
# doctest, command or bench case that leaves one behind (the bench's stream-case files
# once filled a disk; a doctest left a directory per run).  "Ours": the names Python's
# tempfile gives by default (tmp...), softmaxkit's own, and array files.  Other
# libraries' caches (torchinductor_root, dask-scratch-space, pytest's basetemp) and
# whatever the machine's own tooling writes there are not judged.
_TMP_OURS = re.compile(r"^tmp|softmaxkit|\.np[yz]$")
_TMP_KEY = pytest.StashKey[str]()


def pytest_configure(config):
    # hypothesis's failure report imports something that imports mypy_extensions, whose
    # DeprecationWarning (with filterwarnings = error) turned every failing hypothesis
    # test into a pytest INTERNALERROR that hid the failure itself.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )
    if hasattr(config, "workerinput"):  # an xdist worker: the controller made it
        return
    d = tempfile.mkdtemp(prefix="skt")  # short: AF_UNIX socket paths below it
    os.environ["TMPDIR"] = d
    tempfile.tempdir = d
    config.stash[_TMP_KEY] = d


def pytest_sessionfinish(session, exitstatus):
    d = session.config.stash.get(_TMP_KEY, None)
    if d is None:
        return
    left = sorted(n for n in os.listdir(d) if _TMP_OURS.search(n))
    shutil.rmtree(d, ignore_errors=True)
    if left:
        rep = session.config.pluginmanager.get_plugin("terminalreporter")
        if rep is not None:
            rep.ensure_newline()
            rep.write_line(f"FAILED: temporary files left behind by the run: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(params=OPS)
def op(request) -> str:
    """The name of each dense op: softmax, log_softmax, logsumexp."""
    return request.param


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def float_dtype(request) -> np.dtype:
    """float16, float32, float64."""
    return np.dtype(request.param)


@pytest.fixture(params=INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
def input_dtype(request) -> np.dtype:
    """Every accepted input dtype: the floats, int64, int8 and bool."""
    return np.dtype(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator (each test gets the same stream)."""
    return np.random.default_rng(20240601)
