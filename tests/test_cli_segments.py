"""``softmaxkit segment-softmax`` and the HMM demo step."""

from __future__ import annotations

import io

import numpy as np
import pytest

from softmaxkit import segment_log_softmax, segment_softmax
from softmaxkit.cli import main
from softmaxkit.cli import segments as _cli_segments


def test_segment_softmax_command(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3))
    ids = rng.integers(0, 4, 12)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ids.npy", ids)
    out = str(tmp_path / "o.npy")
    assert (
        main(
            [
                "segment-softmax",
                str(tmp_path / "x.npy"),
                "--ids",
                str(tmp_path / "ids.npy"),
                "-o",
                out,
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(np.load(out), segment_softmax(x, ids))
    off = np.array([0, 5, 5, 12])
    np.save(tmp_path / "off.npy", off)
    argv = ["segment-softmax", str(tmp_path / "x.npy"), "--offsets", str(tmp_path / "off.npy")]
    assert main([*argv, "-o", out, "--log", "--temperature", "2"]) == 0
    np.testing.assert_array_equal(np.load(out), segment_log_softmax(x, offsets=off, temperature=2))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --ids"),
        (["--ids", "BADIDS"], "integer dtype"),
        (["--ids", "IDS", "--num-segments", "1"], "segment_ids must be < num_segments"),
    ],
)
def test_segment_softmax_command_errors(tmp_path, capsys, extra, message):
    np.save(tmp_path / "x.npy", np.zeros(4))
    np.save(tmp_path / "ids.npy", np.array([0, 1, 1, 0]))
    np.save(tmp_path / "bad.npy", np.zeros(4))
    names = {"IDS": str(tmp_path / "ids.npy"), "BADIDS": str(tmp_path / "bad.npy")}
    extra = [names.get(a, a) for a in extra]
    argv = ["segment-softmax", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npy"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert main(["segment-softmax", "x.txt", "--ids", names["IDS"], "-o", "o.npy"]) == 2
    bad = tmp_path / "bad_header.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8\n  ")
    argv = ["segment-softmax", str(bad), "--ids", names["IDS"], "-o", str(tmp_path / "o.npy")]
    assert main(argv) == 2
    assert "not a valid .npy file" in capsys.readouterr().err


def test_hmm_forward_matches_brute_force_and_demo_step():
    log_pi, log_A, log_E, obs = _cli_segments.hmm_weather(T=300, seed=3)
    short = obs[:7]
    bf = _cli_segments._brute_force(log_pi, log_A, log_E, short)
    assert abs(_cli_segments.hmm_forward(log_pi, log_A, log_E, short) - bf) <= 1e-13 * abs(bf)
    # the whole sequence: float64 probability-space forward with rescaling agrees
    pi, A, E = np.exp(log_pi), np.exp(log_A), np.exp(log_E)
    alpha = pi * E[:, obs[0]]
    ll = 0.0
    for o in obs[1:]:
        c = alpha.sum()
        ll += np.log(c)
        alpha = (alpha / c) @ A * E[:, o]
    ll += np.log(alpha.sum())
    got = _cli_segments.hmm_forward(log_pi, log_A, log_E, obs)
    assert abs(got - ll) <= 1e-12 * abs(ll)
    buf = io.StringIO()
    _cli_segments.DEMO_STEPS[0](buf)
    assert "underflow" in buf.getvalue() and "-inf" in buf.getvalue()


def test_bench_segments_cases_run_once_on_tiny_shapes():
    from softmaxkit.bench import core as bench
    from softmaxkit.bench import segments as _bench_segments

    assert "softmaxkit.bench.segments" in bench._BENCH_FAMILIES
    cases = [
        *_bench_segments._segment_cases(3000, 40),
        _bench_segments._lcse_case(3, 200),
        _bench_segments._lme_case(70),
    ]
    results = bench.run_cases(cases, repeats=1, budget_s=0.0, memory=False)
    assert len(results) == 6
    for r in results:
        ours = r["impls"]["softmaxkit"]
        assert ours["vs_baseline"] == 1.0
        if r["op"] != "segment_softmax":
            assert ours["max_error"] < 1e-5, r
    assert "segment_logsumexp" in bench.format_table(results)
