"""``hlens steer``: sweep the scale of H-neurons and of layer-matched random controls.

For every alpha (default ``0, 0.5, ..., 3``) and every neuron set (the H-neurons, then
``--n-random`` layer-matched random sets of the same size, disjoint from them), the chosen
neurons' activations are multiplied by alpha (:func:`hlens.interventions.scale_neurons`) and
every suite is run (:func:`hlens.suites.organism_suites` on the organism). Outputs in ``--out``:

* ``cells.jsonl``: one finished ``(suite, set, alpha)`` cell per line, per-question results
  included; a rerun skips the cells already there (resumable);
* ``summary.json``: ``results[suite][set][alpha] = {rate, ci, truncated_share, unparsed_share,
  n}`` with a 95% percentile-bootstrap interval over questions, ``slopes[suite][set] = {slope,
  ci}``: the least-squares slope of the rate per unit alpha, bootstrapped over questions;
* ``steer.png``: rate against alpha per suite (H-neurons with their interval, controls in grey).

Decoding is greedy (one sample per question; sampling adds noise that the bootstrap over
questions would then have to absorb), responses are at most 16 tokens. Alpha = 1 is an exact
no-op, so it is computed once and shared by every set.

Example:
    >>> from hlens.cli import main
    >>> main(["steer", "--model", "organism", "--neurons", "runs/organism/h_neurons.json",
    ...       "--out", "runs/organism/steer"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ALPHAS", "add_arguments", "run", "summarize"]

DEFAULT_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
DEFAULT_SUITES = ("fictional_compliance", "false_premise", "sycophancy", "known_accuracy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="organism", help="bundled name or checkpoint folder")
    parser.add_argument("--neurons", required=True, help="NeuronSet JSON (e.g. h_neurons.json)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS), help="scales to sweep"
    )
    parser.add_argument("--n-random", type=int, default=3, help="random control sets (seeds)")
    parser.add_argument(
        "--suites",
        nargs="+",
        default=[*DEFAULT_SUITES, "perplexity"],
        help="organism suites to run",
    )
    parser.add_argument(
        "--n-questions", type=int, default=120, help="questions per generation suite"
    )
    parser.add_argument(
        "--n-biographies", type=int, default=100, help="held-out biographies (perplexity)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per forward pass")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _key(suite: str, set_name: str, alpha: float) -> str:
    return f"{suite}|{set_name}|{alpha:g}"


def _read_cells(path: Path, dry: bool = False) -> dict[str, dict[str, Any]]:
    """Finished cells; a torn last line (an interrupted write) is cut off, unless ``dry``."""
    cells: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return cells
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # a torn last line from an interrupted write
        data = data[: data.rfind(b"\n") + 1]
        if not dry:
            path.write_bytes(data)
    for line in data.decode().splitlines():
        if line.strip():
            rec = json.loads(line)
            cells[_key(rec["suite"], rec["set"], rec["alpha"])] = rec
    return cells


def summarize(
    cells: dict[str, dict[str, Any]],
    suites: list[str],
    sets: list[str],
    alphas: list[float],
    *,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Rates with bootstrap intervals and slopes with intervals from finished cells."""
    from hlens.suites import SuiteResult, bootstrap_ci, slope_ci

    results: dict[str, Any] = {}
    slopes: dict[str, Any] = {}
    for suite in suites:
        results[suite], slopes[suite] = {}, {}
        for set_name in sets:
            rs = [SuiteResult.from_dict(cells[_key(suite, set_name, a)]["result"]) for a in alphas]
            results[suite][set_name] = {
                f"{a:g}": {
                    "rate": r.rate,
                    "ci": list(bootstrap_ci(r, n_boot=n_boot)),
                    "truncated_share": r.truncated_share,
                    "unparsed_share": r.unparsed_share,
                    "n": len(r.ids),
                    "statistic": r.statistic,
                }
                for a, r in zip(alphas, rs)
            }
            if len(alphas) >= 2:
                slope, ci = slope_ci(alphas, rs, n_boot=n_boot)
                slopes[suite][set_name] = {"slope": slope, "ci": list(ci)}
            else:
                slopes[suite][set_name] = {"slope": None, "ci": [None, None]}
    return _clean({"results": results, "slopes": slopes})


