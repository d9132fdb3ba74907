"""``hlens explain``: report cards for the top H-neurons (vocabulary, top examples, ablation cost,
drivers, correlations with the one-number controls) and the AtP-vs-exact check.

Example:
    >>> from hlens.cli import main
    >>> main(["explain", "--model", "organism", "--neurons", "runs/organism/h_neurons.json",
    ...       "--out", "runs/organism/explain"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse

from hlens.errors import validating
from hlens.explain import read_cards
from hlens.explain_run import ExplainConfig, explain

HELP = "neuron report cards: vocabulary, top examples, ablation, drivers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hlens explain``."""
    parser.add_argument("--model", required=True, help="bundled name, checkpoint dir or hub id")
    parser.add_argument("--neurons", required=True, help="NeuronSet JSON (from hlens find)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--max-neurons", type=int, default=20, help="cards for the top N neurons")
    parser.add_argument(
        "--examples",
        default=None,
        help="JSONL of labelled Examples (default: examples.jsonl of the run beside --neurons)",
    )
    parser.add_argument("--n-questions", type=int, default=200, help="organism questions per set")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=320,
        help="real models: labelled examples read for the cards, half from each class",
    )
    parser.add_argument("--k", type=int, default=10, help="tokens/examples/drivers per card")
    parser.add_argument(
        "--agreement-pairs",
        type=int,
        default=None,
        help="compare AtP with exact patching on this many prompt pairs (default: 8 on a real "
        "model with a run's examples, 0 on the organism; 0 skips it)",
    )
    parser.add_argument(
        "--agreement-neurons",
        type=int,
        default=2000,
        help="real models: random neurons in the AtP check, besides every H-neuron",
    )
    parser.add_argument("--no-ablation", action="store_true", help="skip the ablation part")
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    """Run ``hlens explain``; writes ``cards.json``, ``cards_table.json``, ``summary.json``."""
    with validating():
        cfg = ExplainConfig(
            model=args.model,
            neurons=args.neurons,
            max_neurons=args.max_neurons,
            examples=args.examples,
            n_questions=args.n_questions,
            max_examples=args.max_examples,
            k=args.k,
            agreement_pairs=args.agreement_pairs,
            agreement_neurons=args.agreement_neurons,
            ablation=not args.no_ablation,
            device=args.device,
        )
    result = explain(cfg, args.out)
    cards = read_cards(args.out)
    for card in cards[:5]:
        print(card.summary())
    a = result.atp_vs_exact
    if a is not None:
        print(
            f"AtP vs exact patching ({a.get('n_pairs')} pairs, {a.get('n', '?')} units): "
            f"Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, "
            f"top-{a['top']} overlap {a['top_overlap']:.2f}"
        )
    if result.atp_vs_exact_skipped is not None:
        print(f"AtP vs exact patching skipped: {result.atp_vs_exact_skipped}")
    print(f"wrote {len(cards)} report cards to {args.out} in {result.seconds} s")
    return 0
