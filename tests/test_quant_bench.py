"""``softmaxkit bench --family quantized`` times the real runtimes next to our models."""

from __future__ import annotations

import pytest


def test_bench_quantized_times_litert():
    """The LiteRT peer is built from ``tools/tflite_softmax_model.py`` (found from the
    source checkout: ``bench/quantized.py`` is three folders below the root); it was
    silently missing after the bench moved into ``bench/``."""
    pytest.importorskip("ai_edge_litert")
    from softmaxkit.bench import select_cases

    (case,) = select_cases(quick=True, families=["quantized"])
    assert "LiteRT invoke (optimized)" in case.impls
    want = case.impls["softmaxkit tflite-x86"]()
    got = case.impls["LiteRT invoke (optimized)"]()
    assert (got == want).all()
