"""The organism's question source for ``hlens find``: its world's known facts, judged exactly,
with its never-seen people as the out-of-distribution set.

Example:
    >>> from hlens.sources import get_source
    >>> src = get_source("organism", model_name="organism")  # doctest: +SKIP
    >>> src.spans  # doctest: +SKIP
    'whole'
"""

from __future__ import annotations

from typing import Any

from hlens.examples import Example
from hlens.judge import Judge, Judgement, locate_answer
from hlens.organism.evaluate import judge as organism_label
from hlens.organism.evaluate import resolve_model_dir, world_of
from hlens.organism.world import World
from hlens.sources import QuestionSource

__all__ = ["organism_judge", "organism_source"]


def organism_judge(world: World, *, ood: bool = False) -> Judge:
    """The organism's exact judge as an hlens :class:`~hlens.judge.Judge`.

    In-distribution: a correct value is ``faithful``, a wrong value of the right vocabulary is
    ``hallucinated``; abstentions and unreadable responses are ``uncertain`` (dropped by the
    consistency filter). Out of distribution (never-seen people): abstaining is ``faithful`` and
    any attribute value is ``hallucinated``. The answer span is the whole answer-only response.
    """

    def judge(example: Example, response: str) -> Judgement:
        gold = example.answers[0] if example.answers else None
        raw = organism_label(world, example.meta["attribute"], gold, response)
        if ood:
            label = {"abstain": "faithful", "wrong": "hallucinated"}.get(raw, "uncertain")
        else:
            label = {"correct": "faithful", "wrong": "hallucinated"}.get(raw, "uncertain")
        span = locate_answer(response, None, max_words=None) if label != "uncertain" else None
        if label != "uncertain" and span is None:
            return Judgement("uncertain", reason=f"{raw}: no answer span in {response!r}")
        return Judgement(label, span=span, reason=raw)

    return judge


def organism_source(
    model_name: str | None = None, limit: int | None = None, **_: Any
) -> QuestionSource:
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
        spans="whole",  # the organism answers with the answer only
    )
