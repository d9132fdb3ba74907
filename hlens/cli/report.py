"""``hlens report``: one offline HTML page for a run directory.

Example:
    >>> from hlens.cli import main
    >>> main(["report", "runs/organism"])  # doctest: +SKIP
    wrote runs/organism/report.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hlens.errors import HlensInputError
from hlens.report import write_report

HELP = "one offline HTML page for a run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hlens report``."""
    parser.add_argument("run_dir", help="a run directory (hlens find --out)")
    parser.add_argument("--out", default=None, help="output file (default RUN_DIR/report.html)")
    parser.add_argument("--model", default=None, help="model for token views (default: the run's)")
    parser.add_argument("--no-views", action="store_true", help="skip views that need the model")
    parser.add_argument("--n-examples", type=int, default=4, help="responses in the token views")
    parser.add_argument("--device", default=None, help="torch device for the token views")


def run(args: argparse.Namespace) -> int:
    """Run ``hlens report``."""
    run_dir = Path(args.run_dir)
    known = ("summary.json", "steer/summary.json", "explain/cards.json", "origin/summary.json")
    if not run_dir.is_dir() or not any((run_dir / k).is_file() for k in known):
        what = "is not a directory" if not run_dir.is_dir() else f"holds none of {', '.join(known)}"
        raise HlensInputError(
            f"run directory {str(run_dir)!r} {what}; expected a directory written by "
            "`hlens find --out DIR` (run that first)"
        )
    for k in known:
        try:
            if (run_dir / k).is_file():
                json.loads((run_dir / k).read_text())
        except ValueError as e:
            raise HlensInputError(
                f"{str(run_dir / k)!r} is not valid JSON ({e}); it was damaged or not written by "
                "hlens: rerun the command that writes it"
            ) from e
    path = write_report(
        args.run_dir,
        args.out,
        model=args.model,
        views=not args.no_views,
        n_examples=args.n_examples,
        device=args.device,
    )
    print(f"wrote {path}")
    return 0
