"""``hlens features``: CETT features for examples, data-parallel under ``torchrun``.

Example:
    >>> from hlens.cli import main
    >>> main(["features", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse

import hlens
from hlens.features import CETTConfig, extract_features, init_distributed, read_examples
from hlens.prompts import PromptFormat

HELP = "CETT features for examples (data-parallel under torchrun)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="bundled name, checkpoint dir or hub id")
    p.add_argument("--examples", required=True, help="JSONL of examples with answer spans")
    p.add_argument("--out", required=True, help="feature directory (resumable)")
    p.add_argument("--regions", nargs="+", default=list(CETTConfig().regions))
    p.add_argument("--aggregation", choices=["mean", "max"], default="mean")
    p.add_argument("--batch-size", type=int, default=CETTConfig().batch_size)
    p.add_argument("--shard-size", type=int, default=CETTConfig().shard_size)
    p.add_argument("--no-abs", action="store_true")
    p.add_argument("--no-mag", action="store_true")
    p.add_argument("--instruction", default="", help="text appended to each question")
    p.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    rank, world, device = init_distributed()
    model = hlens.load(args.model, device=device or args.device)
    cfg = CETTConfig(
        use_abs=not args.no_abs,
        use_mag=not args.no_mag,
        method=args.aggregation,
        regions=tuple(args.regions),
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )
    store = extract_features(
        model,
        read_examples(args.examples),
        args.out,
        cfg,
        fmt=PromptFormat(instruction=args.instruction),
        progress=rank == 0,
    )
    if store is not None:
        print(f"{len(store.ids)} examples, regions {list(cfg.regions)} -> {store.path}")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
