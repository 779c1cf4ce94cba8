"""What the code Numba generates here may use: compile-time switches of the kernels."""

from __future__ import annotations

__all__ = ["host_has"]


def host_has(feature: str) -> bool:
    """Whether Numba generates code for a CPU with ``feature`` (an LLVM feature name
    such as ``"avx512f"``): the host has it and Numba targets the host (no
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``).  Numba keys its cache by CPU name and
    features, so a kernel compiled with a feature's code path is never loaded on a CPU
    without it.

    >>> host_has("no-such-feature")
    False
    """
    from numba.core import config

    if config.CPU_NAME or config.CPU_FEATURES:
        return False
    import llvmlite.binding as ll

    return bool(ll.get_host_cpu_features().get(feature, False))
