"""The data stages of ``hlens find``: responses (sampled or imported), judgements, labelled
examples with their answer spans, and the splits."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hlens.controls import span_is_whole
from hlens.errors import HlensInputError
from hlens.examples import Example
from hlens.formats import OFFICIAL_JUDGE, ConsistencyRecord, write_consistency_samples
from hlens.identify.config import SPAN_EXTRACTORS, FindConfig
from hlens.judge import ConsistencyResult, consistency_filter, locate_answer
from hlens.model import Model
from hlens.prompts import PromptFormat, prompt_ids
from hlens.records import Record, atomic_write_text
from hlens.sampling import SamplingConfig, sample_to_jsonl
from hlens.sources import QuestionSource, is_source
from hlens.spans import SpanResult, span_step_counts
from hlens.splits import Splits, make_splits

__all__ = ["Judged", "Judgements", "Labelled", "degenerate_outputs"]


def _file_columns(cfg: FindConfig) -> dict[str, Any]:
    """The column options, for a file dataset; an error if they are set for a registered source."""
    cols = {"question_col": cfg.question_col, "answers_col": cfg.answers_col}
    cols["strata_col"] = cfg.strata_col
    if is_source(cfg.dataset):
        default = FindConfig()
        changed = [k for k, v in cols.items() if v != getattr(default, k)]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} apply to JSONL/CSV datasets, but dataset {cfg.dataset!r} "
                "is a registered source"
            )
        return {}
    return cols


def _check_imported(
    path: str, records: dict[str, dict[str, Any]], questions: list[Example]
) -> dict[str, dict[str, Any]]:
    """The records of ``questions`` from a samples file, or an error naming a missing id."""
    missing = [q.id for q in questions if q.id not in records]
    if missing:
        raise HlensInputError(
            f"--samples {path}: {len(missing)} of {len(questions)} questions have no responses "
            f"there (e.g. id {missing[0]!r}); expected a file holding every question's id"
        )
    return {q.id: records[q.id] for q in questions}


def _store_imported(records: dict[str, dict[str, Any]], out: Path, name: str) -> None:
    """Copy imported records into the run's sample store ``name`` (once, atomically)."""
    store = out / name
    if store.exists():
        return
    tmp = store.with_name(store.name + ".tmp")
    with tmp.open("w") as f:
        for qid, r in records.items():
            rec = {"id": qid, "responses": r["responses"], "truncated": r["truncated"]}
            f.write(json.dumps(rec) + "\n")
    tmp.replace(store)


