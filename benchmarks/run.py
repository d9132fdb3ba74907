"""Run every benchmark once and write ``results.json`` and ``results.md`` with the machine.

    python -m benchmarks.run            # full sizes (minutes)
    python -m benchmarks.run --quick    # small sizes: the CI smoke run (no thresholds checked)
    python -m benchmarks.run --only cett probe

Each benchmark module defines ``run(quick: bool) -> dict`` and reports ratios measured within one
run (hlens vs the reference on the same machine at the same time), never absolute timings to
compare across machines.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks._common import machine

BENCHMARKS = {
    "cett": "benchmarks.bench_cett",
    "probe": "benchmarks.bench_probe",
    "generation": "benchmarks.bench_generation",
    "attribution": "benchmarks.bench_attribution",
    "sampling": "benchmarks.bench_sampling",
    "probe_real": "benchmarks.bench_probe_real",
    "extraction_real": "benchmarks.bench_extraction_real",
}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif not isinstance(d, list):
        out[prefix] = d
    return out


def to_markdown(results: dict[str, Any]) -> str:
    lines = ["# hlens benchmarks", "", f"Machine: `{json.dumps(results['machine'])}`", ""]
    for name, res in results["benchmarks"].items():
        lines += [f"## {name}", "", "| metric | value |", "|---|---|"]
        for k, v in _flatten(res).items():
            if isinstance(v, float):
                v = f"{v:.4g}"
            lines.append(f"| {k} | {v} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run hlens benchmarks.")
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    p.add_argument("--out", default="benchmarks/results", help="output directory")
    args = p.parse_args(argv)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "benchmarks": {}}
    failed = []
    for name in args.only or BENCHMARKS:
        try:
            mod = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError:
            results["benchmarks"][name] = {"skipped": "module not present"}
            continue
        t0 = time.perf_counter()
        try:
            res = mod.run(args.quick)
        except Exception as e:  # record and go on: one broken benchmark must not hide the others
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        results["benchmarks"][name] = res
        print(f"[{name}] done in {res['wall_s']} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "results_quick" if args.quick else "results"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"{stem}.md").write_text(to_markdown(results))
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
