"""``hlens origin``: probe transfer to the base model and parameter inertia.

Example:
    >>> from hlens.cli import main
    >>> main(["origin", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hlens.origin import OriginConfig, origin

HELP = "probe transfer to the base model and parameter inertia"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="the pre-trained model (name, dir or hub id)")
    p.add_argument("--tuned", required=True, help="its instruction-tuned child")
    p.add_argument("--run", required=True, help="the `hlens find` run of the tuned model")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    cfg = OriginConfig(
        base=args.base,
        tuned=args.tuned,
        run=args.run,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    s = origin(cfg, args.out)
    t, i = s.transfer, s.inertia
    print(
        f"transfer AUROC {t['auroc']:.3f} (95% CI {t['ci'][0]:.3f}-{t['ci'][1]:.3f}); "
        f"base-trained {t['base_trained']['auroc']:.3f}; random {t['random_neurons']['auroc']:.3f}"
    )
    if "mean_rank" in i:
        print(
            f"mean H-neuron inertia rank {i['mean_rank']:.3f} (95% CI {i['ci'][0]:.3f}-"
            f"{i['ci'][1]:.3f}), p = {i['p_value']:.4f} vs random sets"
        )
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0
