"""Question sources for ``hlens find``: which questions, which judge, how to group for splits.

A :class:`QuestionSource` bundles everything dataset-specific the identification pipeline needs,
so the pipeline itself never branches on dataset names. Sources are looked up in one registry:
``"organism"`` (the bundled model organism's world, judged exactly), ``"triviaqa"`` (through
``datasets``, for users with network) and any JSONL/CSV file with question and answers columns.

Example:
    >>> src = get_source("organism", model_name="organism")  # doctest: +SKIP
    >>> len(src.questions) > 1000  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hlens.datasets import load_qa_file, load_triviaqa
from hlens.examples import Example
from hlens.formats import ConsistencyRecord
from hlens.judge import Judge, RuleJudge
from hlens.prompts import PAPER_INSTRUCTION
from hlens.registry import deprecated_alias, load_plugins
from hlens.sampling import SamplingConfig
from hlens.zoo import get_known

__all__ = [
    "MODEL_SOURCES",
    "SOURCES",
    "TRIVIAQA_BUNDLED",
    "QuestionSource",
    "bundled_triviaqa",
    "default_dataset",
    "get_source",
    "is_source",
    "read_samples_file",
    "register_source",
    "source_sampling",
]


@dataclass
class QuestionSource:
    """What ``hlens find`` needs from a dataset.

    Attributes:
        name: the source's name (recorded in ``summary.json``).
        questions: questions with gold answers and unique ids.
        judge: labels a response ``faithful`` / ``hallucinated`` / ``uncertain``, with its span.
        groups: optional ``{question id: group}``; a group never spans train and test (e.g. the
            person a question is about, so the probe cannot memorise people).
        ood_questions: optional out-of-distribution questions (the organism's never-seen people),
            judged by ``ood_judge``: answering is ``hallucinated``, abstaining is ``faithful``.
        ood_judge: judge for ``ood_questions``.
        info: free-form facts recorded in the summary.
        strata: optional ``{question id: question type}`` (e.g. the attribute asked about);
            ``hlens find`` then reports how much of the probe's AUROC the type alone explains
            (:func:`hlens.metrics.strata_control`).
        spans: the answer-span extractor ``hlens find`` uses for this source when its config
            says ``"auto"`` (a key of :data:`hlens.identify.SPAN_EXTRACTORS`); ``None`` means the
            label-blind rules (:class:`hlens.spans.RuleSpanExtractor`).
    """

    name: str
    questions: list[Example]
    judge: Judge
    groups: dict[str, str] | None = None
    ood_questions: list[Example] = field(default_factory=list)
    ood_judge: Judge | None = None
    info: dict[str, Any] = field(default_factory=dict)
    strata: dict[str, str] | None = None
    spans: str | None = None

    def __post_init__(self) -> None:
        ids = [q.id for q in self.questions]
        if any(i is None for i in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"source {self.name!r}: every question needs a unique id")
        if self.strata is not None:
            missing = [i for i in ids if i not in self.strata]
            if missing:
                raise ValueError(
                    f"source {self.name!r}: strata must give every question a stratum; "
                    f"{len(missing)} ids have none, e.g. {missing[:3]}"
                )
        if self.ood_questions and self.ood_judge is None:
            raise ValueError(f"source {self.name!r} has OOD questions but no ood_judge")


#: The TriviaQA questions shipped with hlens (see ``hlens/data/README.md``).
TRIVIAQA_BUNDLED = Path(__file__).resolve().parent / "data" / "triviaqa_3500.jsonl"


def _offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection (no network fails at DNS, at once)."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def bundled_triviaqa(limit: int | None = None) -> list[Example]:
    """The 3,500 TriviaQA validation questions shipped with hlens (ids and gold aliases).

    Example:
        >>> qs = bundled_triviaqa(limit=2)
        >>> qs[0].id, qs[0].answers[-1]
        ('tc_1', 'Sinclair Lewis')
    """
    return load_qa_file(TRIVIAQA_BUNDLED, id_col="id", limit=limit)


def _triviaqa_source(
    limit: int | None = None,
    split: str = "validation",
    judge: Judge | None = None,
    hub: bool | None = None,
    **_: Any,
) -> QuestionSource:
    """TriviaQA from the hub when it is reachable, else the 3,500 questions shipped with hlens.

    ``hub=True`` requires the hub, ``hub=False`` never tries it; ``None`` tries it unless an
    offline variable (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``) is set. ``info["origin"]``
    says which was used.
    """
    judge = judge if judge is not None else RuleJudge()
    why = "HF_HUB_OFFLINE is set" if _offline() else None
    if why is None and hub is None and not _hub_reachable():
        why = "hub unreachable"
    if hub is not False and (hub or why is None):
        try:
            questions = load_triviaqa(split=split, limit=limit)
            return QuestionSource(
                "triviaqa", questions, judge, info={"origin": f"hub ({split} split)"}
            )
        except Exception as e:  # no `datasets`, no network, no cache: many error types
            if hub:
                raise ValueError(f"could not load TriviaQA from the hub: {e}") from e
            why = f"hub unreachable ({type(e).__name__})"
    if hub is False:
        why = "hub not asked"
    origin = f"bundled subset of {TRIVIAQA_BUNDLED.name} ({why})"
    return QuestionSource("triviaqa", bundled_triviaqa(limit), judge, info={"origin": origin})


def _file_source(
    path: str,
    limit: int | None = None,
    question_col: str = "question",
    answers_col: str = "answers",
    strata_col: str | None = None,
    judge: Judge | None = None,
    **_: Any,
) -> QuestionSource:
    cols = dict(question_col=question_col, answers_col=answers_col, limit=limit)
    try:  # use the file's own ids when it has an "id" column, else row numbers
        questions = load_qa_file(path, id_col="id", **cols)
    except ValueError:
        questions = load_qa_file(path, **cols)
    strata = None
    if strata_col is not None:
        missing = [q.id for q in questions if q.meta.get(strata_col) in (None, "")]
        if missing:
            have = sorted({k for q in questions for k in q.meta})
            raise ValueError(
                f"{path}: strata column {strata_col!r} is missing or empty for {len(missing)} "
                f"questions (e.g. id {missing[0]}); columns besides the question and answers: "
                f"{have}"
            )
        strata = {q.id: str(q.meta[strata_col]) for q in questions}
    judge = judge if judge is not None else RuleJudge()
    return QuestionSource(Path(path).name, questions, judge, strata=strata)


def read_samples_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Responses sampled elsewhere, as hlens sample-store records by question id.

    Reads an official ``consistency_samples.jsonl`` (``{qid: {"question", "responses",
    "judges", "ground_truth"}}`` per line, as the official scripts write it after sampling with
    vLLM) or an hlens ``samples.jsonl`` store (``{"id", "responses", "truncated"}``). Official
    files do not record truncation; their responses count as not truncated. Records also keep
    ``question`` and ``answers`` when the file has them.

    Raises:
        ValueError: naming the file and line of a record in neither layout, or records with
            different numbers of responses.
    """
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not valid JSON: {e}") from e
            if isinstance(obj, dict) and "id" in obj and "responses" in obj:
                rs = [str(r) for r in obj["responses"]]
                trunc = [bool(t) for t in obj.get("truncated", [False] * len(rs))]
                out[str(obj["id"])] = {"id": str(obj["id"]), "responses": rs, "truncated": trunc}
                continue
            try:
                rec = ConsistencyRecord.from_official(obj)
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"{path}:{n}: expected an official consistency_samples record "
                    f"({{qid: {{question, responses, judges, ground_truth}}}}) or an hlens "
                    f"sample record ({{id, responses, truncated}}): {e}"
                ) from e
            out[rec.qid] = {
                "id": rec.qid,
                "responses": list(rec.responses),
                "truncated": [False] * len(rec.responses),
                "question": rec.question,
                "answers": list(rec.ground_truth),
            }
    counts = {len(r["responses"]) for r in out.values()}
    if len(counts) > 1:
        raise ValueError(
            f"{path}: records have different numbers of responses ({sorted(counts)}); the "
            "consistency filter needs the same number for every question"
        )
    return out


