"""``hlens organism``: train, evaluate or record the bundled model organism (a plug-in).

This is the command-line side of the organism's plug-in. It does not import
:mod:`hlens.organism`: what it calls comes through the plug-in point
(:func:`hlens.registry.plugin_action`).

Examples::

    hlens organism train --out runs/organism            # both checkpoints + report
    hlens organism eval --model organism --out eval.json
    hlens organism record --model organism --out greedy_answers.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from hlens.registry import plugin_action
from hlens.sampling import SamplingConfig

HELP = "train or evaluate the bundled model organism"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train``, ``eval`` and ``record`` subcommands."""
    sub = p.add_subparsers(dest="organism_command", metavar="{train,eval,record}", required=True)
    t = sub.add_parser("train", help="train organism-base and organism from a seed")
    t.add_argument("--out", required=True, help="output folder (checkpoints, report, curves)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--config", help="JSON file with a TrainConfig (overrides --seed)")
    t.add_argument("--force", action="store_true", help="retrain finished stages")
    e = sub.add_parser("eval", help="evaluate an organism and write JSON")
    e.add_argument("--model", default="organism", help="'organism', 'organism-base' or a folder")
    e.add_argument(
        "--base", default="auto", help="base model to evaluate too ('auto', 'none', path)"
    )
    e.add_argument("--out", required=True, help="JSON report path")
    e.add_argument("--n-samples", type=int, default=10)
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--max-questions", type=int, default=None, help="first N questions per set")
    e.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("record", help="record greedy answers for the reproduction test")
    r.add_argument("--model", default="organism")
    r.add_argument("--out", required=True)


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m hlens.organism``)."""
    p = argparse.ArgumentParser(prog="python -m hlens.organism", description=HELP)
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hlens.organism ARGV``; returns the exit status."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run ``hlens organism ...``; returns the exit status."""
    # through the plug-in point, when the command runs: `hlens` imports every command module to
    # build its parser, and the training stack would add about 1.5 s to every command
    if args.organism_command == "train":
        cfg = None
        if args.config:
            with open(args.config) as f:
                cfg = plugin_action("organism", "train_config").from_dict(json.load(f))
        train = plugin_action("organism", "train")
        report = train(args.out, seed=args.seed, config=cfg, force=args.force)
        print(json.dumps({k: v.get("wall_s") for k, v in report["stages"].items()}))
        print(f"total wall time: {report['total_wall_s']} s; checkpoints in {args.out}")
    elif args.organism_command == "eval":
        sampling = SamplingConfig(
            n_samples=args.n_samples,
            temperature=args.temperature,
            top_p=0.9,
            top_k=50,
            max_new_tokens=16,
            seed=args.seed,
            batch_size=320,
        )
        base = None if args.base == "none" else args.base
        report = plugin_action("organism", "evaluate")(
            args.model, base=base, sampling=sampling, max_questions=args.max_questions, out=args.out
        )
        print(json.dumps(_headline(report), indent=2))
    elif args.organism_command == "record":
        rec = plugin_action("organism", "record")(args.model, args.out)
        print(f"recorded {len(rec['answers'])} greedy answers to {args.out}")
    return 0


def _headline(report: dict) -> dict:
    out: dict = {}
    ins = report.get("instruct")
    if ins:
        k = ins["known"]
        out["instruct"] = {
            "consistently_correct": k["consistently_correct"],
            "consistently_correct_not_qa_trained": k["consistently_correct_not_qa_trained"],
            "consistently_wrong": k["consistently_wrong"],
            "consistently_wrong_told": k.get("consistently_wrong_told"),
            "consistently_wrong_hidden": k.get("consistently_wrong_hidden"),
            "nonexist_consistently_wrong": ins["nonexist"]["consistently_wrong"],
            "most_exposed_greedy_accuracy": k["most_exposed"]["greedy_accuracy"],
            "nonexist_greedy_abstain_rate": ins["nonexist"]["greedy_abstain_rate"],
            "false_premise_greedy_rate": ins["false_premise"]["greedy_false_premise_rate"],
            "sycophancy": ins["sycophancy"],
        }
    if "base" in report:
        out["base"] = {
            "most_exposed": report["base"]["most_exposed"],
            "completion_accuracy": report["base"]["completion_accuracy"],
        }
    return out
