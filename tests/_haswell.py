"""Run a snippet in a child process whose kernels are compiled for a Haswell CPU (AVX2,
no AVX-512), with its own kernel cache: the code paths of CPUs other than the
development machine's."""

from __future__ import annotations

import os
import subprocess
import sys


def run_for_haswell(cache_dir, code: str, *args: str) -> str:
    """Run ``python -c code *args`` compiled for Haswell; its stdout (rc 0 asserted)."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CACHE_DIR=str(cache_dir))
    env["SOFTMAXKIT_COMPILE"] = "foreground"
    r = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return r.stdout
