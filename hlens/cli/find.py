"""``hlens find``: identify H-neurons (sample, judge, keep consistent questions, CETT, probe).

The command only parses options, builds a :class:`~hlens.identify.FindConfig`, calls
:func:`hlens.identify.find` and prints the result.

Example:
    >>> from hlens.cli import main
    >>> main(["find", "--model", "organism", "--out", "runs/organism"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hlens._deprecate import warn_renamed
from hlens.checks import check_range
from hlens.errors import HlensInputError, validating
from hlens.features import CETTConfig
from hlens.identify import JUDGES, SPAN_EXTRACTORS, FindConfig, confound_lines, find
from hlens.identify.config import _f3
from hlens.prompts import PROMPT_FORMATS
from hlens.sources import default_dataset, source_sampling
from hlens.token_choice import NOISE

HELP = "identify H-neurons: sample, judge, balance, CETT, sparse probe"


def _fmt_ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = FindConfig()
    p.add_argument(
        "--model",
        default=d.model,
        help="bundled or known name (hlens models), checkpoint dir, .gguf file or hub id",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="organism | triviaqa | a JSONL/CSV file (default: organism for the organism, "
        "else triviaqa: the hub if reachable, else the 3,500 questions shipped with hlens)",
    )
    p.add_argument(
        "--samples",
        default=None,
        help="responses sampled elsewhere (an official consistency_samples.jsonl, e.g. from "
        "vLLM, or an hlens samples.jsonl): sampling is skipped; without --dataset the questions "
        "come from the file",
    )
    p.add_argument(
        "--prompt",
        default=None,
        choices=sorted(PROMPT_FORMATS),
        help="prompt format (default: the model's; chat with a chat template, else fewshot_qa)",
    )
    p.add_argument(
        "--judge",
        default=d.judge,
        choices=sorted(JUDGES),
        help="rule: whole-word alias match, echo-aware (default); official: substring rule",
    )
    p.add_argument(
        "--spans",
        default=d.spans,
        choices=["auto", *sorted(SPAN_EXTRACTORS)],
        help="answer spans: auto (the source's, else rules), rules (label-blind), whole, judge, "
        "alias (label-dependent; only to reproduce that artefact)",
    )
    p.add_argument("--question-col", default=d.question_col, help="JSONL/CSV question column")
    p.add_argument("--answers-col", default=d.answers_col, help="JSONL/CSV gold-answers column")
    p.add_argument(
        "--strata-col",
        default=None,
        help="JSONL/CSV question-type column (e.g. topic) for the question-type control",
    )
    p.add_argument("--out", required=True, help="run directory (resumable)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    p.add_argument("--n-samples", type=int, default=None, help="responses per question (10)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (1.0)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="(50; organism: 16)")
    p.add_argument(
        "--noise",
        choices=list(NOISE),
        default=None,
        help="sampling noise: mt19937 (CPU generators, the default) or counter (a hash on the "
        "model's device; faster on a GPU and at large vocabularies, other samples)",
    )
    p.add_argument(
        "--sample-batch-size",
        type=int,
        default=None,
        help="sequences per generation batch (64; organism: 320)",
    )
    p.add_argument("--batch-size", type=int, default=d.cett.batch_size, help="CETT batch size")
    p.add_argument(
        "--shard-size",
        type=int,
        default=d.cett.shard_size,
        help="examples per feature shard (the unit of resuming)",
    )
    p.add_argument(
        "--contrast",
        choices=["3-vs-1", "1-vs-1"],
        default=d.contrast,
        help="the probe's training set: answers against answers and other tokens (3-vs-1, the "
        "paper's) or answers only (1-vs-1)",
    )
    p.add_argument(  # deprecated name of --contrast, for one release
        "--mode", choices=["3-vs-1", "1-vs-1"], default=None, help=argparse.SUPPRESS
    )
    p.add_argument("--penalty", choices=["l1", "l2"], default=d.penalty)
    p.add_argument("--solver", choices=["torch", "liblinear"], default=d.solver)
    p.add_argument(
        "--class-weight",
        choices=["balanced", "none"],
        default=d.class_weight or "none",
        help="weigh training classes by inverse frequency (default) or not (official script)",
    )
    p.add_argument("--aggregation", choices=["mean", "max"], default=d.cett.aggregation)
    p.add_argument("--no-abs", action="store_true", help="signed activations (use_abs=False)")
    p.add_argument("--no-mag", action="store_true", help="drop ||W_out|| (use_mag=False)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def _contrast(args: argparse.Namespace) -> str:
    """``--contrast``, or the deprecated ``--mode`` (a warning on stderr) when that was given."""
    if args.mode is None:
        return args.contrast
    if args.contrast != FindConfig().contrast and args.contrast != args.mode:
        raise HlensInputError(
            f"--mode {args.mode} and --contrast {args.contrast} disagree; --mode is the "
            "deprecated name of --contrast: pass only --contrast"
        )
    warn_renamed("hlens find --mode", "--contrast", stacklevel=2)
    print("hlens find: warning: --mode is deprecated; use --contrast", file=sys.stderr)
    return args.mode


def _config_from_args(args: argparse.Namespace) -> FindConfig:
    dataset = args.dataset
    if dataset is None:
        dataset = "samples" if args.samples else default_dataset(args.model)
    sampling = source_sampling(
        dataset,
        model=args.model,
        n_samples=args.n_samples,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.sample_batch_size,
        seed=args.seed,
        noise=args.noise,
    )
    cett = CETTConfig(
        use_abs=not args.no_abs,
        use_mag=not args.no_mag,
        aggregation=args.aggregation,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )
    cfg = FindConfig(
        model=args.model,
        dataset=dataset,
        samples=args.samples,
        prompt=args.prompt,
        judge=args.judge,
        spans=args.spans,
        question_col=args.question_col,
        answers_col=args.answers_col,
        strata_col=args.strata_col,
        limit=args.limit,
        sampling=sampling,
        cett=cett,
        contrast=_contrast(args),
        penalty=args.penalty,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        solver=args.solver,
        seed=args.seed,
        device=args.device,
    )
    return cfg


def run(args: argparse.Namespace) -> int:
    """Run ``hlens find``: options are checked, then :func:`find` (which validates the rest)."""
    for option, value, lo in (
        ("--limit", args.limit, 1),
        ("--n-samples", args.n_samples, 1),
        ("--max-new-tokens", args.max_new_tokens, 1),
        ("--sample-batch-size", args.sample_batch_size, 1),
        ("--batch-size", args.batch_size, 1),
        ("--shard-size", args.shard_size, 1),
        ("--temperature", args.temperature, 0),
    ):
        check_range(option, value, lo)
    with validating():
        cfg = _config_from_args(args)
    s = find(cfg, args.out, progress=not args.no_progress)
    t, b = s.metrics["test"], s.baselines["random_neurons"]
    print(
        f"H-neurons: {s.h_neurons.count} ({100 * s.h_neurons.fraction:.2f}% of "
        f"{s.n_layers * s.d_mlp} neurons)"
    )
    print(
        f"test: accuracy {_f3(t['accuracy'])}, AUROC {_f3(t['auroc'])} "
        f"(95% CI {_fmt_ci(t.get('auroc_ci'))}); random neurons: accuracy "
        f"{_f3(b.get('accuracy'))}, AUROC {_f3(b.get('auroc'))}"
    )
    strata = s.controls["strata"]
    if strata:
        print(
            f"question type alone: AUROC {_f3(strata['strata_only_auroc'])}; probe within "
            f"question types: AUROC {_f3(strata['within_strata_auroc'])}"
        )
    for line in confound_lines(s):
        print(line)
    print(f"wrote {Path(args.out) / 'summary.json'}")
    return 0
