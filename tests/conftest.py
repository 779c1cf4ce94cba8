"""Shared fixtures for the softmaxkit tests (helpers and strategies: ``strategies.py``).

The hypothesis profile ``softmaxkit`` is loaded for the whole suite: no deadline
(the first call of a Numba kernel compiles it, which would trip any deadline) and
a moderate default number of examples, so the suite stays fast on 2 cores.
Set ``HYPOTHESIS_PROFILE=thorough`` for a longer run.
"""

from __future__ import annotations

import os
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


def pytest_configure(config):
    # hypothesis's failure report imports something that imports mypy_extensions, whose
    # DeprecationWarning (with filterwarnings = error) turned every failing hypothesis
    # test into a pytest INTERNALERROR that hid the failure itself.
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


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
