"""The ``hlens`` command line.

Each subcommand lives in the module of its capability and registers itself here through
:data:`COMMANDS`: a name, a one-line help, a function that adds its arguments and one that runs it.

Every command fails the same way (see :mod:`hlens.errors`): a user error (a bad path, file,
value, model or shape, or a missing package) prints one line, ``hlens <command>: error: ...``, on
stderr and exits 2; ``hlens --debug <command>`` (or ``HLENS_DEBUG=1``) adds its traceback. Any
other exception is a bug: its traceback is kept and the exit status is 1.

Example:
    >>> main(["--version"])  # doctest: +SKIP
    hlens 0.1.0
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from hlens._version import __version__
from hlens.errors import EXIT_USER, HlensInputError, debug_enabled, missing_package, one_line

__all__ = ["COMMANDS", "main"]

#: subcommand -> (module, help). The module defines ``add_arguments(parser)`` and ``run(args)``.
COMMANDS: dict[str, tuple[str, str]] = {
    "find": ("hlens.find", "identify H-neurons: sample, judge, balance, CETT, sparse probe"),
    "features": ("hlens.cli.features", "CETT features for examples (data-parallel under torchrun)"),
    "steer": ("hlens.steer_cli", "scale neurons while generating; sweep alpha against controls"),
    "explain": (
        "hlens.explain",
        "neuron report cards: vocabulary, top examples, ablation, drivers",
    ),
    "origin": ("hlens.origin", "probe transfer to the base model and parameter inertia"),
    "report": ("hlens.report", "one offline HTML page for a run directory"),
    "organism": ("hlens.organism.cli", "train or evaluate the bundled model organism"),
    "models": (
        "hlens.zoo",
        "known real models: installed?, converted?, size, licence, pip command",
    ),
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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER, f"{self.prog}: error: {one_line(message)}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hlens",
        description=(
            "Find, explain and steer the neurons that predict when a language model hallucinates "
            "(H-Neurons, Gao et al. 2025), on TransformerLens 4."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hlens {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of user errors too (also HLENS_DEBUG=1)",
    )
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


def _report(command: str, err: HlensInputError, debug: bool) -> int:
    """Print a user error as one line (after its traceback with ``debug``); the exit status."""
    if debug:
        traceback.print_exception(err)
    print(f"hlens {command}: error: {one_line(err)}", file=sys.stderr)
    return EXIT_USER


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hlens ARGV``; returns the exit status (0, or 2 for a user error).

    Raises:
        Exception: a bug (anything but a user error), with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled()
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    command = argv[0] if argv else ""
    try:
        if argv and argv[0] == "organism":
            from hlens.organism.cli import main as organism_main

            return int(organism_main(argv[1:]) or 0)
        parser = build_parser()
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as e:  # --help, --version, or a usage error (one line, status 2)
            return e.code if isinstance(e.code, int) else 0 if e.code is None else EXIT_USER
        if extra:  # named after the subcommand, like its other usage errors
            prog = f"hlens {args.command}" if args.command else "hlens"
            print(
                f"{prog}: error: unrecognized arguments: {' '.join(extra)}; see {prog} --help",
                file=sys.stderr,
            )
            return EXIT_USER
        debug = debug or args.debug
        if args.command is None:
            parser.print_help()
            return 0
        command = args.command
        mod = importlib.import_module(args._module)
        return int(mod.run(args) or 0)
    except HlensInputError as e:
        return _report(command, e, debug)
    except ModuleNotFoundError as e:
        err = missing_package(e)
        if err is None:  # one of hlens's own modules: a bug
            raise
        return _report(command, err, debug)


if __name__ == "__main__":
    raise SystemExit(main())
