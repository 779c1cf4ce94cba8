"""Internal matrix products never surface BLAS's spurious *invalid* flag.

OpenBLAS can raise the flag on finite inputs (numpy/numpy#24067): CI saw
``RuntimeWarning: invalid value encountered in matmul`` once in
``linear_jensen_shannon``. That cannot be reproduced on demand, so these tests make
``np.matmul`` raise the flag after every product and check that no op lets it through.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import reference
from softmaxkit._core.blas import matmul

RNG = np.random.default_rng(7)
SRC = pathlib.Path(sk.__file__).parent


def test_matmul_keeps_the_value_and_drops_the_warning():
    with pytest.warns(RuntimeWarning, match="invalid"):
        np.matmul(np.array([[np.inf]]), np.array([[0.0]]))
    r = matmul(np.array([[np.inf]]), np.array([[0.0]]))
    assert np.isnan(r[0, 0])
    out = np.full((2, 3), np.nan, np.float32)
    a, b = RNG.standard_normal((2, 4), np.float32), RNG.standard_normal((4, 3), np.float32)
    assert matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-6)


def _noisy(monkeypatch: pytest.MonkeyPatch) -> None:
    real = np.matmul

    def noisy(*args, **kwargs):
        r = real(*args, **kwargs)
        np.subtract(np.float64(np.inf), np.float64(np.inf))  # the flag, as OpenBLAS sets it
        return r

    monkeypatch.setattr(np, "matmul", noisy)


def _calls():
    N, d, V = 7, 5, 23
    h, W = RNG.standard_normal((N, d)), RNG.standard_normal((V, d))
    g, U = RNG.standard_normal((N, 4)), RNG.standard_normal((V, 4))
    t = RNG.integers(0, V, N)
    mask = RNG.random((N, V)) > 0.2
    mask[4] = False
    A, B = RNG.standard_normal((6, 9)), RNG.standard_normal((9, 5))
    sa = np.where(RNG.random(A.shape) > 0.5, 1.0, -1.0)
    jsd = dict(beta=0.4, temperature=1.3, where=mask, return_grad=True)
    return {
        "linear_cross_entropy": lambda m: m.linear_cross_entropy(h, W, t, return_grad=True),
        "linear_cross_entropy entropy": lambda m: m.linear_cross_entropy(
            h, W, t, return_entropy=True, return_grad=True
        ),
        "linear_kl_divergence": lambda m: m.linear_kl_divergence(
            h,
            W,
            g,
            U,
            temperature=1.3,
            where=mask,
            return_grad=True,
            **({"chunk_size": 1} if m is sk else {}),
        ),
        "linear_jensen_shannon": lambda m: m.linear_jensen_shannon(
            h, W, g, U, **jsd, **({"chunk_size": 1} if m is sk else {})
        ),
        "logmatmulexp signed": lambda m: m.logmatmulexp(A, B, a_sign=sa, return_sign=True),
    }


CASES = [(sk, n) for n in _calls()] + [
    (reference, n) for n in _calls() if n != "linear_cross_entropy entropy"
]


@pytest.mark.parametrize(
    "module,name", CASES, ids=[f"{m.__name__.split('.')[-1]}-{n}" for m, n in CASES]
)
def test_no_op_lets_the_flag_through(module, name, monkeypatch):
    call = _calls()[name]
    want = call(module)
    _noisy(monkeypatch)
    got = call(module)  # warnings are errors in this suite
    a, b = _leaves(want), _leaves(got)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def _leaves(r):
    if isinstance(r, dict):
        return [v for k in sorted(r) for v in _leaves(r[k])]
    if isinstance(r, tuple | list):
        return [v for x in r for v in _leaves(x)]
    return [] if r is None else [np.asarray(r)]


def test_every_product_goes_through_the_helper():
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p.name != "blas.py" and "np.matmul(" in p.read_text()
    ]
    assert offenders == []
