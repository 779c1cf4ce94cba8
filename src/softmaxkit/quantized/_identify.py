"""``softmaxkit.quantized.identify``: which runtime and quantization made these numbers?

Searches every runtime of :data:`softmaxkit.quantized.RUNTIMES` over the
parameters the caller did not give and reports those that reproduce the
expected output bit for bit, or the closest.  Runtimes with the same arithmetic
are computed once (``tflite-reference`` = ``cmsis-nn`` = ``tflite-micro``;
``xnnpack`` = ``torch-qnnpack``) and reported under each name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .._core.typing import ArrayLike, NDArray
from ._ops import _as_quantized, _rows, softmax
from ._params import output_quantization

__all__ = ["Match", "identify"]

# computed runtime -> the names it stands for
_GROUPS = {
    "tflite-reference": ("tflite-reference", "cmsis-nn", "tflite-micro"),
    "tflite-x86": ("tflite-x86",),
    "tflite-arm64": ("tflite-arm64",),
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime",),
    "xnnpack": ("xnnpack", "torch-qnnpack"),
    "float-route": ("float-route",),
}
_TFLITE = ("tflite-reference", "tflite-x86", "tflite-arm64")
# input scales common in exported models, tried first (reported in preference)
_COMMON_SCALES = (
    1 / 255, 1 / 256, 1 / 128, 1 / 127, 2 / 255, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2,
    1.0, 0.1, 0.05, 0.02, 0.01, 1 / 512, 1 / 1024,
)  # fmt: skip


@dataclass(frozen=True)
class Match:
    """One (runtime, parameters) candidate and how well it reproduces ``expected``.

    ``mismatches`` is the number of differing entries (0: bit-exact) and
    ``max_abs_diff`` the largest difference in quantized steps.  ``scale_range``
    is the interval of scanned input scales giving the same verdict (the input
    scale is only known to that precision), ``rows`` the row layout used.
    """

    runtime: str
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    mismatches: int
    max_abs_diff: int
    rounding: str | None = None
    scale_range: tuple[float, float] | None = None
    rows: int | None = None

    def __str__(self) -> str:
        verdict = (
            "bit-exact"
            if self.mismatches == 0
            else f"{self.mismatches} entries differ (max {self.max_abs_diff} steps)"
        )
        s = f"{self.runtime}: input_scale={_fmt_scale(self.input_scale)}"
        if self.runtime in ("torch", "float-route"):
            s += f", input_zero_point={self.input_zero_point}"
        s += (
            f", output_scale={_fmt_scale(self.output_scale)}, "
            f"output_zero_point={self.output_zero_point}"
        )
        if self.rounding is not None:
            s += f", rounding={self.rounding}"
        if self.rows is not None:
            s += f", as {self.rows} row(s)"
        if self.scale_range is not None and self.scale_range[0] != self.scale_range[1]:
            lo, hi = self.scale_range
            s += f" (any input scale in [{lo:.6g}, {hi:.6g}] scanned gives the same)"
        return f"{s}: {verdict}"


def _fmt_scale(s: float) -> str:
    for k in (255, 256, 128, 127, 512, 1024, 64, 32, 16, 8, 4, 2, 1):
        if float(np.float32(s)) == float(np.float32(1 / k)):
            return f"1/{k}"
    return f"{s:.7g}"


def _estimate_scale(x2: NDArray[Any], y2: NDArray[Any], zp: int, os_: float) -> float | None:
    """Least-squares ``s`` in ``log p_i - log p_max = s (x_i - x_max)`` over usable entries."""
    num = den = 0.0
    for xr, yr in zip(x2.astype(np.float64), y2.astype(np.float64), strict=True):
        p = (yr - zp) * os_
        k = int(np.argmax(xr))
        ok = (p >= 4 * os_) & (xr < xr[k])
        if p[k] <= 0 or not ok.any():
            continue
        dx = xr[ok] - xr[k]
        dl = np.log(p[ok]) - math.log(p[k])
        num += float(dx @ dl)
        den += float(dx @ dx)
    if den == 0 or num <= 0:
        return None
    return num / den


def _out_quants(
    runtime: str, dtype: np.dtype[Any], output_scale: float | None, output_zero_point: int | None
) -> list[tuple[float, int]]:
    if runtime in _TFLITE:
        return [output_quantization("softmax", dtype)]
    if runtime == "xnnpack":
        return [(1 / 256, 0)]
    i8 = dtype == np.int8
    scales = [output_scale] if output_scale is not None else [1 / 256, 1 / 255]
    zps = [output_zero_point] if output_zero_point is not None else ([-128] if i8 else [0])
    return [(s, z) for s in scales for z in zps]


def _layouts(
    x: NDArray[Any], y: NDArray[Any], axis: int, try_layouts: bool
) -> list[tuple[int | None, NDArray[Any], NDArray[Any]]]:
    ax = axis % x.ndim
    xm = np.ascontiguousarray(np.moveaxis(x, ax, -1))
    ym = np.ascontiguousarray(np.moveaxis(y, ax, -1))
    n = xm.shape[-1]
    out: list[tuple[int | None, NDArray[Any], NDArray[Any]]] = [
        (None, xm.reshape(-1, n), ym.reshape(-1, n))
    ]
    if try_layouts and x.ndim == 1 and n <= 128:  # a short flat vector: maybe r rows
        for r in range(2, min(n, 64) + 1):
            if n % r == 0:
                out.append((r, xm.reshape(r, -1), ym.reshape(r, -1)))
    return out


def identify(
    x_q: ArrayLike,
    expected_q: ArrayLike,
    /,
    *,
    input_scale: float | None = None,
    input_zero_point: int | None = None,
    output_scale: float | None = None,
    output_zero_point: int | None = None,
    axis: int = -1,
    max_results: int = 10,
) -> list[Match]:
    """Which runtime and parameters turn ``x_q`` into ``expected_q``, bit for bit?

    Runs every runtime of :data:`RUNTIMES` over the parameters not given: input
    scales common in exported models (1/255, 1/256, 1/128, powers of two, 2a/255
    for float ranges [-a, a]), the scale fitted to the data (least squares on
    ``log p_i - log p_max = s (x_i - x_max)``) and a geometric grid refined around
    the best points; the output quantizations each runtime allows (TFLite's
    fixed ones; 1/256 and 1/255 with zero point -128 or 0 elsewhere); both
    roundings of the float route; input zero point 0 unless given (it only
    matters to ``"torch"`` and ``"float-route"``).  A 1-D input of at most 128
    values that no runtime explains as one row is also tried as ``r`` equal rows.

    Parameters
    ----------
    x_q, expected_q : array_like of int8 or uint8, same shape
    input_scale, input_zero_point, output_scale, output_zero_point : optional
        Fix what is known.
    axis : int, default -1
    max_results : int, default 10

    Returns
    -------
    list of Match
        The bit-exact matches (``mismatches == 0``), a runtime's preferred
        (common) input scale first with the range of scanned scales that match;
        or, when none matches, the closest candidates by number of differing
        entries, then largest difference.  Runtimes with one arithmetic are
        listed under each name (``tflite-reference``, ``cmsis-nn``,
        ``tflite-micro``; ``xnnpack``, ``torch-qnnpack``).

    Notes
    -----
    About 0.2-0.5 s for rows of up to 1000 values (thousands of kernel calls on
    one thread).  Bit-exact agreement with several runtimes is common: they
    differ only on a small fraction of rows.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.quantized import identify
    >>> x = np.array([[101, 49, 6, -34, -75], [-79, -38, 120, -55, 115]], dtype=np.int8)
    >>> y = np.array([[-57, -70, -79, -86, -92], [-94, -88, -54, -91, -56]], dtype=np.int8)
    >>> print(identify(x, y)[0])  # doctest: +ELLIPSIS
    tflite-reference: input_scale=1/255, output_scale=1/256, output_zero_point=-128 ...: bit-exact
    """
    x = _as_quantized(x_q)
    y = np.asarray(expected_q)
    if x.dtype == np.int16:
        raise ValueError("identify searches 8-bit runtimes; x_q must be int8 or uint8")
    if y.shape != x.shape:
        raise ValueError(f"expected_q has shape {y.shape}; x_q has shape {x.shape}")
    if x.ndim == 0 or x.size == 0:
        raise ValueError("x_q must have at least one value and one dimension")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"expected_q must hold integers; got dtype {y.dtype}")
    if not isinstance(max_results, int) or max_results < 1:
        raise ValueError(f"max_results must be an int >= 1; got {max_results!r}")
    _rows(x, axis)  # validates axis
    axis = int(axis)
    info = np.iinfo(x.dtype)
    if y.min() < info.min or y.max() > info.max:
        raise ValueError(
            f"expected_q has values outside the {x.dtype} range: the runtimes searched "
            f"return the input dtype"
        )
    y = y.astype(x.dtype)
    import numba

    nthreads = numba.get_num_threads()
    numba.set_num_threads(1)  # thousands of tiny calls: no thread hand-offs
    try:
        return _search(x, y, axis, input_scale, input_zero_point, output_scale,
                       output_zero_point, max_results)  # fmt: skip
    finally:
        numba.set_num_threads(nthreads)


def _search(
    x: NDArray[Any],
    y: NDArray[Any],
    axis: int,
    input_scale: float | None,
    input_zero_point: int | None,
    output_scale: float | None,
    output_zero_point: int | None,
    max_results: int,
) -> list[Match]:
    layouts = _layouts(x, y, axis, True)
    zps = [input_zero_point] if input_zero_point is not None else [0]
    found: dict[tuple[Any, ...], Match] = {}
    near: list[Match] = []
    for rows, x2, y2 in layouts:
        scales = _scales(x2, y2, input_scale, output_scale, output_zero_point)
        for rt in _GROUPS:
            if rt == "xnnpack" and x.dtype != np.uint8:
                continue
            roundings = ("half-even", "half-away") if rt == "float-route" else (None,)
            for os_, ozp in _out_quants(rt, x.dtype, output_scale, output_zero_point):
                for rnd in roundings:
                    for zp in zps if rt in ("torch", "float-route") else [0]:
                        _scan(rt, x2, y2, scales, zp, os_, ozp, rnd, rows, found, near)
        if found:  # the layout given (or a first layout that works) explains it
            break
    exact = list(found.values())
    if exact:
        exact.sort(key=lambda m: (m.rows is not None, m.rows or 0, _rank(m)))
        out = []
        for m in exact:
            for name in _GROUPS[m.runtime]:
                out.append(_rename(m, name))
        return out[:max_results]
    near.sort(key=lambda m: (m.mismatches, m.max_abs_diff, m.rows or 0))
    out, seen = [], set()
    for m in near:
        key = (m.runtime, m.rows, m.output_scale, m.output_zero_point, m.rounding)
        if key in seen:
            continue
        seen.add(key)
        out.append(m)
        if len(out) >= max_results:
            break
    return out


def _rank(m: Match) -> int:
    return list(_GROUPS).index(m.runtime)


def _rename(m: Match, name: str) -> Match:
    return replace(m, runtime=name)


def _scales(
    x2: NDArray[Any],
    y2: NDArray[Any],
    input_scale: float | None,
    output_scale: float | None,
    output_zero_point: int | None,
) -> list[float]:
    if input_scale is not None:
        return [float(input_scale)]
    cands = list(_COMMON_SCALES)
    i8 = x2.dtype == np.int8
    zp = output_zero_point if output_zero_point is not None else (-128 if i8 else 0)
    est = _estimate_scale(x2, y2, zp, output_scale or 1 / 256)
    if est is not None and est > 0:
        cands += [est * math.exp(t) for t in np.linspace(-0.25, 0.25, 101)]
    # float-range conventions: the int8 range covers [-a, a], scale 2a/255
    cands += [2 * a / 255 for a in (2, 4, 6, 8, 10, 16, 20, 32)]
    return cands


def _eval(
    rt: str,
    x2: NDArray[Any],
    y2: NDArray[Any],
    s: float,
    zp: int,
    os_: float,
    ozp: int,
    rnd: str | None,
) -> tuple[int, int] | None:
    kw: dict[str, Any] = {"runtime": rt}
    if rt not in _TFLITE:
        kw |= {"input_zero_point": zp, "output_scale": os_, "output_zero_point": ozp}
    if rnd is not None:
        kw["rounding"] = rnd
    try:
        got = softmax(x2, s, **kw)
    except ValueError:
        return None  # e.g. TFLite refuses scales <= 2^-26
    d = np.abs(got.astype(np.int32) - y2.astype(np.int32))
    return int(np.count_nonzero(d)), int(d.max())


# a coarse geometric grid of input scales (2^-12 .. 2^3, 8 per octave), refined
# around its best points: the input scale is a continuous unknown
_COARSE = tuple(2.0 ** (k / 8) for k in range(-96, 25))
_FINE = np.exp(np.linspace(-0.05, 0.05, 41)).tolist()


def _scan(
    rt: str,
    x2: NDArray[Any],
    y2: NDArray[Any],
    scales: list[float],
    zp: int,
    os_: float,
    ozp: int,
    rnd: str | None,
    rows: int | None,
    found: dict[tuple[Any, ...], Match],
    near: list[Match],
) -> None:
    res: dict[float, tuple[int, int]] = {}

    def ev(s: float) -> None:
        s = float(np.float32(s))
        if s not in res:
            r = _eval(rt, x2, y2, s, zp, os_, ozp, rnd)
            if r is not None:
                res[s] = r

    for s in scales:
        ev(s)
    if len(scales) > 1:
        for s in _COARSE:
            ev(s)
        best = sorted(res, key=lambda s: res[s])[:3]
        for b in best:
            for f in _FINE:
                ev(b * f)
    if not res:
        return
    hits = [s for s in res if res[s][0] == 0]
    if hits:
        first = next(
            (float(np.float32(s)) for s in scales if res.get(float(np.float32(s)), (1,))[0] == 0),
            None,
        )
        key = (rt, rows, os_, ozp, rnd, zp)
        found[key] = Match(
            rt, first if first is not None else min(hits), zp, os_, ozp, 0, 0, rnd,
            (min(hits), max(hits)), rows,
        )  # fmt: skip
        return
    s = min(res, key=lambda s: res[s])
    near.append(Match(rt, s, zp, os_, ozp, res[s][0], res[s][1], rnd, None, rows))
