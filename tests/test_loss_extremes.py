"""Losses at extreme inputs and the masked-class semantics (issue 18).

Masked-class semantics of probability targets: ``where`` equals a -inf logit
(hypothesis), against the float64 reference; the named errors of the losses'
unchecked inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit as sk
from softmaxkit import reference as ref

inf, nan = np.inf, np.nan

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


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [nan, inf, -inf, -0.25])
@pytest.mark.parametrize("axis", [-1, 0])
def test_probability_target_must_be_finite_nonnegative(bad, axis):
    x = np.zeros((3, 4))
    y = np.full((3, 4), 0.25)
    y[2, 1] = bad
    if axis == 0:
        x, y = x.T, y.T
    for f in (sk.cross_entropy, ref.cross_entropy):
        with pytest.raises(ValueError, match=r"probability target must be finite and >= 0") as e:
            f(x, y, axis=axis)
        row = "(2,)"
        assert "target[" in str(e.value) and f"row {row}" in str(e.value), str(e.value)


@pytest.mark.parametrize("reduction", ["mean"])
def test_class_weights_summing_to_zero_mean_is_an_error(reduction):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    w = np.array([0.0, 0.0, 1.0])
    for f in (sk.cross_entropy, ref.cross_entropy):
        with pytest.raises(ValueError, match=r"weight: .*sum to 0.*reduction='mean'"):
            f(x, [0, 1], weight=w, reduction=reduction)
        # 'sum' and 'none' are defined; so is a mean with one weighted target
        assert f(x, [0, 1], weight=w, reduction="sum") == 0.0
        assert float(f(x, [0, 2], weight=w)) == pytest.approx(float(ref.cross_entropy(x[1:], [2])))
        # all targets ignored: nothing counted, the documented 0.0 (not an error)
        assert f(x, [-1, -1], weight=w, ignore_index=-1) == 0.0
    with pytest.raises(ValueError, match=r"weight: .*sum to 0"):
        sk.linear_cross_entropy(x, np.eye(3), [0, 1], weight=w)


@pytest.mark.parametrize("strategy", ["vocab", "rows"])
@pytest.mark.parametrize("bias", [None, np.array([0.5, -1.0, 2.0, 0.0])])
def test_linear_cross_entropy_zero_hidden_dim(strategy, bias):
    # d = 0: the logits are the bias (or 0); was "cannot reshape array of size 0"
    h = np.zeros((3, 0))
    W = np.zeros((4, 0))
    t = [0, 3, 2]
    loss, (dh, dW, db) = sk.linear_cross_entropy(
        h, W, t, bias=bias, return_grad=True, strategy=strategy
    )
    logits = np.broadcast_to(bias if bias is not None else np.zeros(4), (3, 4))
    want, g = ref.cross_entropy(logits, t, return_grad=True)
    assert loss == pytest.approx(want, rel=1e-14)
    assert dh.shape == (3, 0) and dW.shape == (4, 0)
    if bias is not None:
        np.testing.assert_allclose(db, g.sum(axis=0), rtol=1e-14, atol=1e-16)
    assert sk.linear_cross_entropy(h, W, t, bias=bias) == pytest.approx(want, rel=1e-14)
