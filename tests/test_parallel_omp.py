"""The OpenMP route of ``_kernels/_parallel.run``: with PyTorch imported, parallel
kernels run on torch's own libgomp team (``GOMP_parallel``) instead of softmaxkit's
thread pool.  Same results on both routes, errors handed back, never in a forked
child or off the main thread, and never a second OpenMP runtime."""

import multiprocessing as mp
import os
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softmaxkit  # noqa: E402
import softmaxkit.reference  # noqa: E402
import softmaxkit.torch as skt  # noqa: E402
from softmaxkit._kernels import _parallel  # noqa: E402

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not torch.backends.openmp.is_available(),
    reason="torch's OpenMP team: Linux builds of torch with libgomp",
)


@pytest.fixture
def counted(monkeypatch):
    """Count the ``GOMP_parallel`` calls (the team must exist first)."""
    team = _parallel._omp_team()
    if team is None:
        pytest.skip("no libgomp in this torch build")
    calls = []

    def spy(cb, data, nt, flags):
        calls.append(nt)
        return team[0](cb, data, nt, flags)

    monkeypatch.setattr(_parallel, "_OMP", (spy, team[1]))
    return calls


def test_the_team_is_torchs_own_libgomp():
    _parallel._omp_team()
    with open("/proc/self/maps") as f:
        path = next(ln.split()[-1] for ln in f if "libgomp" in ln and "torch" in ln)
    assert path.startswith(os.path.dirname(torch.__file__))
    assert _parallel._OMP is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_both_routes_give_the_same_bits(dtype, counted, monkeypatch):
    x = (torch.randn(4096, 512, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
    x[7] = float("-inf")
    x[9, 3] = float("nan")
    monkeypatch.setattr(_parallel, "threads_for", lambda size, itemsize=4: 2)
    via_omp = [f(x) for f in (skt.softmax, skt.log_softmax, skt.logsumexp)]
    assert counted, "the OpenMP route was not taken"
    n = len(counted)
    monkeypatch.setattr(_parallel, "OMP", False)
    via_pool = [f(x) for f in (skt.softmax, skt.log_softmax, skt.logsumexp)]
    assert len(counted) == n
    for a, b in zip(via_omp, via_pool, strict=True):
        assert torch.equal(
            a.view(torch.int16 if a.dtype == torch.bfloat16 else torch.int32),
            b.view(torch.int16 if b.dtype == torch.bfloat16 else torch.int32),
        )


def test_numpy_calls_take_the_team_too_and_match_the_float64_reference(counted):
    x = np.random.default_rng(1).standard_normal((2048, 1024)).astype(np.float32)
    got = softmaxkit.softmax(x)
    assert counted
    want = softmaxkit.reference.softmax(x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-12)


def test_a_kernel_error_is_raised_in_the_caller(counted):
    seen = []

    def kernel(t0, t1):
        seen.append((t0, t1))
        if t0 == 0:
            raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError, match="boom"):
        _parallel.run(kernel, 100, 2)
    assert counted == [2]
    assert sorted(seen)[0][0] == 0


def test_every_range_runs_once(counted):
    hits = np.zeros(1000, np.int64)

    def kernel(t0, t1):
        hits[t0:t1] += 1

    _parallel.run(kernel, 1000, 2, chunks=16)
    assert counted == [2]
    assert np.all(hits == 1)


def test_other_threads_use_the_pool(counted):
    hits = np.zeros(64, np.int64)

    def kernel(t0, t1):
        hits[t0:t1] += 1

    th = threading.Thread(target=_parallel.run, args=(kernel, 64, 2))
    th.start()
    th.join(60)
    assert not th.is_alive() and np.all(hits == 1)
    assert counted == []


def _child(_):
    x = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)
    s = float(softmaxkit.softmax(x).sum())
    return s, _parallel._omp_team() is None


@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_a_forked_child_never_uses_the_parents_team():
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork here")
    assert _parallel._omp_team() is not None
    skt.softmax(torch.randn(2048, 1024))  # the parent's team is running
    with mp.get_context("fork").Pool(1) as pool:
        ((s, none),) = pool.map_async(_child, [0]).get(timeout=120)
    assert none and abs(s - 2048) < 1e-2


def test_the_environment_turns_it_off():
    import subprocess

    code = (
        "from softmaxkit._kernels import _parallel as p; import torch; print(p.OMP, p._omp_team())"
    )
    for v, want in (("0", "False None"), ("1", "True (")):
        env = dict(os.environ, SOFTMAXKIT_OMP_TEAM=v)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith(want), (v, r.stdout, r.stderr)