def _samples_source(
    samples: str | None = None, limit: int | None = None, judge: Judge | None = None, **_: Any
) -> QuestionSource:
    """The questions of a samples file (``hlens find --samples FILE`` without ``--dataset``)."""
    if samples is None:
        raise ValueError("dataset 'samples' needs a samples file (--samples FILE)")
    records = read_samples_file(samples)
    questions = []
    for qid, rec in records.items():
        if "question" not in rec:
            raise ValueError(
                f"{samples}: record {qid!r} has no question (an hlens store); give the questions "
                "with --dataset"
            )
        q = rec["question"]
        q = q[: -len(PAPER_INSTRUCTION)] if q.endswith(PAPER_INSTRUCTION) else q
        questions.append(Example(q.strip(), id=qid, answers=tuple(rec["answers"])))
    if limit is not None:
        questions = questions[:limit]
    judge = judge if judge is not None else RuleJudge()
    return QuestionSource(Path(samples).name, questions, judge, info={"origin": str(samples)})


#: name -> factory(**kwargs) -> QuestionSource
SOURCES: dict[str, Callable[..., QuestionSource]] = {
    "triviaqa": _triviaqa_source,
    "samples": _samples_source,
}

#: name -> sampling settings that differ from the paper's defaults for that source. The organism's
#: answers are a few tokens long, so 16 new tokens (the organism evaluation's setting, which makes
#: the ``hlens find`` funnel equal to ``hlens organism eval``) and large batches suffice.
SOURCE_SAMPLING: dict[str, dict[str, Any]] = {}