def _sample(
    model: Model,
    questions: list[Example],
    out: Path,
    cfg: FindConfig,
    fmt: PromptFormat,
    name: str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    prompts = [prompt_ids(q, model.tokenizer, fmt) for q in questions]
    ids = [q.id for q in questions]
    sampling = cfg.sampling
    if fmt.cut_at_newline and not sampling.stop_at_newline:
        sampling = SamplingConfig.from_dict({**sampling.to_dict(), "stop_at_newline": True})
    recs = sample_to_jsonl(
        out / name, model.hf_model, model.tokenizer, prompts, ids, sampling, progress=progress
    )
    return {r["id"]: r for r in recs}


def _judge_all(source_judge: Any, questions: list[Example], records: dict[str, dict[str, Any]]):
    labels: dict[str, list[str]] = {}
    spans: dict[str, list[Any]] = {}
    for q in questions:
        js = [source_judge(q, r) for r in records[q.id]["responses"]]
        labels[q.id] = [j.label for j in js]
        spans[q.id] = [j.span for j in js]
    return labels, spans


def _labelled_examples(questions, records, labels, spans, kept: dict[str, str], how: str):
    """One example per kept question: its first response, labelled, with its answer span.

    ``how`` names the span extractor (see :data:`SPAN_EXTRACTORS`). Every extractor but
    ``"alias"`` marks the span without looking at the label, so the span means the same thing in
    both classes. Examples whose span cannot be found are reported, never kept with a guess.

    Returns:
        ``(examples, skipped, steps)``: ``steps[id]`` is the extractor step that marked it.
    """
    extractor = SPAN_EXTRACTORS[how]
    out, skipped, steps = [], [], {}
    for q in questions:
        if q.id not in kept:
            continue
        response = records[q.id]["responses"][0]
        if extractor is not None:
            res: SpanResult = extractor(q.question, response)
            span, step = res.span, res.step
        else:
            span, step = spans[q.id][0], "judge"
            if span is None and how == "alias":
                span = locate_answer(response, q.answers if kept[q.id] == "faithful" else None)
                step = "alias" if kept[q.id] == "faithful" else "answer_only"
        steps[q.id] = step if span is not None else "none"
        if span is None:
            skipped.append({"id": q.id, "label": kept[q.id], "reason": "answer span not found"})
            continue
        out.append(q.replace(response=response, answer_span=span, label=kept[q.id]))
    return out, skipped, steps


def degenerate_outputs(
    records: dict[str, dict[str, Any]], *, threshold: float = 0.5, min_questions: int = 20
) -> dict[str, Any]:
    """Whether a model's responses are degenerate: mostly empty, or mostly one repeated string.

    A wrong prompt (Gemma without its ``<bos>`` answers ``""`` or ``"A:\nA:"`` everywhere) makes
    every answer "hallucinated"; such a run must stop before the probe, not feed it.

    Example:
        >>> recs = {str(i): {"responses": ["A:"]} for i in range(30)}
        >>> degenerate_outputs(recs)["degenerate"]
        True
    """
    first = [r["responses"][0].strip() for r in records.values() if r["responses"]]
    n = len(first)
    empty = sum(not x for x in first) / n if n else 0.0
    top, top_n = ("", 0)
    if n:
        from collections import Counter

        top, top_n = Counter(first).most_common(1)[0]
    share_top = top_n / n if n else 0.0
    bad = n >= min_questions and (empty > threshold or share_top > threshold)
    return {
        "degenerate": bool(bad),
        "share_empty": round(empty, 4),
        "most_common_response": top,
        "share_most_common": round(share_top, 4),
        "threshold": threshold,
    }


@dataclass(frozen=True)
class Judged:
    """Every question's judgements (:func:`find`'s judge stage): the label and span of each
    sampled response, and which questions the consistency filter keeps."""

    labels: dict[str, list[str]]
    spans: dict[str, list[Any]]
    consistency: ConsistencyResult


@dataclass(frozen=True)
class Labelled:
    """One labelled example per kept question, with its answer span (:func:`find`'s span stage),
    and what was seen on the way: questions without a span, degenerate or truncated responses.

    Attributes:
        examples: the first response of each kept question whose answer span was found.
        skipped: the kept questions without an answer span (id, label, reason).
        span_method: the span extractor (a key of :data:`SPAN_EXTRACTORS`).
        span_info: per class, the extractor steps and the whole-response share (summary.json's
            ``spans``).
        degenerate: :func:`degenerate_outputs` of all first responses.
        n_truncated_samples: sampled responses cut at the token limit.
        n_samples_total: all sampled responses.
    """

    examples: list[Example]
    skipped: list[dict[str, Any]]
    span_method: str
    span_info: dict[str, Any]
    degenerate: dict[str, Any]
    n_truncated_samples: int
    n_samples_total: int

    def ids(self, label: str) -> list[str]:
        """The ids of the examples labelled ``label``, in order."""
        return [e.id for e in self.examples if e.label == label]


@dataclass
class Judgements(Record):
    """``judgements.json``: the labels of every sample, the consistency filter, the questions
    without an answer span, the degenerate-output check and the span summary."""

    labels: dict[str, list[str]]
    consistency: dict[str, Any]
    skipped: list[dict[str, Any]]
    degenerate: dict[str, Any]
    spans: dict[str, Any]

    @classmethod
    def of(cls, judged: Judged, labelled: Labelled) -> Judgements:
        return cls(
            judged.labels,
            judged.consistency.to_dict(),
            labelled.skipped,
            labelled.degenerate,
            labelled.span_info,
        )

    def save(self, path: str | Path) -> Path:
        """Write ``judgements.json`` as it always was (``indent=0``; an undefined share stays
        ``NaN``, not ``null``), atomically."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        return atomic_write_text(path, json.dumps(raw, indent=0))


def _responses(
    model: Model,
    source: QuestionSource,
    imported: dict[str, dict[str, Any]] | None,
    out: Path,
    cfg: FindConfig,
    fmt: PromptFormat,
    rank: int,
    world: int,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Sample every question's responses on rank 0 (or take those sampled elsewhere); the other
    ranks read the finished store."""
    main = rank == 0
    if imported is not None:
        records = imported
        if main:
            _store_imported(records, out, "samples.jsonl")
    elif main:
        records = _sample(model, source.questions, out, cfg, fmt, "samples.jsonl", progress)
    _barrier(world)
    if imported is None and not main:  # the store is complete: this reads it, generating nothing
        records = _sample(model, source.questions, out, cfg, fmt, "samples.jsonl", False)
    return records


def _judge(source: QuestionSource, records: dict[str, dict[str, Any]], cfg: FindConfig) -> Judged:
    """Judge every sampled response; keep the questions judged the same in every sample."""
    labels, spans = _judge_all(source.judge, source.questions, records)
    consistency = consistency_filter(labels, n_samples=cfg.sampling.n_samples)
    return Judged(labels, spans, consistency)


def _write_official_samples(
    source: QuestionSource,
    records: dict[str, dict[str, Any]],
    judged: Judged,
    cfg: FindConfig,
    out: Path,
) -> None:
    """``consistency_samples.jsonl``: the responses and labels in the official scripts' layout."""
    official = [
        ConsistencyRecord(
            q.id,
            q.question + cfg.instruction,
            records[q.id]["responses"],
            [OFFICIAL_JUDGE[x] for x in judged.labels[q.id]],
            list(q.answers),
        )
        for q in source.questions
    ]
    write_consistency_samples(official, out / "consistency_samples.jsonl")


def _label(
    source: QuestionSource, records: dict[str, dict[str, Any]], judged: Judged, cfg: FindConfig
) -> Labelled:
    """One example per kept question (its first response) with its answer span, and the checks
    on the responses (degenerate, truncated)."""
    how = _span_method(cfg, source)
    kept = judged.consistency.kept
    examples, skipped, steps = _labelled_examples(
        source.questions, records, judged.labels, judged.spans, kept, how
    )
    return Labelled(
        examples=examples,
        skipped=skipped,
        span_method=how,
        span_info=_span_summary(how, examples, kept, steps),
        degenerate=degenerate_outputs(records, threshold=cfg.degenerate_threshold or 1.0),
        n_truncated_samples=sum(sum(r["truncated"]) for r in records.values()),
        n_samples_total=sum(len(r["truncated"]) for r in records.values()),
    )


def _check_degenerate(labelled: Labelled, judged: Judged, cfg: FindConfig, prompt: str) -> None:
    """Stop before the probe when the responses are degenerate (see :func:`degenerate_outputs`)."""
    degenerate = labelled.degenerate
    if degenerate["degenerate"] and cfg.degenerate_threshold is not None:
        raise HlensInputError(
            f"the model's responses are degenerate ({100 * degenerate['share_empty']:.0f}% empty, "
            f"{100 * degenerate['share_most_common']:.0f}% are "
            f"{degenerate['most_common_response']!r}); the probe would learn nothing. Check the "
            f"prompt format ({prompt!r}; --prompt) and that the tokenizer adds the model's "
            f"special tokens. Funnel: {judged.consistency.funnel.to_dict()}"
        )


def _split(
    labelled: Labelled, judged: Judged, source: QuestionSource, cfg: FindConfig
) -> tuple[Splits, dict[str, str] | None]:
    """Balanced, disjoint train/test splits (by group when the source has groups), and the
    groups of the labelled examples."""
    faithful, halluc = labelled.ids("faithful"), labelled.ids("hallucinated")
    if min(len(faithful), len(halluc)) < 4:
        raise HlensInputError(
            f"too few consistent questions to fit a probe: {len(faithful)} faithful, {len(halluc)} "
            f"hallucinated (funnel: {judged.consistency.funnel.to_dict()}); use more questions"
        )
    groups = {e.id: source.groups[e.id] for e in labelled.examples} if source.groups else None
    splits = make_splits(
        faithful, halluc, test_fraction=cfg.test_fraction, seed=cfg.seed, groups=groups
    )
    return splits, groups


def _prompt_name(cfg: FindConfig, model: Model) -> str:
    """The prompt format's name: the config's, the known model's, or by the chat template."""
    if cfg.prompt is not None:
        return cfg.prompt
    known = getattr(model, "known", None)
    if known is not None:
        return known.prompt
    return "chat" if getattr(model.tokenizer, "chat_template", None) else "fewshot_qa"


def _span_method(cfg: FindConfig, source: QuestionSource) -> str:
    if cfg.spans != "auto":
        return cfg.spans
    return source.spans or "rules"


def _span_summary(
    how: str, examples: list[Example], kept: dict[str, str], steps: dict[str, str]
) -> dict[str, Any]:
    """Per class: how many spans each extractor step marked, and the whole-response share."""
    by_class: dict[str, Any] = {}
    for label in ("faithful", "hallucinated"):
        ids = [q for q, lab in kept.items() if lab == label]
        exs = [e for e in examples if e.label == label]
        whole = [span_is_whole(e) for e in exs]
        lengths = [e.answer_span[1] - e.answer_span[0] for e in exs]
        by_class[label] = {
            "steps": span_step_counts(steps[q] for q in ids if q in steps),
            "n_kept": len(exs),
            "share_whole_response": float(np.mean(whole)) if whole else float("nan"),
            "mean_span_chars": float(np.mean(lengths)) if lengths else float("nan"),
        }
    f, h = by_class["faithful"], by_class["hallucinated"]
    diff = abs(f["share_whole_response"] - h["share_whole_response"])
    return {
        "extractor": how,
        "label_blind": how != "alias",
        "by_class": by_class,
        "whole_response_share_gap": diff,
    }


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
