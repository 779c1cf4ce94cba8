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


def test_bench_quantized_times_qnnpack():
    """torch's QNNPACK engine is timed on the uint8 copy of the data, next to our
    ``xnnpack`` model, and gives the same numbers."""
    torch = pytest.importorskip("torch")
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack engine")
    import numpy as np

    from softmaxkit.bench import select_cases

    engine = torch.backends.quantized.engine
    (case,) = select_cases(quick=True, families=["quantized"])
    got = np.asarray(case.impls["torch quantized.softmax, qnnpack engine (uint8)"]())
    assert torch.backends.quantized.engine == engine
    want = case.impls["softmaxkit xnnpack (uint8)"]()
    assert got.dtype == want.dtype == np.uint8 and (got == want).all()
    assert case.check(got) < 1.5
