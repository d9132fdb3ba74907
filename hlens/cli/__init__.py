"""The ``hlens`` command line: one module per command in this package.

Each command module (``hlens/cli/find.py``, ``steer.py``, ...) only parses arguments, builds the
pipeline's config, calls the library (``find(FindConfig, out) -> FindResult`` and so on) and
prints; :data:`COMMANDS` lists them. ``argparse`` appears nowhere else in hlens.

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

#: subcommand -> its module, which defines ``HELP``, ``add_arguments(parser)`` and ``run(args)``.
#: ``organism`` is the organism plug-in's command.
COMMANDS: dict[str, str] = {
    "find": "hlens.cli.find",
    "features": "hlens.cli.features",
    "steer": "hlens.cli.steer",
    "explain": "hlens.cli.explain",
    "origin": "hlens.cli.origin",
    "report": "hlens.cli.report",
    "organism": "hlens.cli.organism",
    "models": "hlens.cli.models",
}


def _available() -> dict[str, str]:
    """The subcommands whose modules are installed."""
    out = {}
    for name, module in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = module
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
    for name, module in _available().items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.set_defaults(_module=module)
        mod.add_arguments(p)
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