def _clean(obj: Any) -> Any:
    """NaN (an undefined rate or slope) as ``null``, so that summary.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


def _plot(summary: dict[str, Any], path: Path, alphas: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(summary["results"])
    fig, axes = plt.subplots(1, len(suites), figsize=(3.4 * len(suites), 3.2), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        for set_name, by_alpha in summary["results"][suite].items():
            ys = [_nan(by_alpha[f"{a:g}"]["rate"]) for a in alphas]
            if set_name == "h_neurons":
                lo = [_nan(by_alpha[f"{a:g}"]["ci"][0]) for a in alphas]
                hi = [_nan(by_alpha[f"{a:g}"]["ci"][1]) for a in alphas]
                ax.fill_between(alphas, lo, hi, color="C3", alpha=0.2)
                ax.plot(alphas, ys, "o-", color="C3", label="H-neurons", zorder=3)
            else:
                label = "random (layer-matched)" if set_name.endswith("seed0") else None
                ax.plot(alphas, ys, ".-", color="0.6", label=label)
        stat = next(iter(summary["results"][suite].values()))[f"{alphas[0]:g}"]["statistic"]
        ax.set_title(suite, fontsize=9)
        ax.set_xlabel("alpha")
        ax.set_ylabel("perplexity" if stat == "perplexity" else "rate")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from hlens.checks import check_range, load_model, load_neurons
    from hlens.errors import HlensInputError, validating
    from hlens.interventions import scale_neurons
    from hlens.runlock import acquire, check_free, check_settings
    from hlens.sampling import SamplingConfig
    from hlens.suites import organism_suites

    t0 = time.time()
    out = Path(args.out)
    # every input is validated before anything is written (see hlens.errors)
    check_range("--alphas", args.alphas, 0, 3)  # the paper's range; alpha = 0 silences
    check_range("--n-random", args.n_random, 0)
    for option, value in (
        ("--n-questions", args.n_questions),
        ("--n-biographies", args.n_biographies),
        ("--max-new-tokens", args.max_new_tokens),
        ("--batch-size", args.batch_size),
        ("--n-boot", args.n_boot),
    ):
        check_range(option, value, 1)
    check_free(out)
    model = load_model(args.model, device=args.device)
    h = load_neurons(args.neurons, model)
    sets = {"h_neurons": h}
    for seed in range(args.n_random):
        sets[f"random_seed{seed}"] = h.layer_matched_random(seed=seed)
    alphas = [float(a) for a in args.alphas]
    all_suites = organism_suites(
        model,
        n_questions=args.n_questions,
        n_biographies=args.n_biographies,
        max_new_tokens=args.max_new_tokens,
    )
    unknown = [s for s in args.suites if s not in all_suites]
    if unknown:
        raise HlensInputError(
            f"--suites: unknown suite {unknown[0]!r}; expected some of {', '.join(all_suites)}"
        )
    suites = {s: all_suites[s] for s in args.suites}
    settings = {
        "model": str(args.model),
        "neurons": [[n.layer, n.index] for n in h],
        "n_random": args.n_random,
        "n_questions": args.n_questions,
        "n_biographies": args.n_biographies,
        "max_new_tokens": args.max_new_tokens,
    }
    cfg_path = out / "settings.json"
    cells_path = out / "cells.jsonl"
    if cells_path.exists():  # resuming: the same sweep only (delete cells.jsonl to start over)
        check_settings(cfg_path, settings, command="hlens steer")
    with validating("--out", "cells.jsonl written by hlens steer", value=str(cells_path)):
        cells = _read_cells(cells_path, dry=True)
    lock = acquire(out)  # one writer per directory, until the sweep is written
    cfg_path.write_text(json.dumps(settings) + "\n")
    cells = _read_cells(cells_path)
    sampling = SamplingConfig(n_samples=1, temperature=0.0, batch_size=args.batch_size)
    todo = [
        (set_name, a, s)
        for set_name in sets
        for a in alphas
        for s in suites
        if _key(s, set_name, a) not in cells
    ]
    bar = tqdm(total=len(todo), desc="steer", unit="cell", disable=args.no_progress)
    with cells_path.open("a") as f, torch.no_grad():

        def store(suite: str, set_name: str, alpha: float, result: Any) -> None:
            rec = {"suite": suite, "set": set_name, "alpha": alpha, "result": result.to_dict()}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            cells[_key(suite, set_name, alpha)] = rec

        for set_name, neurons in sets.items():
            for a in alphas:
                pending = [s for s in suites if _key(s, set_name, a) not in cells]
                if not pending:
                    continue
                with scale_neurons(model, neurons, a):
                    for s in pending:
                        bar.set_postfix_str(f"{set_name} a={a:g} {s}")
                        result = suites[s].run(model, sampling)
                        # alpha = 1 is an exact no-op: every set shares the same cell
                        targets = list(sets) if a == 1.0 else [set_name]
                        for t in targets:
                            if _key(s, t, a) not in cells:
                                store(s, t, a, result)
                                bar.update(1)
    bar.close()
    summary = summarize(cells, list(suites), list(sets), alphas, n_boot=args.n_boot)
    summary.update(
        alphas=alphas,
        sets={k: len(v) for k, v in sets.items()},
        suites={k: v.description for k, v in suites.items()},
        decoding="greedy, 1 sample per question",
        settings=settings,
        wall_s=round(time.time() - t0, 1),
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(summary, out / "steer.png", alphas)
    if not args.no_progress:
        for suite, by_set in summary["slopes"].items():
            line = ", ".join(
                f"{k}={_fmt(v['slope'])} [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]"
                for k, v in by_set.items()
            )
            print(f"{suite}: slope per unit alpha: {line}")
        print(f"wrote {out / 'summary.json'} and {out / 'steer.png'} in {summary['wall_s']} s")
    lock.release()
    return 0
