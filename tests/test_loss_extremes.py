"""Losses at extreme inputs and the masked-class semantics (issue 18).

Masked-class semantics of probability targets: ``where`` equals a -inf logit
(hypothesis), against the float64 reference.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit as sk
from softmaxkit import reference as ref

inf = np.inf

# --------------------------------------------------------------------------- item 4


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    shape=st.tuples(st.integers(1, 4), st.integers(2, 7)),
    eps=st.sampled_from([0.0, 0.1, 1.0]),
    weighted=st.booleans(),
)
def test_masked_class_equals_minus_inf_logit(data, shape, eps, weighted):
    _, C = shape
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-30, 30)))
    mask = data.draw(hnp.arrays(np.bool_, shape))
    mask[:, 0] = True  # (an all-masked row is "empty", not -inf: another rule)
    y = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    w = np.linspace(0.5, 2.0, C) if weighted else None
    kw = {"label_smoothing": eps, "weight": w, "reduction": "none"}
    lw, gw = sk.cross_entropy(x, y, where=mask, return_grad=True, **kw)
    xi = np.where(mask, x, -inf)
    li, gi = sk.cross_entropy(xi, y, return_grad=True, **kw)
    lr, gr = ref.cross_entropy(x, y, where=mask, return_grad=True, **kw)
    # the smoothing of a -inf logit still spreads over it; of a masked class it does
    # not: compare the losses without smoothing only
    # (atol: log(s) of s = 1 + r rounds r absolutely, ~1e-16, for a tiny loss)
    if eps == 0.0:
        np.testing.assert_allclose(lw, li, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(gw[mask], gi[mask], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lw, lr, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gw, gr, rtol=1e-12, atol=1e-15)
    assert np.all(gw[~mask] == 0.0)


def test_probability_mass_on_masked_class_regression():
    # was [0, -0.116, 0.116]-like: the masked class' mass left out of sum w q
    x = np.array([[0.3, 1.0, 2.0]])
    y = np.array([[0.5, 0.0, 0.5]])
    loss, g = sk.cross_entropy(x, y, where=[[False, True, True]], return_grad=True)
    p = ref.softmax(x[:, 1:])[0]
    assert loss == inf
    np.testing.assert_allclose(g[0], [0.0, p[0], p[1] - 0.5], rtol=1e-14)
    _, gi = sk.cross_entropy(np.array([[-inf, 1.0, 2.0]]), y, return_grad=True)
    np.testing.assert_allclose(g[0, 1:], gi[0, 1:], rtol=1e-14)