#: model name -> the dataset ``hlens find`` uses for it when none is given (default: TriviaQA).
MODEL_SOURCES: dict[str, str] = {}


def default_dataset(model: str) -> str:
    """The dataset ``hlens find --model MODEL`` uses without ``--dataset``.

    Example:
        >>> default_dataset("organism"), default_dataset("smollm2-135m-instruct")
        ('organism', 'triviaqa')
    """
    load_plugins()
    return MODEL_SOURCES.get(str(model), "triviaqa")


def register_source(
    name: str,
    factory: Callable[..., QuestionSource],
    *,
    sampling: dict[str, Any] | None = None,
    models: Sequence[str] = (),
) -> None:
    """Register a question source under ``name`` (for ``hlens find --dataset name``).

    Args:
        name: the dataset name.
        factory: ``factory(model_name=..., limit=...) -> QuestionSource``.
        sampling: :class:`~hlens.sampling.SamplingConfig` fields that differ from the paper's
            defaults for this source.
        models: model names whose default dataset this source becomes.
    """
    SOURCES[name] = factory
    if sampling:
        SOURCE_SAMPLING[name] = dict(sampling)
    for m in models:
        MODEL_SOURCES[m] = name


def source_sampling(name: str, model: str | None = None, **overrides: Any) -> Any:
    """Sampling settings: the paper's defaults, then the source's, the model's, and ``overrides``.

    The model's come from its :mod:`hlens.zoo` entry (a known real model), if it has one.

    Example:
        >>> source_sampling("organism").max_new_tokens
        16
    """
    known = get_known(str(model)) if model is not None else None
    load_plugins()
    fields = {**SamplingConfig().to_dict(), **SOURCE_SAMPLING.get(name, {})}
    fields.update(dict(known.sampling) if known is not None else {})
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingConfig.from_dict(fields)


def is_source(name: str) -> bool:
    """Whether ``name`` is a registered question source (the plug-ins' included)."""
    load_plugins()
    return name in SOURCES


def get_source(name: str, **kwargs: Any) -> QuestionSource:
    """A registered source by name, or a JSONL/CSV file path.

    Raises:
        ValueError: naming the registered sources when ``name`` is neither.
    """
    if is_source(name):
        return SOURCES[name](**kwargs)
    if Path(name).is_file():
        return _file_source(name, **kwargs)
    raise ValueError(
        f"unknown dataset {name!r}: not a registered source ({', '.join(sorted(SOURCES))}) and "
        "not an existing JSONL/CSV file"
    )


def first_responses(
    questions: Sequence[Example], records: dict[str, dict[str, Any]]
) -> list[Example]:
    """Examples carrying each question's first sampled response."""
    return [q.replace(response=records[q.id]["responses"][0]) for q in questions]


def __getattr__(name: str) -> Any:
    if name == "organism_judge":  # deprecated: moved into the organism's plug-in
        return deprecated_alias("hlens.sources", name)
    raise AttributeError(f"module 'hlens.sources' has no attribute {name!r}")
