"""Fork safety (issue 18 item 8): every kernel family works in fork, forkserver and
spawn pool children after the parent has called them all; no kernel uses Numba's
``parallel=True`` (its OpenMP layer aborts forked children), so the class stays fixed.
"""

import ast
import multiprocessing as mp
import pathlib
import sys

import numba
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _fork_families import call_every_family

# JAX, when an earlier test in this worker initialised it, warns at every fork that
# a forked child must not use JAX; these children never do (the warning is JAX's
# about itself, and it made these tests depend on which tests ran before them)
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "softmaxkit"


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_pool_children_call_every_family_after_the_parent(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    old = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        want = call_every_family(0)  # the parent uses every kernel (and its threads)
        ctx = mp.get_context(method)
        with ctx.Pool(2) as pool:
            # a child that dies (OpenMP's abort) or hangs fails here instead of hanging
            got = pool.map_async(call_every_family, [0, 0]).get(timeout=240)
        # sums of gradients (~0) may differ in the last bits between a freshly compiled
        # and a cache-loaded kernel
        np.testing.assert_allclose(got, [want, want], rtol=1e-12, atol=1e-12)
    finally:
        numba.set_num_threads(old)


def test_no_kernel_uses_numba_parallel():
    """``parallel=True`` / ``prange`` pull in Numba's threading layer (OpenMP here),
    which kills forked children; kernels run on ``_kernels._parallel`` instead."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg in ("parallel", "target"):
                v = node.value
                if isinstance(v, ast.Constant) and v.value in (True, "parallel"):
                    bad.append(f"{path.name}:{v.lineno} {node.arg}={v.value!r}")
            name = getattr(node, "id", None) or getattr(node, "attr", None)
            if name == "prange" or (isinstance(node, ast.alias) and node.name == "prange"):
                bad.append(f"{path.name}:{node.lineno} prange")
    assert not bad, bad


def test_thread_pool_is_renewed_in_a_forked_child():
    """A pool made in the parent is not reused in a forked child (its threads are gone):
    the fork hook resets it, and a child's call with two threads completes."""
    from softmaxkit._kernels import _parallel

    parent_pool = _parallel._pool()
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    if ctx is None:
        pytest.skip("no fork start method here")
    with ctx.Pool(1) as pool:
        same, ran = pool.apply_async(_child_pool_check, (id(parent_pool),)).get(timeout=60)
    assert not same and ran


def _child_pool_check(parent_id):
    from softmaxkit._kernels import _parallel

    before = _parallel._POOL
    seen = []
    _parallel.run(lambda t0, t1: seen.append((t0, t1)), 8, 2)
    return before is not None and id(before) == parent_id, sorted(seen)[-1][1] == 8
