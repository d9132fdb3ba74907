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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hlens.examples import Example
from hlens.judge import Judge, Judgement, RuleJudge, locate_answer

__all__ = [
    "SOURCES",
    "QuestionSource",
    "get_source",
    "organism_judge",
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
    """

    name: str
    questions: list[Example]
    judge: Judge
    groups: dict[str, str] | None = None
    ood_questions: list[Example] = field(default_factory=list)
    ood_judge: Judge | None = None
    info: dict[str, Any] = field(default_factory=dict)
    strata: dict[str, str] | None = None

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


def _answer_span(response: str) -> tuple[int, int] | None:
    return locate_answer(response, None, max_words=None)


def organism_judge(world: Any, *, ood: bool = False) -> Judge:
    """The organism's exact judge as an hlens :class:`~hlens.judge.Judge`.

    In-distribution: a correct value is ``faithful``, a wrong value of the right vocabulary is
    ``hallucinated``; abstentions and unreadable responses are ``uncertain`` (dropped by the
    consistency filter). Out of distribution (never-seen people): abstaining is ``faithful`` and
    any attribute value is ``hallucinated``. The answer span is the whole answer-only response.
    """
    from hlens.organism.evaluate import judge as organism_label

    def judge(example: Example, response: str) -> Judgement:
        gold = example.answers[0] if example.answers else None
        raw = organism_label(world, example.meta["attribute"], gold, response)
        if ood:
            label = {"abstain": "faithful", "wrong": "hallucinated"}.get(raw, "uncertain")
        else:
            label = {"correct": "faithful", "wrong": "hallucinated"}.get(raw, "uncertain")
        span = _answer_span(response) if label != "uncertain" else None
        if label != "uncertain" and span is None:
            return Judgement("uncertain", reason=f"{raw}: no answer span in {response!r}")
        return Judgement(label, span=span, reason=raw)

    return judge


def _organism_source(
    model_name: str | None = None, limit: int | None = None, **_: Any
) -> QuestionSource:
    from hlens.organism.evaluate import resolve_model_dir, world_of

    world = world_of(resolve_model_dir(model_name or "organism"))
    questions = world.known_questions("all")
    if limit is not None:
        questions = questions[:limit]
    groups = {q.id: str(q.meta["person"]) for q in questions}
    ood = world.nonexist_questions("test")
    if limit is not None:
        ood = ood[: max(1, limit // 4)]
    return QuestionSource(
        name="organism",
        questions=questions,
        judge=organism_judge(world),
        groups=groups,
        strata={q.id: str(q.meta["attribute"]) for q in questions},
        ood_questions=ood,
        ood_judge=organism_judge(world, ood=True),
        info={"world_seed": world.config.seed},
    )


def _triviaqa_source(
    limit: int | None = None, split: str = "validation", **_: Any
) -> QuestionSource:
    from hlens.datasets import load_triviaqa

    return QuestionSource("triviaqa", load_triviaqa(split=split, limit=limit), RuleJudge())


def _file_source(
    path: str,
    limit: int | None = None,
    question_col: str = "question",
    answers_col: str = "answers",
    strata_col: str | None = None,
    **_: Any,
) -> QuestionSource:
    from hlens.datasets import load_qa_file

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
    return QuestionSource(Path(path).name, questions, RuleJudge(), strata=strata)


#: name -> factory(**kwargs) -> QuestionSource
SOURCES: dict[str, Callable[..., QuestionSource]] = {
    "organism": _organism_source,
    "triviaqa": _triviaqa_source,
}

#: name -> sampling settings that differ from the paper's defaults for that source. The organism's
#: answers are a few tokens long, so 16 new tokens (the organism evaluation's setting, which makes
#: the ``hlens find`` funnel equal to ``hlens organism eval``) and large batches suffice.
SOURCE_SAMPLING: dict[str, dict[str, Any]] = {
    "organism": {"max_new_tokens": 16, "batch_size": 320},
}


def register_source(
    name: str,
    factory: Callable[..., QuestionSource],
    *,
    sampling: dict[str, Any] | None = None,
) -> None:
    """Register a question source under ``name`` (for ``hlens find --dataset name``).

    Args:
        name: the dataset name.
        factory: ``factory(model_name=..., limit=...) -> QuestionSource``.
        sampling: :class:`~hlens.sampling.SamplingConfig` fields that differ from the paper's
            defaults for this source.
    """
    SOURCES[name] = factory
    if sampling:
        SOURCE_SAMPLING[name] = dict(sampling)


def source_sampling(name: str, **overrides: Any) -> Any:
    """The sampling settings for a source: the paper's defaults, the source's, then overrides."""
    from hlens.sampling import SamplingConfig

    fields = {**SamplingConfig().to_dict(), **SOURCE_SAMPLING.get(name, {})}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingConfig.from_dict(fields)


def get_source(name: str, **kwargs: Any) -> QuestionSource:
    """A registered source by name, or a JSONL/CSV file path.

    Raises:
        ValueError: naming the registered sources when ``name`` is neither.
    """
    if name in SOURCES:
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
