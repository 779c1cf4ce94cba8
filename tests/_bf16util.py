"""bfloat16 test helpers shared by the torch test modules."""

from __future__ import annotations

from typing import Any


def ulps(a: Any, b: Any) -> Any:
    """Distance in bfloat16 ulps between two bfloat16 tensors, elementwise.

    NaN where exactly one side is NaN counts as infinitely far (both NaN: 0); +0 and -0
    are 0 apart; values of opposite sign count every representable value between them.
    """
    import torch  # (here: the modules that use this skip when torch is absent)

    assert a.dtype == b.dtype == torch.bfloat16 and a.shape == b.shape

    def ordered(x: Any) -> Any:
        bits = x.view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -(bits & 0x7FFF), bits)

    d = (ordered(a) - ordered(b)).abs().to(torch.float64)
    na, nb = a.isnan(), b.isnan()
    d = torch.where(na & nb, 0.0, d)
    return torch.where(na ^ nb, float("inf"), d)
