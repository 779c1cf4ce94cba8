"""Time the first call of every public op, cold (empty Numba cache) and warm.

Each case of ``softmaxkit warmup`` (``softmaxkit.cli.warmup.CASES``: one op, dtype
and code path on a tiny input) runs twice, each time in a new Python process:

* **cold**: ``NUMBA_CACHE_DIR`` is a new empty directory, so every kernel the call
  needs is missing (the kernels shared with other ops too: each case starts from
  nothing).  By default the call takes the cold-start fallback (the float64
  reference formulas) while a background process compiles the kernels, which the
  tool then waits for ("background compile"); with ``--foreground`` the call
  compiles them itself;
* **warm**: a new process with the same directory, so the kernels load from it.

The time is that of the first call after ``import softmaxkit`` (it includes importing
Numba and the kernel modules, which ``import softmaxkit`` defers).  ``top`` counts the
outermost kernels compiled, ``sigs`` every compiled signature (helpers included), from
Numba's ``"numba:compile"`` events.  ``--demo`` also times ``softmaxkit demo`` cold and
warm (whole process).  Usage::

    python tools/first_call.py                  # every case, markdown table on stdout
    python tools/first_call.py --family dense --demo --json first_call.json

Run it from a checkout (it puts ``src`` on ``PYTHONPATH``) or with softmaxkit installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import softmaxkit
t_import = time.perf_counter() - t0
from softmaxkit.cli.warmup import cases
rows = cases([sys.argv[1]])
family, op, dt, call = rows[int(sys.argv[2])]
numba_loaded = "numba" in sys.modules
t0 = time.perf_counter()
call()
t_first = time.perf_counter() - t0
t0 = time.perf_counter()
call()
t_second = time.perf_counter() - t0
from softmaxkit._kernels import _hooks, _background
from softmaxkit._core import coldstart
fell = coldstart.fell_back()
t0 = time.perf_counter()
_background.wait()  # the warm process finds the kernels this call needed
t_bg = time.perf_counter() - t0
print(json.dumps({"import_s": t_import, "first_s": t_first, "second_s": t_second,
                  "top": _hooks.COMPILED["top"], "sigs": _hooks.COMPILED["all"],
                  "numba_in_first": not numba_loaded, "fell_back": fell,
                  "background_s": t_bg}))
"""


_MODE = {"foreground": False}


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    env.pop("SOFTMAXKIT_COMPILE", None)
    if _MODE["foreground"]:
        env["SOFTMAXKIT_COMPILE"] = "foreground"
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    if os.path.isdir(os.path.join(src, "softmaxkit")):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _child(family: str, index: int, cache: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, family, str(index)],
        env=_env(cache),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


_DEMO = r"""
import io, json, sys, time
from softmaxkit.cli.core import run_demo
run_demo(io.StringIO())
t0 = time.perf_counter()
from softmaxkit._kernels import _background
_background.wait()  # not part of the demo's time: the next run finds the kernels
print(json.dumps({"wait_s": time.perf_counter() - t0}))
"""


def _demo(cache: str) -> float:
    """Wall time of a new process running the demo (the background compile it
    started is waited for afterwards and not counted)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", _DEMO],
        env=_env(cache),
        capture_output=True,
        text=True,
        check=True,
    )
    wait = json.loads(r.stdout.strip().splitlines()[-1])["wait_s"]
    return time.perf_counter() - t0 - wait


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", action="append", help="only this family (repeatable)")
    ap.add_argument("--case", help="only the cases whose op contains this text")
    ap.add_argument("--demo", action="store_true", help="also time softmaxkit demo")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument(
        "--foreground",
        action="store_true",
        help="SOFTMAXKIT_COMPILE=foreground: time the compile itself (no cold-start fallback)",
    )
    args = ap.parse_args(argv)
    _MODE["foreground"] = args.foreground

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "src"))
    from softmaxkit.cli.warmup import FAMILIES, cases

    results = []
    for family in args.family or FAMILIES:
        for i, (_, op, dt, _call) in enumerate(cases([family])):
            if args.case and args.case not in op:
                continue
            cache = tempfile.mkdtemp(prefix="softmaxkit-first-call-")
            try:
                cold = _child(family, i, cache)
                warm = _child(family, i, cache)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            row = {"family": family, "op": op, "dtype": dt, "cold": cold, "warm": warm}
            results.append(row)
            print(
                f"{family:9} {op:30} {dt:8} cold {cold['first_s']:6.2f} s "
                f"({cold['top']} kernels, {cold['sigs']} signatures, "
                f"{'reference' if cold.get('fell_back') else 'kernel'})  "
                f"warm {warm['first_s']:5.2f} s",
                file=sys.stderr,
                flush=True,
            )
    demo = None
    if args.demo:
        cache = tempfile.mkdtemp(prefix="softmaxkit-first-call-")
        try:
            demo = {"cold_s": _demo(cache), "warm_s": _demo(cache)}
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    print(
        "| op | dtype | cold first call (s) | path | kernels / signatures compiled "
        "| background compile (s) | warm first call, new process (s) |"
    )
    print("|---|---|---:|---|---:|---:|---:|")
    for r in results:
        c, w = r["cold"], r["warm"]
        path = "reference" if c.get("fell_back") else "kernel"
        print(
            f"| `{r['op']}` | {r['dtype']} | {c['first_s']:.2f} | {path} "
            f"| {c['top']} / {c['sigs']} | {c.get('background_s', 0.0):.1f} "
            f"| {w['first_s']:.2f} |"
        )
    if demo is not None:
        print(
            f"\n`softmaxkit demo` (whole process): cold {demo['cold_s']:.1f} s, "
            f"warm {demo['warm_s']:.1f} s"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cases": results, "demo": demo}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
