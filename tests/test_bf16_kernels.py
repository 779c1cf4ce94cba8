"""The bfloat16 bits kernels' own shortcuts (``_kernels/bf16.py``): the short exp
(``exp_bf``, for results rounded to bfloat16) against float64, and the paired rows'
first-value shift with every condition that sends a pair back to its max."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from softmaxkit._kernels import bf16, bf16_math  # noqa: E402


def _bits(a):
    return (
        torch.from_numpy(np.ascontiguousarray(a, np.float32))
        .to(torch.bfloat16)
        .view(torch.int16)
        .numpy()
        .view(np.uint16)
    )


def _floats(bits):
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).double().numpy()


def test_exp_bf_relative_error_and_special_values():
    x = np.concatenate(
        [np.linspace(-87.0, 88.0, 400_001), np.random.default_rng(0).uniform(-1, 1, 10_000)]
    ).astype(np.float32)
    out = np.empty_like(x)
    bf16_math.exp_array(x, out)
    want = np.exp(x.astype(np.float64))
    err = np.abs(out - want) / want
    assert err.max() <= 3.5e-6, float(err.max())
    assert err.max() > 1e-7  # it is the short polynomial, not the float32 exp
    sp = np.array([-np.inf, np.nan, -1e30, -200.0, -88.5, 88.5, 1e30, np.inf, 0.0], np.float32)
    o = np.empty_like(sp)
    bf16_math.exp_array(sp, o)
    assert o[0] == 0 and np.isnan(o[1]) and o[2] == 0 and o[3] == 0
    assert 0 <= o[4] < 1.2e-38
    assert np.isposinf(o[5]) and np.isposinf(o[6]) and np.isposinf(o[7]) and o[8] == 1


def _rows_case():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 128)) * 3
    x[0, 0] = -100.0  # first value far below the max: exp(v - c) overflows, s = inf
    x[2, 0] = x[2].max() - 35  # log_softmax: s > 2^40 (max - c = 35), softmax: fine
    x[4, 0] = x[4].max() - 75  # s ~ e^75 < 2^100 for softmax: the shifted pair is kept
    x[6, 0] = np.nan  # c NaN: s NaN
    x[8, 0] = -np.inf  # c -inf: v - c = inf
    x[10, 0] = np.inf  # c +inf: the +inf rule
    x[12, 5] = np.inf  # +inf elsewhere: s = inf
    x[14, 3] = np.nan  # NaN elsewhere: s NaN
    x[16, :] = -np.inf  # all -inf
    x[18, :] = 7.0  # all equal
    x[20, 0] = 1e38  # c huge, others ~0: v - c = -1e38, s = 1 (kept)
    return x


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("T", [1.0, 0.7])
def test_first_value_shift_and_its_fallbacks_against_float64(log, T):
    x = _rows_case()
    xb = _bits(x)
    xd = torch.from_numpy(_floats(xb) / T)
    ref = (torch.log_softmax(xd, -1) if log else torch.softmax(xd, -1)).numpy()
    # the contract's edge rows (docs/dense.md): NaN rows NaN, all -inf 0 / -inf,
    # +inf entries share the mass
    ref[14] = np.nan
    ref[6] = np.nan
    ref[16] = -np.inf if log else 0.0
    for r, j in ((10, 0), (12, 5)):
        ref[r] = -np.inf if log else 0.0
        ref[r, j] = 0.0 if log else 1.0
    out = np.empty_like(xb)
    bf16.softmax_range(xb, 1.0 / T, log, out, 0, xb.shape[0])
    got = _floats(out)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    tol = 2.0**-8 * np.abs(ref[ok]) + (1e-5 if log else 1e-30)
    with np.errstate(invalid="ignore"):  # -inf == -inf: 0
        diff = np.where(got[ok] == ref[ok], 0.0, np.abs(got[ok] - ref[ok]))
    assert np.all(diff <= tol), np.nonzero(~(diff <= tol))
    # the one-row code (shifted by the max) gives the same bits up to one ulp
    one = np.empty_like(xb)
    fb = np.empty(xb.shape[1], np.float32)
    bf16._rows(xb, np.float32(1.0 / T), log, one, 0, xb.shape[0], fb)
    same = ~np.isnan(got)
    assert np.abs(one[same].astype(np.int32) - out[same].astype(np.int32)).max() <= 1


@pytest.mark.skipif(
    __import__("platform").machine() not in ("x86_64", "AMD64"), reason="x86 CPU names"
)
def test_kernels_built_without_avx512_bf16_give_the_same_bits(tmp_path):
    # the integer rounding inside the kernels (CPUs without vcvtneps2bf16): compiled
    # for a Haswell target in a child process with its own cache; on these ordinary
    # rows (no subnormal results, no NaN) both roundings give the same bits
    from _haswell import run_for_haswell

    x = _bits(np.random.default_rng(0).standard_normal((64, 200)) * 3)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np\n"
        "from softmaxkit._kernels.bf16_math import HW_BF16\n"
        "from softmaxkit._kernels import bf16\n"
        "x = np.load(sys.argv[1]); o = np.empty_like(x); g = np.empty_like(x)\n"
        "bf16.softmax_range(x, 1 / 0.7, False, o, 0, x.shape[0])\n"
        "bf16.vjp_range(o, x, 1.0, False, g, 0, x.shape[0])\n"
        "np.save(sys.argv[2], np.stack([o, g])); print(HW_BF16)\n"
    )
    out = run_for_haswell(
        tmp_path / "cache", code, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    )
    assert out.strip() == "False"
    o, g = np.empty_like(x), np.empty_like(x)
    bf16.softmax_range(x, 1 / 0.7, False, o, 0, x.shape[0])
    bf16.vjp_range(o, x, 1.0, False, g, 0, x.shape[0])
    theirs = np.load(tmp_path / "y.npy")
    assert np.array_equal(theirs[0], o) and np.array_equal(theirs[1], g)
