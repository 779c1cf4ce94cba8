"""Reports of ``softmaxkit bench``: the text and Markdown tables, JSON and the plot.

The runner (:mod:`softmaxkit.bench.core`) returns one result dict per case; this
module only formats them.  Dense cases get one line per case with every peer as a
multiple of softmaxkit's time (higher = softmaxkit faster), floor fractions and the
error; the other families get one line per implementation.  The plot shows every
family in the results, one panel each, on a log axis with the 1.0 line drawn, so
that the cases where a peer is faster stand out.
"""

from __future__ import annotations

import importlib
import json
import platform
from typing import Any

import numpy as np

from .._core.npyio import write_atomic

__all__ = ["format_markdown", "format_table", "machine", "machine_name", "plot", "to_json"]


def machine() -> dict[str, Any]:
    """A short description of the machine and the library versions."""
    import numba

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        import os

        info["cpus"] = os.cpu_count()
    except OSError:
        pass
    for mod in ("scipy", "torch"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except ImportError:
            pass
    import sys

    for mod in ("jax", "onnxruntime"):  # only when a case used them
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    try:
        import os

        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    return info


_PEERS = ("numpy", "scipy", "torch", "torch out=", "jax jit", "ort", "ort out=")


def _fmt_ms(t: float | None) -> str:
    return "-" if t is None else f"{t * 1e3:.2f}"


def _rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["op", "input", "ours ms", "ours out= ms"]
    header += [f"{p} x" for p in _PEERS]
    header += ["reach x", "floor %", "out= floor %", "max err", "out= peak extra (x input)"]
    rows = []
    for r in results:
        im = r["impls"]
        ours = im.get(r["baseline"], {})
        ours_out = im.get(r["baseline"] + " out=", {})
        line = [
            r["op"],
            r["label"],
            _fmt_ms(ours.get("median_s")),
            _fmt_ms(ours_out.get("median_s")),
        ]
        for p in _PEERS:
            v = im.get(p, {}).get("vs_baseline")
            line.append("-" if v is None else f"{v:.1f}")
        line.append(_reach(r))
        for d in (ours, ours_out):
            ff = d.get("floor_fraction")
            line.append("-" if ff is None else f"{100 * ff:.0f}")
        err = ours.get("max_error")
        line.append("-" if err is None else f"{err:.1e}")
        pk = ours_out.get("peak_extra_bytes", ours.get("peak_extra_bytes"))
        nb = r.get("nbytes") or 0
        line.append("-" if pk is None or not nb else f"{pk / (nb / 2):.2f}")
        rows.append(line)
    return header, rows


def _reach(r: dict[str, Any]) -> str:
    """The best "x" any implementation could show against the nearer of PyTorch's plain
    call and SciPy: min(their times) / the case's lower bound (``extra["bound"]``, a
    floor measured in the same run: allocate + copy, or one read of the input)."""
    im = r["impls"]
    bound = im.get(r.get("extra", {}).get("bound", ""), {}).get("median_s")
    peers = [im[p]["median_s"] for p in ("torch", "scipy") if p in im]
    if not bound or not peers:
        return "-"
    return f"{min(peers) / bound:.1f}"


def _ours(r: dict[str, Any]) -> str | None:
    for name in r["impls"]:
        if name.startswith("softmaxkit"):
            return name
    return None


def _generic_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One line per implementation, for the families whose peers differ per case."""
    header = ["family", "op", "input", "implementation", "median ms", "x softmaxkit"]
    header += ["max err", "peak extra MB", "notes"]
    rows = []
    for r in results:
        ours = _ours(r)
        t_ours = r["impls"].get(ours, {}).get("median_s") if ours else None
        for name, d in r["impls"].items():
            if name.startswith("floor"):
                continue
            t = d.get("median_s")
            ratio = "-" if not (t and t_ours) else f"{t / t_ours:.2f}"
            err = d.get("max_error")
            pk = d.get("peak_extra_bytes")
            notes = "; ".join(
                f"{k} {v[name]}"
                for k, v in r.get("extra", {}).items()
                if isinstance(v, dict) and name in v
            )
            rows.append(
                [
                    r["family"],
                    r["op"],
                    r["label"],
                    name,
                    _fmt_ms(t),
                    ratio,
                    "-" if err is None else f"{err:.1e}",
                    "-" if pk is None else f"{pk / 2**20:.0f}",
                    str(notes),
                ]
            )
        fl = r.get("floor_s")
        if fl and r["family"] != "dense":
            # the bound measured in the same run: copies of the input on our threads
            k = r.get("extra", {}).get("floor_copies", 1)
            name = f"read+write floor ({k} x input copy)"
            ratio = "-" if not t_ours else f"{fl / t_ours:.2f}"
            rows.append([r["family"], r["op"], r["label"], name, _fmt_ms(fl), ratio, "-", "-", ""])
        ex = r["impls"].get("floor exp", {}).get("median_s")
        if ex:  # the compute bound measured in the same run (bench/torch.py::_exp_pass)
            name = "exp pass (logsumexp forward: one read, one exp a value)"
            ratio = "-" if not t_ours else f"{ex / t_ours:.2f}"
            rows.append([r["family"], r["op"], r["label"], name, _fmt_ms(ex), ratio, "-", "-", ""])
    return header, rows


def _split(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dense = [r for r in results if r["family"] == "dense"]
    return dense, [r for r in results if r["family"] != "dense"]


def _text(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    for r in rows:
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    return lines


def format_table(results: list[dict[str, Any]]) -> str:
    """Plain-text tables: dense ops (peers as multiples of our time, floor %), then the
    other families (one line per implementation, 'x softmaxkit' = its time / ours)."""
    dense, other = _split(results)
    lines = []
    if other:
        lines += _text(*_generic_rows(other))
        lines.append("x softmaxkit: implementation time / softmaxkit time (higher = we are faster)")
        if not dense:
            return "\n".join(lines)
        lines.append("")
    results = dense
    header, rows = _rows(results)
    lines += _text(header, rows)
    lines.append(
        "peer columns: peer time / softmaxkit time (higher = we are faster; 'out=' peers "
        "against our out= call); floor %: time of the faster read+write copy of the input "
        "(plain or streaming stores) on the same threads / our time; reach x: "
        "min(torch, scipy time) / a lower bound for any implementation (allocate + copy "
        "for softmax and log_softmax, one read of the input for logsumexp): where it is "
        "below 3, 3x faster than both is out of reach on this machine"
    )
    comp = [v for r in results for k, v in r.get("extra", {}).get("compile_s", {}).items() if k]
    if comp:
        lines.append(
            f"jax jit: compile excluded from its times, {min(comp):.2f}-{max(comp):.2f} s "
            "per case (jit(f).lower(x).compile())"
        )
    return "\n".join(lines)


def format_markdown(results: list[dict[str, Any]], info: dict[str, Any] | None = None) -> str:
    """The same tables in Markdown, with the machine description."""
    dense, other = _split(results)
    out = []
    if info:
        out.append("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + "\n")
    for part, rows_of, first_num in ((dense, _rows, 2), (other, _generic_rows, 4)):
        if not part:
            continue
        header, rows = rows_of(part)
        out.append("| " + " | ".join(header) + " |")
        out.append(
            "|" + "|".join("---:" if i >= first_num else "---" for i in range(len(header))) + "|"
        )
        for r in rows:
            out.append("| " + " | ".join(r) + " |")
        out.append("")
    return "\n".join(out)


_MARKERS = {
    "numpy": "o",
    "scipy": "s",
    "torch": "^",
    "torch out=": "v",
    "jax jit": "D",
    "ort": "P",
    "ort out=": "X",
}
_LABEL_MAX = 64  # characters of a y label; longer labels are cut with an ellipsis


def machine_name(info: dict[str, Any]) -> str:
    """``"AMD EPYC, 2 CPUs, 2 threads"``: the CPU model, its core count and the threads."""
    parts = [str(info.get("cpu") or info.get("processor") or "unknown CPU")]
    if info.get("cpus"):
        parts.append(f"{info['cpus']} CPUs")
    if info.get("numba_threads"):
        parts.append(f"{info['numba_threads']} threads")
    load = info.get("loadavg")
    if isinstance(load, (list, tuple)) and load:
        parts.append(f"load {float(load[0]):.1f}")
    return ", ".join(parts)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _LABEL_MAX else text[: _LABEL_MAX - 1] + "\u2026"


def _plot_panels(results: list[dict[str, Any]]) -> list[tuple[str, str, list[Any]]]:
    """One panel per family, in the order the families first appear.

    ``("dense", "dots", [(case label, {peer: ratio})])`` for the dense family (the same
    peers on every case: one row per case, one marker per peer), and
    ``(family, "bars", [(label, ratio or None)])`` for the others, whose peers differ
    per case: a header row per case (ratio None), then one row per peer.  A ratio is
    the peer's median time over softmaxkit's (the dense ``out=`` peers over our
    ``out=`` call, as in the table).
    """
    families: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        families.setdefault(r["family"], []).append(r)
    panels: list[tuple[str, str, list[Any]]] = []
    for fam, rs in families.items():
        if fam == "dense":
            rows: list[Any] = []
            for r in rs:
                vals = {}
                for p in _PEERS:
                    v = r["impls"].get(p, {}).get("vs_baseline")
                    if v:
                        vals[p] = float(v)
                rows.append((_short(f"{r['op']} {r['label']}"), vals))
            panels.append((fam, "dots", rows))
            continue
        rows = []
        for r in rs:
            ours = _ours(r)
            t_ours = r["impls"].get(ours, {}).get("median_s") if ours else None
            peers = [
                (name, d.get("median_s"))
                for name, d in r["impls"].items()
                if not name.startswith(("floor", "softmaxkit")) and name != ours
            ]
            if not t_ours or not peers:
                continue
            rows.append((_short(f"{r['op']}  {r['label']}"), None))
            for name, t in peers:
                rows.append((_short(f"vs {name}"), (t / t_ours) if t else None))
        if rows:
            panels.append((fam, "bars", rows))
    return panels


def plot(results: list[dict[str, Any]], path: str, info: dict[str, Any] | None = None) -> None:
    """Write a chart of every peer's time relative to softmaxkit's to ``path`` (PNG).

    One panel per family in ``results``; the x axis is peer time / softmaxkit time on
    a log scale, with the 1.0 line drawn and the side where the peer is faster
    shaded, and the ratios below 1 written beside their marks.  The title names the
    machine (``info``, by default :func:`machine`).  The file is written atomically
    (a temporary beside it, then a rename), like every softmaxkit output.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OSError(
            "--plot needs matplotlib: pip install 'softmaxkit[plot]' (or pip install matplotlib)"
        ) from None
    if info is None:
        info = machine()
    panels = _plot_panels(results)
    if not panels:
        raise ValueError("plot: no result has both softmaxkit and a peer timed")
    row_in = 0.2  # inches per row
    heights = [len(rows) * row_in + 0.9 for _, _, rows in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights},
        layout="constrained",
        squeeze=False,
    )
    for ax, (fam, kind, rows) in zip(axes[:, 0], panels, strict=True):
        ratios: list[float] = []
        y = np.arange(len(rows))[::-1]  # first row on top
        if kind == "dots":
            for p in _PEERS:
                ys = [yy for yy, (_, v) in zip(y, rows, strict=True) if p in v]
                xs = [v[p] for _, v in rows if p in v]
                if not xs:
                    continue
                ratios += xs
                ax.scatter(xs, ys, marker=_MARKERS.get(p, "o"), s=22, label=p, zorder=3)
            # the slowest-for-us peer of each row, where it beats us, gets its ratio
            # written beside it (one label per row, so that labels never overlap)
            for yy, (_, v) in zip(y, rows, strict=True):
                if v and min(v.values()) < 1:
                    worst = min(v.values())
                    ax.annotate(
                        f"{worst:.2f}",
                        (worst, yy),
                        xytext=(-5, 0),
                        textcoords="offset points",
                        ha="right",
                        va="center",
                        fontsize=6.5,
                        color="tab:red",
                    )
            ax.legend(
                fontsize=7.5,
                loc="upper left",
                bbox_to_anchor=(1.005, 1.0),
                title="peer",
                title_fontsize=7.5,
            )
            for yy in y:
                ax.axhline(yy, color="0.92", lw=0.5, zorder=0)
        else:
            for yy, (_, v) in zip(y, rows, strict=True):
                if v is None:
                    continue
                ratios.append(v)
                color = "tab:green" if v >= 1 else "tab:red"
                ax.barh(yy, v - 1.0, left=1.0, height=0.6, color=color, zorder=3)
                ax.annotate(
                    f"{v:.2f}" if v < 10 else f"{v:.0f}",
                    (v, yy),
                    xytext=(3 if v >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if v >= 1 else "right",
                    va="center",
                    fontsize=6.5,
                )
        ax.set_xscale("log")
        lo = min([*ratios, 1.0])
        hi = max([*ratios, 1.0])
        ax.set_xlim(min(0.5, lo / 2.0), max(2.0, hi * 2.0))
        ax.axvspan(ax.get_xlim()[0], 1.0, color="tab:red", alpha=0.06, zorder=0)
        ax.axvline(1.0, color="k", lw=1.0, zorder=2)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_yticks(y)
        ax.set_yticklabels([label for label, _ in rows], fontsize=7.5)
        if kind == "bars":
            for tick, (_, v) in zip(ax.get_yticklabels(), rows, strict=True):
                if v is None:
                    tick.set_fontweight("bold")
        ax.tick_params(axis="x", labelsize=7.5)
        ax.set_xlabel(
            "peer time / softmaxkit time (log scale; left of 1: the peer is faster)", fontsize=7.5
        )
        ax.set_title(f"family: {fam}", fontsize=9, loc="left")
    fig.suptitle(
        f"softmaxkit bench on {machine_name(info)}: medians, higher = softmaxkit faster",
        fontsize=10,
    )
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)


def to_json(results: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    return json.dumps(
        {"command": command, "machine": info, "results": results}, indent=1, default=_jsonable
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
