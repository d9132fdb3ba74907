"""The ``hlens`` command line.

Each subcommand lives in the module of its capability and registers itself here through
:data:`COMMANDS`: a name, a one-line help, a function that adds its arguments and one that runs it.

Example:
    >>> main(["--version"])  # doctest: +SKIP
    hlens 0.1.0
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from hlens._version import __version__

__all__ = ["COMMANDS", "main"]

#: subcommand -> (module, help). The module defines ``add_arguments(parser)`` and ``run(args)``.
COMMANDS: dict[str, tuple[str, str]] = {
    "find": ("hlens.find", "identify H-neurons: sample, judge, balance, CETT, sparse probe"),
    "features": ("hlens.features", "CETT features for examples (data-parallel under torchrun)"),
    "steer": ("hlens.steer_cli", "scale neurons while generating; sweep alpha against controls"),
    "explain": (
        "hlens.explain",
        "neuron report cards: vocabulary, top examples, ablation, drivers",
    ),
    "origin": ("hlens.origin", "probe transfer to the base model and parameter inertia"),
    "report": ("hlens.report", "one offline HTML page for a run directory"),
    "organism": ("hlens.organism.cli", "train or evaluate the bundled model organism"),
    "models": ("hlens.zoo", "known real models: installed?, converted?, size, licence, pip command"),
}


def _available() -> dict[str, tuple[str, str]]:
    """The subcommands whose modules are installed."""
    out = {}
    for name, (module, help_) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = (module, help_)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hlens",
        description=(
            "Find, explain and steer the neurons that predict when a language model hallucinates "
            "(H-Neurons, Gao et al. 2025), on TransformerLens 4."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        mod = importlib.import_module(module) if name != "organism" else None
        if mod is not None and hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        elif name == "organism":
            p.add_argument("args", nargs=argparse.REMAINDER, help="train | eval ... (see --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "organism":
        from hlens.organism.cli import main as organism_main

        return int(organism_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    mod = importlib.import_module(args._module)
    return int(mod.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
