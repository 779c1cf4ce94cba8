"""Smoke test of ``softmaxkit bench``: every dense case runs once on tiny shapes."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from softmaxkit.bench import core as bench
from softmaxkit.bench import dense as _bench_dense
from softmaxkit.cli import core as cli


@pytest.fixture
def tiny_shapes(monkeypatch):
    monkeypatch.setattr(_bench_dense, "QUICK_SHAPES", [((3, 50), -1), ((40, 6), 0)])


def test_every_case_runs_once(tiny_shapes):
    cases = bench.select_cases(quick=True, families=["dense"])
    assert {c.op for c in cases} == {"softmax", "log_softmax", "logsumexp"}
    results = bench.run_cases(cases, repeats=1, budget_s=0.0)
    assert len(results) == len(cases) == 2 * 2 * 3
    for r in results:
        ours = r["impls"]["softmaxkit"]
        assert ours["vs_baseline"] == 1.0
        assert r["impls"]["softmaxkit out="]["vs_baseline"] == 1.0
        assert ours["max_error"] is not None
        # float32 contract bounds (the check mixes relative and absolute scales)
        assert ours["max_error"] < 1e-5
        assert {"floor", "floor new", "floor read"} <= set(r["impls"])
        assert r["extra"]["bound"] == ("floor read" if r["op"] == "logsumexp" else "floor new")
        for name in ("numpy", "scipy"):
            assert r["impls"][name]["max_error"] < 1e-5
    text = bench.format_table(results)
    assert "softmax" in text and "floor %" in text and "reach x" in text
    # reach x = min(torch, scipy) / the bound floor, from the same medians
    r = results[0]
    im = r["impls"]
    want = min(im[p]["median_s"] for p in ("torch", "scipy") if p in im)
    want /= im[r["extra"]["bound"]]["median_s"]
    assert bench._reach(r) == f"{want:.1f}"
    md = bench.format_markdown(results, bench.machine())
    assert md.count("\n|") >= len(results)


def test_cli_writes_only_requested_files(tiny_shapes, tmp_path, capsys):
    js = tmp_path / "b.json"
    md = tmp_path / "b.md"
    argv = ["bench", "--quick", "--op", "logsumexp", "--repeats", "1", "--budget", "0"]
    assert cli.main([*argv, "--json", str(js), "--markdown", str(md)]) == 0
    data = json.loads(js.read_text())
    assert len(data["results"]) == 4 and "machine" in data
    assert "| op |" in md.read_text()
    assert "logsumexp" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.md"]


def test_cli_errors(capsys):
    assert cli.main(["bench", "--family", "nope"]) == 2
    assert "--family must be among" in capsys.readouterr().err
    assert cli.main(["bench", "--repeats", "0"]) == 2


def test_plot(tiny_shapes, tmp_path):
    pytest.importorskip("matplotlib")
    cases = [c for c in bench.select_cases(quick=True, families=["dense"]) if c.op == "softmax"][:2]
    results = bench.run_cases(cases, repeats=1, budget_s=0.0, memory=False)
    png = tmp_path / "b.png"
    bench.plot(results, str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_floor_kernel_copies(dtype):
    # an odd size from an unaligned start: the streaming copy's head and tail
    x = (np.arange(200_003, dtype=np.float64) % 2000).astype(dtype)[1:]
    impls = bench._floor_impls(x)
    assert set(impls) == {"floor", "floor nt", "floor new", "floor read"}
    for name in ("floor", "floor nt", "floor new"):
        out = impls[name]()
        out[...] = 0
        np.testing.assert_array_equal(impls[name](), x, err_msg=name)
    assert impls["floor new"]() is not impls["floor new"]()  # a fresh output per call
    # the read floor reduces each block of the input to its max
    blocks = np.array_split(x, np.arange(bench._FLOOR_BLOCK, x.size, bench._FLOOR_BLOCK))
    np.testing.assert_array_equal(impls["floor read"](), [b.max() for b in blocks])


def test_other_families_table_and_json():
    """Non-dense families get one line per implementation with its time over ours."""
    import json

    from softmaxkit.bench.timing import Case

    case = Case(
        family="losses",
        op="toy",
        label="[3]",
        impls={"softmaxkit": lambda: 1.0, "peer": lambda: 2.0},
        check=lambda res: abs(res - 1.0),
        extra={"peak_extra_MiB": {"softmaxkit": 1.5, "peer": 3.0}},
    )
    results = bench.run_cases([case], repeats=3, budget_s=0.01, memory=False)
    for v in results[0]["impls"].values():  # the spread of the rounds, in the JSON
        assert v["min_s"] <= v["q1_s"] <= v["median_s"] <= v["q3_s"]
    text = bench.format_table(results)
    assert "x softmaxkit" in text and "peak_extra_MiB 3.0" in text
    md = bench.format_markdown(results)
    assert md.count("| losses | toy |") == 2
    assert json.loads(bench.to_json(results, {}, "cmd"))["results"][0]["op"] == "toy"
    assert "family must be among" not in text
    defaults = {m.rsplit(".", 1)[-1] for m in bench._BENCH_FAMILIES}
    assert {"dense", "online", "losses", "dask"} <= defaults


def test_losses_quick_cases_run_once():
    """Smoke test: every --quick losses case runs each implementation (one round)."""
    from softmaxkit.bench import losses as _bench_losses

    cases = _bench_losses.cases(True)
    results = bench.run_cases(cases, repeats=1, budget_s=0.0, memory=False)
    assert len(results) == len(cases) == 2
    for r in results:
        assert r["failed"] == {}
        assert r["impls"]["softmaxkit"]["median_s"] > 0
        for name, v in r["impls"].items():
            if v["max_error"] is not None:
                assert v["max_error"] < 1e-4, name


def test_timing_order_puts_single_threaded_peers_after_torch():
    names = ["softmaxkit", "softmaxkit out=", "numpy", "scipy", "torch", "torch out="]
    names += ["floor", "floor nt", "floor new", "floor read"]
    order = bench._timing_order(names)
    assert sorted(order) == sorted(names)
    assert order[-4:] == ["torch", "torch out=", "numpy", "scipy"]
    # cyclically, and across the rotation of rounds, nothing multi-threaded of ours
    # runs right after a PyTorch call
    for r in range(len(order)):
        rot = order[r:] + order[:r]
        nxt = rot + order[r + 1 :] + order[: r + 1]
        for a, b in itertools.pairwise(nxt):
            if a.startswith("torch"):
                assert b.startswith(("torch", "numpy", "scipy")), (a, b)
    assert bench._timing_order(["b", "torch", "a"]) == ["b", "a", "torch"]


def test_plot_shows_every_family_and_the_cases_we_lose(tmp_path):
    """The plot has a panel per family (not only dense) and keeps ratios below 1."""
    from softmaxkit.bench import report

    def dense(op, torch_x):
        impls = {"softmaxkit": {"median_s": 1.0, "vs_baseline": 1.0}}
        impls["torch"] = {"median_s": torch_x, "vs_baseline": torch_x}
        return {"family": "dense", "op": op, "label": "[2, 3] float32", "impls": impls}

    def other(fam, peer_s):
        impls = {"softmaxkit": {"median_s": 2.0}, "softmaxkit out=": {"median_s": 1.0}}
        impls["floor"] = {"median_s": 0.1}
        impls["peer"] = {"median_s": peer_s}
        return {"family": fam, "op": "op", "label": "[4]", "impls": impls}

    results = [dense("softmax", 0.5), dense("logsumexp", 3.0)]
    results += [other("online", 1.0), other("segments", 8.0)]
    panels = report._plot_panels(results)
    assert [fam for fam, _, _ in panels] == ["dense", "online", "segments"]
    (_, _, dense_rows), (_, _, online_rows), (_, _, seg_rows) = panels
    assert [v["torch"] for _, v in dense_rows] == [0.5, 3.0]
    # one header row per case, then one row per peer; floors and our variants are not peers
    assert [v for _, v in online_rows] == [None, 0.5]
    assert [v for _, v in seg_rows] == [None, 4.0]
    assert "vs peer" in online_rows[1][0]
    png = tmp_path / "p.png"
    report.plot(results, str(png), {"cpu": "Test CPU", "cpus": 2, "numba_threads": 2})
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert report.machine_name({"cpu": "Test CPU", "cpus": 2}) == "Test CPU, 2 CPUs"


def test_other_families_show_their_floor_scaled_by_the_copies_they_move():
    """A non-dense case with an input shows a read+write floor line, the copy of its
    input scaled by ``extra["floor_copies"]`` (forward + backward moves 3 copies)."""
    from softmaxkit.bench.timing import Case

    x = np.ones((64, 4096), np.float32)

    def case(copies):
        extra = {"input": lambda: x}
        if copies is not None:
            extra["floor_copies"] = copies
        return Case(
            family="torch",
            op="toy",
            label="[64, 4096]",
            impls={"softmaxkit": lambda: x.copy()},
            nbytes=2 * x.nbytes,
            extra=extra,
        )

    res = bench.run_cases([case(None), case(3.0)], repeats=5, budget_s=0.05, memory=False)
    for r, k in zip(res, (1, 3), strict=True):
        copies = [r["impls"][n]["median_s"] for n in ("floor", "floor nt") if n in r["impls"]]
        assert copies and r["floor_s"] == pytest.approx(k * min(copies))
    three = res[1]["floor_s"]
    assert res[1]["extra"]["floor_copies"] == 3.0
    ff = res[1]["impls"]["softmaxkit"]["floor_fraction"]
    assert ff == pytest.approx(three / res[1]["impls"]["softmaxkit"]["median_s"])
    text = bench.format_table(res)
    assert "read+write floor (1 x input copy)" in text
    assert "read+write floor (3.0 x input copy)" in text
    assert "exp pass" not in text
    # a case with an exp pass ("floor exp", bench/torch.py) shows it as a bound line
    c = case(1.0)
    c.impls["floor exp"] = lambda: x.max()
    (r,) = bench.run_cases([c], repeats=3, budget_s=0.05, memory=False)
    ex = r["impls"]["floor exp"]["median_s"]
    line = next(ln for ln in bench.format_table([r]).splitlines() if "exp pass" in ln)
    assert f"{ex / r['impls']['softmaxkit']['median_s']:.2f}" in line


def test_each_timed_call_follows_an_untimed_read_of_the_input(monkeypatch):
    """Every timed call starts after a read of the input ("floor read"), so a call is
    not charged for what the call before it evicted (SciPy's temporaries)."""
    from softmaxkit.bench.timing import Case

    x = np.ones(1000, np.float32)
    log: list[str] = []

    def impl(name):
        def f():
            log.append(name)
            return x

        return f

    real = bench._floor_impls

    def logged_floors(arr):
        impls = real(arr)
        read = impls["floor read"]
        impls["floor read"] = lambda: (log.append("read"), read())[1]
        return impls

    monkeypatch.setattr(bench, "_floor_impls", logged_floors)
    case = Case(
        family="dense",
        op="toy",
        label="[1000]",
        impls={"softmaxkit": impl("softmaxkit"), "scipy": impl("scipy")},
        check=None,
        nbytes=x.nbytes,
        extra={"input": lambda: x},
    )
    (result,) = bench.run_cases([case], repeats=4, budget_s=10.0, memory=False)
    assert result["repeats"] == 4
    calls = [i for i, v in enumerate(log) if v in ("softmaxkit", "scipy")]
    # the last 8 calls (4 rounds of 2) are the timed ones: each right after a read
    assert all(log[i - 1] == "read" for i in calls[-8:]), log


def test_stream_case_leaves_no_temporary_files(monkeypatch, tmp_path):
    """The online family's stream case writes its .npy files on first use into a
    temporary directory and removes it after the case: when it ran, when it was
    filtered out (``--op``), and when it was interrupted mid-case."""
    import tempfile

    from softmaxkit.bench import online as _bench_online

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    leftovers = lambda: sorted(p.name for p in tmp_path.iterdir())  # noqa: E731

    # built but never run (what `softmaxkit bench --op softmax` does): nothing written
    case = _bench_online._stream_case(4, 1000)
    assert leftovers() == []

    results = bench.run_cases([case], repeats=1, budget_s=0.0, memory=False)
    assert results[0]["failed"] == {}
    assert results[0]["impls"]["softmaxkit stream"]["max_error"] < 1e-6
    assert leftovers() == []

    case = _bench_online._stream_case(4, 1000)
    stream = case.impls["softmaxkit stream"]

    def interrupted():
        stream()  # the input file exists now
        assert len(leftovers()) == 1
        raise KeyboardInterrupt

    case.impls["softmaxkit stream"] = interrupted
    with pytest.raises(KeyboardInterrupt):
        bench.run_cases([case], repeats=1, budget_s=0.0, memory=False)
    assert leftovers() == []
