"""``runtime="tflite-arm64"`` against vectors recorded from a real aarch64 LiteRT.

``tests/data/tflite_arm64_vectors.npz`` was recorded by
``tools/make_tflite_arm64_vectors.py`` with the aarch64 ``ai-edge-litert`` wheel
run under qemu-user (see that script and ``docs/quantized.md``); these tests need
only NumPy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import softmaxkit.quantized as Q

DATA = Path(__file__).parent / "data" / "tflite_arm64_vectors.npz"


@pytest.fixture(scope="module")
def rec():
    z = np.load(DATA)
    meta = json.loads(str(z["meta"]))
    return z, meta


def _params(c):
    return float.fromhex(c["input_scale_hex"]), float.fromhex(c["beta_hex"])


def test_recorded_on_aarch64_litert(rec):
    _, meta = rec
    assert meta["runtime"]["machine"] == "aarch64"
    assert meta["runtime"]["ai-edge-litert"] == "2.3.0"
    assert len(meta["cases"]) >= 100
    assert {c["dtype"] for c in meta["cases"]} == {"int8", "uint8"}


def test_tflite_arm64_matches_litert_aarch64_bit_exactly(rec):
    z, meta = rec
    rows = 0
    for c in meta["cases"]:
        k = c["id"]
        assert c["status"]["optimized"] == "ok", k
        x, want = z[f"{k}_x"], z[f"{k}_opt"]
        scale, beta = _params(c)
        got = Q.softmax(x, scale, beta=beta, runtime="tflite-arm64")
        assert got.dtype == want.dtype and got.shape == want.shape, k
        bad = np.flatnonzero((got != want).reshape(-1, x.shape[-1]).any(axis=1))
        assert bad.size == 0, (k, c["note"], scale, beta, bad[:5])
        rows += want.size // x.shape[-1]
    assert rows >= 6000


def test_aarch64_reference_kernel_is_tflite_reference(rec):
    # the same build's BUILTIN_REF resolver: softmaxkit's "tflite-reference" on those rows
    z, meta = rec
    n = 0
    for c in meta["cases"]:
        k = c["id"]
        if f"{k}_ref_minus_opt" not in z.files:
            continue
        x = z[f"{k}_x"]
        want = (z[f"{k}_opt"].astype(np.int16) + z[f"{k}_ref_minus_opt"]).astype(x.dtype)
        scale, beta = _params(c)
        if x.shape[-1] > 65536:  # the reference kernel's int32 sum wraps: softmaxkit refuses
            with pytest.raises(ValueError, match="int32 sum of exps overflows"):
                Q.softmax(x, scale, beta=beta, runtime="tflite-reference")
            continue
        got = Q.softmax(x, scale, beta=beta, runtime="tflite-reference")
        assert np.array_equal(got, want), (k, c["note"])
        n += 1
    assert n >= 90


def test_default_xnnpack_delegate_leaves_8bit_softmax_to_tflite(rec):
    # AUTO (default XNNPACK delegate) gave the optimized kernel's output in every case, and
    # XNNPACK's own qu8 softmax would have differed on some recorded uint8 rows: the delegate
    # does not take the 8-bit softmax on aarch64
    z, meta = rec
    assert all(c["default_equals_optimized"] for c in meta["cases"])
    differs = 0
    for c in meta["cases"]:
        scale, beta = _params(c)
        if c["dtype"] != "uint8" or beta != 1.0:
            continue
        k = c["id"]
        xnn = Q.softmax(z[f"{k}_x"], scale, runtime="xnnpack")
        differs += int((xnn != z[f"{k}_opt"]).any())
    assert differs > 0


def test_seed_case_on_aarch64(rec):
    z, meta = rec
    (c,) = [c for c in meta["cases"] if c["note"] == "seed: 1 row of 10"]
    want = [-93, -100, -104, -107, -111, -111, -108, -90, -109, -91]
    assert z[f"{c['id']}_opt"].tolist() == [want]
    x = np.array([101, 49, 6, -34, -75, -79, -38, 120, -55, 115], np.int8)
    assert Q.softmax(x, 1 / 255, runtime="tflite-arm64").tolist() == want


@pytest.mark.parametrize("n,want", [(65537, -128), (65538, 127), (65541, -64)])
def test_tflite_arm64_row_sum_wraps_at_32_bits(rec, n, want):
    # n equal values: the sum n * 65535 wraps mod 2^32 (to -1, 65533, 262139); recorded so
    z, meta = rec
    (c,) = [c for c in meta["cases"] if c["note"] == f"{n} equal values" and c["dtype"] == "int8"]
    assert np.unique(z[f"{c['id']}_opt"]).tolist() == [want]
    got = Q.softmax(np.full((1, n), 3, np.int8), 1 / 256, runtime="tflite-arm64")
    assert np.unique(got).tolist() == [want]


def _double_inv_variant(x, scale):
    """The ARM64 kernel with ``1 / (sum * output_scale)`` in double (the mutation pinned)."""
    import math

    from softmaxkit.quantized._runtimes import arm64_table

    t = arm64_table(scale, 1.0).astype(np.int64)
    out = []
    for row in x.astype(np.int64):
        tr = t[row.max() - row]
        frac, shift = math.frexp(256.0 / float(tr.sum()))
        q = math.floor(frac * 2**31 + 0.5)
        h = (tr * q + 2**30) >> 31  # shift <= 0 here: outputs are <= 256 steps
        e = -shift
        out.append(((h + (1 << (e - 1))) >> e if e else h) - 128)
    return np.clip(np.array(out), -128, 127)


def test_tflite_arm64_inverse_sum_is_float32(rec):
    # rows where a double 1 / (sum * scale) would round an output the other way: the
    # runtime gave the float32 answer, which is what runtime="tflite-arm64" computes
    z, meta = rec
    cs = [c for c in meta["cases"] if c["note"] == "float32 inv"]
    assert len(cs) == 4
    for c in cs:
        x, want = z[f"{c['id']}_x"], z[f"{c['id']}_opt"]
        scale, _ = _params(c)
        assert np.array_equal(Q.softmax(x, scale, runtime="tflite-arm64"), want)
        assert not np.array_equal(_double_inv_variant(x, scale), want)
