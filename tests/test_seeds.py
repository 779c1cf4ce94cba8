"""The user seeds (shared/seeds/) reproduced: their examples, printed outputs and failures.

* max-margin-and-softmax-axis-questions.txt: the 1-D example, the 2-D ``scores2D``
  row-wise / column-wise / whole-array results, the ``x1`` / ``x2`` batch examples
  (and TensorFlow's float32 output), a few more printed answers from the thread;
* online-normalizer-notebook.txt: ``[2, 4, 1, 300, ..., 100000]`` where the naive
  formula gives NaN; the online-normalizer example ``(m, d) = (0.3, 3.2983...)``;
* stable-softmax-crossentropy-notebook.txt: ``linspace(-1, 5e5, 500)`` where the naive
  softmax gives NaN and ``linspace(-1, 1e5, 500)`` where the naive cross-entropy is inf.

Expected values are the printed ones, compared at the precision they were printed with.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from softmaxkit import log_softmax, logsumexp, softmax


def naive_softmax(x, axis=None):
    """The textbook ``exp(x) / sum(exp(x))`` of the seeds, warnings silenced on purpose."""
    with np.errstate(all="ignore"):
        e = np.exp(np.asarray(x, dtype=np.float64))
        return e / e.sum(axis=axis, keepdims=axis is not None)


# --------------------------------------------------------------------------- axis questions

SCORES2D = np.array([[1, 2, 3, 6], [2, 4, 5, 6], [3, 8, 7, 6]])


def test_1d_scores():
    np.testing.assert_allclose(
        softmax([3.0, 1.0, 0.2]), [0.8360188, 0.11314284, 0.05083836], rtol=0, atol=5e-9
    )
    # 1-D: every axis spelling gives the same answer
    for axis in (0, -1, None):
        np.testing.assert_array_equal(softmax([3.0, 1.0, 0.2], axis=axis), softmax([3.0, 1.0, 0.2]))


def test_scores2d_column_wise_vs_whole_array():
    # the quiz's expected answer: columns are the distributions (axis=0)
    column_wise = [
        [0.09003057, 0.00242826, 0.01587624, 0.33333333],
        [0.24472847, 0.01794253, 0.11731043, 0.33333333],
        [0.66524096, 0.97962921, 0.86681333, 0.33333333],
    ]
    np.testing.assert_allclose(softmax(SCORES2D, axis=0), column_wise, rtol=0, atol=5e-9)
    np.testing.assert_allclose(softmax(SCORES2D, axis=0).sum(axis=0), 1.0, rtol=1e-15)
    # "your_softmax": e / e.sum() normalises over the whole array -- that is axis=None
    your_softmax = [
        [4.89907947e-04, 1.33170787e-03, 3.61995731e-03, 7.27087861e-02],
        [1.33170787e-03, 9.84006416e-03, 2.67480676e-02, 7.27087861e-02],
        [3.61995731e-03, 5.37249300e-01, 1.97642972e-01, 7.27087861e-02],
    ]
    np.testing.assert_allclose(softmax(SCORES2D, axis=None), your_softmax, rtol=5e-8)
    # and the default (axis=-1) is row-wise: rows sum to 1, columns do not
    rows = softmax(SCORES2D)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-15)
    assert not np.allclose(rows, column_wise)


X1 = np.array([[1, 2, 3, 6]])
X2 = np.array([[1, 2, 3, 6], [2, 4, 5, 6], [1, 2, 3, 6]])
ROW_X1 = [0.00626879, 0.01704033, 0.04632042, 0.93037047]


def test_x1_batch_of_one():
    np.testing.assert_allclose(softmax(X1), [ROW_X1], rtol=0, atol=5e-9)
    # desertnaut_softmax (sum over axis 0) on a batch of one: all ones, the bug
    np.testing.assert_array_equal(softmax(X1, axis=0), [[1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(naive_softmax(X1, axis=0), softmax(X1, axis=0))


def test_x2_batch_row_wise_vs_column_wise_vs_whole():
    row_wise = [ROW_X1, [0.01203764, 0.08894682, 0.24178252, 0.65723302], ROW_X1]
    np.testing.assert_allclose(softmax(X2), row_wise, rtol=0, atol=5e-9)
    # samples 1 and 3 are the same sample: identical rows, identical to softmax(x1)
    r = softmax(X2)
    np.testing.assert_array_equal(r[0], r[2])
    np.testing.assert_array_equal(r[0], softmax(X1)[0])
    desertnaut = [
        [0.21194156, 0.10650698, 0.10650698, 0.33333333],
        [0.57611688, 0.78698604, 0.78698604, 0.33333333],
        [0.21194156, 0.10650698, 0.10650698, 0.33333333],
    ]
    np.testing.assert_allclose(softmax(X2, axis=0), desertnaut, rtol=0, atol=5e-9)
    your = [
        [0.00183535, 0.00498899, 0.01356148, 0.27238963],
        [0.00498899, 0.03686393, 0.10020655, 0.27238963],
        [0.00183535, 0.00498899, 0.01356148, 0.27238963],
    ]
    np.testing.assert_allclose(softmax(X2, axis=None), your, rtol=0, atol=5e-9)


def test_x2_tensorflow_float32_output():
    tf_out = np.array(
        [
            [0.00626879, 0.01704033, 0.04632042, 0.93037045],
            [0.01203764, 0.08894681, 0.24178252, 0.657233],
            [0.00626879, 0.01704033, 0.04632042, 0.93037045],
        ],
        dtype=np.float32,
    )
    r = softmax(X2.astype(np.float32))
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, tf_out, rtol=2e-7, atol=1e-8)


@pytest.mark.parametrize(
    ("x", "axis", "expected", "atol"),
    [
        ([[0.50839931, 0.49767588, 0.51260159]], -1, [[0.3340521, 0.33048906, 0.33545884]], 5e-9),
        ([13, 31, 5], -1, [1.52299795e-08, 9.99999985e-01, 5.10908895e-12], 5e-17),
        (
            [[1, 0, 2, -1], [2, 4, 6, 8], [3, 2, 1, 0]],
            1,
            [[0.24, 0.09, 0.64, 0.03], [0.0, 0.02, 0.12, 0.86], [0.64, 0.24, 0.09, 0.03]],
            5e-3,
        ),
        (
            [[-0.0052024, -0.00770216, 0.01360943, -0.008921]] * 2,
            -1,
            [[0.2492037, 0.24858153, 0.25393605, 0.24827873]] * 2,
            5e-9,
        ),
    ],
    ids=["sklearn", "argmax-like", "cs231n-rounded", "dense-layer-batch"],
)
def test_thread_answers(x, axis, expected, atol):
    np.testing.assert_allclose(softmax(x, axis=axis), expected, rtol=5e-8, atol=atol)


def test_seed_3d_float32_logits():
    logits = np.array(
        [[[0.9034822, 0.3930805], [0.62397, 0.6378774], [0.88049906, 0.299172]]], dtype=np.float32
    )
    expected = [[[0.62490064, 0.37509936], [0.4965232, 0.5034768], [0.64137274, 0.3586273]]]
    r = softmax(logits, axis=-1)
    assert r.shape == (1, 3, 2) and r.dtype == np.float32
    np.testing.assert_allclose(r, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(r.sum(axis=-1), 1.0, rtol=2e-7)


def test_theta_multiplier_is_inverse_temperature():
    # the thread's softmax(X, theta): exp(theta * x) / sum -- theta = 1 / temperature
    x = np.array([[1.0, 0.0, 2.0, -1.0], [2.0, 4.0, 6.0, 8.0]])
    for theta in (0.5, 2.0, 10.0):
        y = x * theta
        e = np.exp(y - y.max(axis=1, keepdims=True))
        seed = e / e.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(softmax(x, axis=1, temperature=1 / theta), seed, rtol=1e-14)


def test_overflow_1000_5():
    naive = naive_softmax([1000.0, 5.0])
    assert np.isnan(naive[0])
    np.testing.assert_allclose(softmax([1000.0, 5.0]), [1.0, math.exp(-995.0)], rtol=1e-15)


# --------------------------------------------------------------------------- online notebook

IP = np.array([2, 4, 1, 300, 400, 500, 600, 700, 800, 900, 100000])


def test_online_notebook_overflow():
    naive = naive_softmax(IP)
    # the notebook's printed naive result: [0 ... 0 nan nan nan]
    np.testing.assert_array_equal(naive[:8], 0.0)
    assert np.all(np.isnan(naive[8:]))
    r = softmax(IP)
    np.testing.assert_array_equal(r, [0.0] * 10 + [1.0])  # the "safe softmax" cell
    assert logsumexp(IP) == 100000.0  # exp(-99100) vanishes next to 1
    np.testing.assert_array_equal(log_softmax(IP)[-1], 0.0)
    np.testing.assert_allclose(log_softmax(IP)[:-1], IP[:-1] - 100000.0, rtol=1e-15)
    # float32 input too (100000 is exact in float32)
    np.testing.assert_array_equal(softmax(IP.astype(np.float32)), [0.0] * 10 + [1.0])


def test_online_notebook_normalizer_values():
    # cell 19: m = 0.3, d = sum(exp(x - m)) = 3.298306425538625 for [0.1, 0.3, 0.08, -0.09]
    i_ = np.array([0.1, 0.3, 0.08, -0.09])
    assert logsumexp(i_) == pytest.approx(0.3 + math.log(3.298306425538625), rel=1e-15, abs=0)
    np.testing.assert_allclose(softmax(i_), np.exp(i_ - 0.3) / 3.298306425538625, rtol=1e-15)


# --------------------------------------------------------------------------- cross-entropy nb


def test_crossentropy_notebook_softmax_overflow():
    logits = np.linspace(-1, 5e5, 500).reshape([50, 10])
    naive = naive_softmax(logits, axis=-1)
    # printed: [[0. nan nan ...], [nan ...], ...]
    assert naive[0, 0] == 0.0 and np.all(np.isnan(naive[0, 1:])) and np.all(np.isnan(naive[1:]))
    r = softmax(logits)
    expected = np.zeros((50, 10))
    expected[:, -1] = 1.0  # neighbours are ~1002 apart: exp(-1002) == 0 in float64
    np.testing.assert_array_equal(r, expected)
    # the notebook's in-range check: allclose to the stable formula
    small = np.linspace(-1, 500, 500).reshape([50, 10])
    e = np.exp(small - small.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(softmax(small), e / e.sum(axis=-1, keepdims=True), rtol=1e-13)


def test_crossentropy_notebook_loss_overflow():
    logits = np.linspace(-1, 1e5, 500).reshape([50, 10])
    answers = np.arange(50) % 10
    with np.errstate(all="ignore"):
        naive = -logits[np.arange(50), answers] + np.log(np.sum(np.exp(logits), axis=-1))
    assert np.all(np.isinf(naive[:3]))  # printed: [inf inf inf]
    loss = -log_softmax(logits)[np.arange(50), answers]
    np.testing.assert_allclose(loss[:3], [1803.6252505, 1603.22244489, 1402.81963928], rtol=1e-10)
    wrong = answers != 9
    lse = logsumexp(logits)
    np.testing.assert_allclose(
        loss[wrong], (lse - logits[np.arange(50), answers])[wrong], rtol=1e-15
    )
    # the right class: lse - x rounds to 0, log_softmax keeps -log1p(exp(x_8 - x_9)) ~ 9.25e-88
    np.testing.assert_array_equal((lse - logits[:, 9])[~wrong], 0.0)
    np.testing.assert_allclose(
        loss[~wrong], np.exp(logits[:, 8] - logits[:, 9])[~wrong], rtol=1e-13
    )
    assert np.all(np.isfinite(loss))
