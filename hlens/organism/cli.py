"""Command line of the organism: ``train``, ``eval`` and ``record``.

Examples::

    python -m hlens.organism train --out runs/organism            # both checkpoints + report
    python -m hlens.organism eval --model organism --out eval.json
    python -m hlens.organism record --model organism --out greedy_answers.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed so ``hlens organism ...`` can reuse it)."""
    p = argparse.ArgumentParser(prog="python -m hlens.organism", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the organism command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from hlens.organism.train import TrainConfig, train_organism

        cfg = None
        if args.config:
            with open(args.config) as f:
                cfg = TrainConfig.from_dict(json.load(f))
        report = train_organism(args.out, seed=args.seed, config=cfg, force=args.force)
        print(json.dumps({k: v.get("wall_s") for k, v in report["stages"].items()}))
        print(f"total wall time: {report['total_wall_s']} s; checkpoints in {args.out}")
    elif args.command == "eval":
        from hlens.organism.evaluate import evaluate_organism
        from hlens.sampling import SamplingConfig

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
        report = evaluate_organism(
            args.model, base=base, sampling=sampling, max_questions=args.max_questions, out=args.out
        )
        print(json.dumps(_headline(report), indent=2))
    elif args.command == "record":
        from hlens.organism.evaluate import record_greedy_answers

        rec = record_greedy_answers(args.model, args.out)
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
