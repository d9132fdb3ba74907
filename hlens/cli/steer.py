"""``hlens steer``: sweep the scale of H-neurons and of layer-matched random controls.

A thin command over :func:`hlens.steer_sweep` (see :mod:`hlens.sweep` for what it runs and
writes). Suites come from :mod:`hlens.suite_registry`: by default the organism's own on the
organism, and TruthfulQA, forbidden questions and sycophancy (plus the fluency suites) on real
models; ``--suite-file NAME=PATH`` supplies or replaces a suite's data file.

Example:
    >>> from hlens.cli import main
    >>> main(["steer", "--model", "organism", "--neurons", "runs/organism/h_neurons.json",
    ...       "--out", "runs/organism/steer"])  # doctest: +SKIP
    >>> main(["steer", "--model", "smollm2-135m-instruct", "--neurons", "runs/smol/h_neurons.json",
    ...       "--suites", "falseqa,forbidden,sycophancy", "--suite-file", "falseqa=test.csv",
    ...       "--out", "runs/smol/steer"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hlens.suite_registry import get_spec, parse_suite_files, suite_names
from hlens.sweep import SteerConfig, steer_sweep

HELP = "scale neurons while generating; sweep alpha against controls"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="organism", help="bundled name or checkpoint folder")
    parser.add_argument("--neurons", required=True, help="NeuronSet JSON (e.g. h_neurons.json)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=None,
        help="scales to sweep (default: 0 0.5 1 1.5 2 3 on a real model; 0 0.5 ... 3 on the "
        "organism)",
    )
    parser.add_argument(
        "--random-seeds",
        "--n-random",
        dest="n_random",
        type=int,
        default=3,
        help="layer-matched random control sets (seeds)",
    )
    parser.add_argument(
        "--suites",
        nargs="+",
        default=None,
        help="suites, comma- or space-separated (default: the organism's own on the organism; "
        "truthfulqa, forbidden, sycophancy, triviaqa_known, fluency_ppl on real models); known: "
        + ", ".join(suite_names()),
    )
    parser.add_argument(
        "--suite-file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="the data file of a suite (required for falseqa and simpleqa; repeatable)",
    )
    parser.add_argument(
        "--n",
        "--n-questions",
        dest="n_questions",
        type=int,
        default=None,
        help="questions per suite (default: 32 on a real model, 120 on the organism)",
    )
    parser.add_argument(
        "--n-biographies", type=int, default=100, help="held-out biographies (organism perplexity)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="response length (default: each suite's own; 16 on the organism)",
    )
    parser.add_argument("--prompt", default=None, help="prompt format for real models")
    parser.add_argument("--batch-size", type=int, default=128, help="sequences per forward pass")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def config_from_args(args: argparse.Namespace) -> SteerConfig:
    """The :class:`~hlens.sweep.SteerConfig` of parsed ``hlens steer`` arguments.

    Raises:
        HlensInputError: a malformed ``--suite-file`` or an unknown suite name.
    """
    suites = None
    if args.suites:
        suites = [s.strip() for item in args.suites for s in item.split(",") if s.strip()]
        for name in suites:
            get_spec(name)
    return SteerConfig(
        model=str(args.model),
        neurons=str(args.neurons),
        suites=suites,
        suite_files=parse_suite_files(args.suite_file),
        n=args.n_questions,
        alphas=None if args.alphas is None else [float(a) for a in args.alphas],
        random_seeds=args.n_random,
        n_biographies=args.n_biographies,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        n_boot=args.n_boot,
        prompt=args.prompt,
        device=args.device,
        progress=not args.no_progress,
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.out)
    result = steer_sweep(cfg, out)
    if not args.no_progress:
        for suite, by_set in result.slopes.items():
            line = ", ".join(
                f"{k}={_fmt(v['slope'])} [{_fmt(v['ci'][0])}, {_fmt(v['ci'][1])}]"
                for k, v in by_set.items()
            )
            print(f"{suite}: slope per unit alpha: {line}")
        if result.fluent_alphas is not None:
            kept = ", ".join(f"{a:g}" for a in result.fluent_alphas) or "none"
            print(f"alphas that keep the model fluent with the H-neurons scaled: {kept}")
        print(result.verdict)
        print(f"wrote {out / 'summary.json'} and {out / 'steer.png'} in {result.wall_s} s")
    return 0
