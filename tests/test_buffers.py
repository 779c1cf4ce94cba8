"""Fresh outputs of the dense ops start on a 2 MiB boundary (softmaxkit._buffers)."""

import numpy as np
import pytest

import softmaxkit as sk
from softmaxkit import _buffers
from softmaxkit.reference import log_softmax as ref_log_softmax
from softmaxkit.reference import softmax as ref_softmax

BIG = (2048, 1025)  # 4.0 MiB of float16 (8 MiB float32): not a 2 MiB multiple


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_large_outputs_are_aligned_with_the_input_layout(order, dtype):
    x = np.zeros(BIG, dtype=np.float32, order=order)
    out = _buffers.empty_like(x, dtype)
    assert out.shape == x.shape and out.dtype == dtype
    assert out.ctypes.data % _buffers.HUGE_PAGE == 0
    assert out.flags.writeable and out.flags.aligned
    assert out.flags.c_contiguous == (order == "C")
    assert out.flags.f_contiguous == (order == "F")
    assert not np.shares_memory(out, x)
    out[...] = 1  # the whole view is writable memory of its own
    assert out.sum(dtype=np.float64) == out.size


def test_small_and_strided_inputs_keep_numpy_empty_like():
    small = np.zeros((8, 3), dtype=np.float32, order="F")
    got = _buffers.empty_like(small, np.float64)
    want = np.empty_like(small, dtype=np.float64)
    assert got.flags.owndata and got.strides == want.strides
    strided = np.zeros((2048, 2048), dtype=np.float32)[:, ::2]  # 8 MiB base, not contiguous
    got = _buffers.empty_like(strided, np.float32)
    assert got.strides == np.empty_like(strided).strides


@pytest.mark.parametrize("op, ref", [(sk.softmax, ref_softmax), (sk.log_softmax, ref_log_softmax)])
@pytest.mark.parametrize("order, axis", [("C", -1), ("F", 0), ("C", 0)])
def test_plain_calls_return_aligned_correct_outputs(op, ref, order, axis):
    x = np.asarray(np.random.default_rng(5).standard_normal(BIG) * 5, dtype=np.float32, order=order)
    got = op(x, axis=axis)
    assert got.ctypes.data % _buffers.HUGE_PAGE == 0
    assert got.flags.c_contiguous == x.flags.c_contiguous
    np.testing.assert_allclose(got, ref(x, axis=axis), rtol=2e-6, atol=1e-6)
