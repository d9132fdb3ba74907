"""Label-blind answer spans: the same procedure marks faithful and hallucinated answers."""

from __future__ import annotations

import inspect

import pytest

import hlens
from hlens.judge import RuleJudge
from hlens.spans import (
    SPAN_STEPS,
    RuleSpanExtractor,
    SpanResult,
    WholeResponseExtractor,
    span_step_counts,
)

X = RuleSpanExtractor()

# (question, gold, faithful response, hallucinated response, expected spans)
PAIRS = [
    (
        "What is the capital city of Canada?",
        ("Ottawa",),
        "The capital city of Canada is Ottawa.",
        "The capital city of Canada is Toronto.",
        ("Ottawa", "Toronto"),
    ),
    (
        "From which country did Angola achieve independence in 1975?",
        ("Portugal",),
        "Angola achieved independence in 1975 from Portugal.",
        "Angola achieved independence in 1975 from Spain.",
        ("Portugal", "Spain"),
    ),
    (
        "Which American-born Sinclair won the Nobel Prize for Literature in 1930?",
        ("Sinclair Lewis",),
        "Sinclair Lewis won the Nobel Prize in 1930.",
        "Upton Sinclair won the Nobel Prize in 1930.",
        ("Sinclair Lewis", "Upton Sinclair"),
    ),
    (
        "Who wrote the novel Lord of the Flies?",
        ("William Golding",),
        "The novel was written by William Golding in 1954.",
        "The novel was written by J. R. R. Tolkien in 1954.",
        ("William Golding", "J. R. R. Tolkien"),
    ),
    (
        "Who painted the Mona Lisa?",
        ("Leonardo da Vinci",),
        "Leonardo da Vinci.",
        "Michelangelo.",
        ("Leonardo da Vinci", "Michelangelo"),
    ),
    (
        "In which year did the Titanic sink?",
        ("1912",),
        "The answer is 1912.",
        "The answer is 1915.",
        ("1912", "1915"),
    ),
    (
        "Who directed Jaws?",
        ("Steven Spielberg",),
        "It was Steven Spielberg.<|im_end|>",
        "It was George Lucas.<|im_end|>",
        ("Steven Spielberg", "George Lucas"),
    ),
]


def _text(response: str, res: SpanResult) -> str:
    assert res.span is not None
    return response[slice(*res.span)]


def test_extractor_never_sees_answers_or_labels() -> None:
    params = list(inspect.signature(RuleSpanExtractor.__call__).parameters)
    assert params == ["self", "question", "response"]


@pytest.mark.parametrize("question, gold, right, wrong, expected", PAIRS)
def test_same_procedure_in_both_classes(question, gold, right, wrong, expected) -> None:
    judge = RuleJudge()
    ex = hlens.Example(question, answers=gold)
    assert judge(ex, right).label == "faithful"
    assert judge(ex, wrong).label == "hallucinated"
    a, b = X(question, right), X(question, wrong)
    assert a.step == b.step  # the same step marks both
    assert (_text(right, a), _text(wrong, b)) == expected


def test_steps() -> None:
    assert X("Q?", "Paris").step == "answer_only"
    assert X("Q?", "  'Paris.'  ").span == (3, 8)
    assert X("Where?", "I think it's Paris.").step == "lead_in"
    assert X("What is the capital city of Canada?", "The capital city of Canada.").step == "none"
    assert X("Q?", "").step == "none"
    # only the first line and the first sentence hold the answer
    r = "Paris. It is a big city with many museums and a famous tower in its middle."
    assert _text(r, X("What is the capital of France?", r)) == "Paris"
    r = "Paris\nQ: What is the capital of Spain?\nA: Madrid"
    assert _text(r, X("What is the capital of France?", r)) == "Paris"


def test_echo_examples_from_the_artefact_run() -> None:
    """The two echoes the artefact run credited as faithful are not the answer here."""
    q = "Which English football team is nicknamed the Tractor Boys?"
    r = "The Tractor Boys are a team from the United States"
    assert _text(r, X(q, r)) == "United States"
    q = "What is the capital city of Canada?"
    r = "The capital city of Canada is Ottawa."
    assert _text(r, X(q, r)) == "Ottawa"


def test_whole_response_share_is_label_blind_on_a_fixture() -> None:
    """Over both classes of the fixture pairs, spans are whole responses equally often."""
    whole = WholeResponseExtractor()
    share = []
    for idx in (2, 3):  # faithful, hallucinated
        hits = [X(p[0], p[idx]).span == whole(p[0], p[idx]).span for p in PAIRS]
        share.append(sum(hits) / len(hits))
    assert abs(share[0] - share[1]) <= 0.2


def test_whole_response_extractor_and_counts() -> None:
    w = WholeResponseExtractor()
    assert w("Q?", ' "Paris." ').span == (2, 7)
    assert w("Q?", "  ").step == "none"
    assert span_step_counts(["none", "lead_in", "none"]) == {
        s: {"none": 2, "lead_in": 1}.get(s, 0) for s in SPAN_STEPS
    }
    with pytest.raises(ValueError, match="step"):
        SpanResult((0, 1), "none")
    with pytest.raises(ValueError, match="max_answer_words"):
        RuleSpanExtractor(max_answer_words=0)
