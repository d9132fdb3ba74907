"""Tests for hlens.judge: normalisation, rule judge, pluggable judges, consistency filter, spans."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import hlens.judge
from hlens.examples import Example
from hlens.judge import (
    ConsistencyResult,
    Funnel,
    Judge,
    Judgement,
    RuleJudge,
    attach_answer_spans,
    consistency_filter,
    find_refusal,
    judge_from_callable,
    locate_answer,
    normalize_answer,
    strip_end_tokens,
    to_label,
)

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "reproductions"


def ex(*answers: str, question: str = "q?") -> Example:
    return Example(question=question, answers=answers, id="q1")


def test_doctests() -> None:
    assert doctest.testmod(hlens.judge).failed == 0


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Beatles", "beatles"),
        ("  A   tale of   two cities!  ", "tale of two cities"),
        ("an apple", "apple"),
        ("Theatre", "theatre"),  # "the" inside a word is not an article
        ("O'Neill", "o neill"),
        ("Eugene O’Neill", "eugene o neill"),  # curly apostrophe is punctuation
        ("“Suspicious Minds”", "suspicious minds"),
        ("Göring", "goring"),
        ("Jóhanna Sigurðardóttir", "johanna sigurdardottir"),
        ("Łódź", "lodz"),
        ("Teflon™", "teflon"),
        ("212°F", "212 f"),
        ("snake_case", "snake case"),
        ("ﬁsh", "fish"),  # compatibility ligature
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


# ----------------------------------------------------------------------------- rule judge


def test_faithful_exact_and_contained() -> None:
    judge = RuleJudge()
    assert judge(ex("York"), "York").label == "faithful"
    assert judge(ex("York"), "york.").label == "faithful"
    j = judge(ex("Sinclair Lewis"), "The answer is Sinclair Lewis.")
    assert j.label == "faithful" and j.alias == "Sinclair Lewis"
    assert "The answer is Sinclair Lewis."[slice(*j.span)] == "Sinclair Lewis"


def test_answer_at_the_end_and_start() -> None:
    judge = RuleJudge()
    r = "It was written by Golding"
    assert r[slice(*judge(ex("golding"), r).span)] == "Golding"
    r = "Golding wrote it"
    assert judge(ex("golding"), r).span == (0, 7)


def test_alias_inside_longer_word_does_not_match() -> None:
    judge = RuleJudge()
    assert judge(ex("4"), "40").label == "hallucinated"
    assert judge(ex("L"), "Hollywood").label == "hallucinated"
    assert judge(ex("John Paul I"), "John Paul II").label == "hallucinated"
    assert judge(ex("York"), "Yorkshire").label == "hallucinated"
    # ...but the official substring rule does match
    assert RuleJudge(match="substring")(ex("4"), "40").label == "faithful"


def test_exact_mode() -> None:
    judge = RuleJudge(match="exact")
    assert judge(ex("Paris"), "paris!").label == "faithful"
    assert judge(ex("Paris"), "Paris, France").label == "hallucinated"


def test_articles_and_punctuation_ignored() -> None:
    judge = RuleJudge()
    assert judge(ex("The Panama Canal"), "Panama canal.").label == "faithful"
    assert judge(ex("Panama Canal"), "the Panama Canal").label == "faithful"
    assert judge(ex("Dr. Leonard McCoy"), "Dr Leonard McCoy").label == "faithful"


def test_unicode_answers() -> None:
    judge = RuleJudge()
    assert judge(ex("Nuremberg", "Nürnberg"), "Nurnberg").label == "faithful"
    j = judge(ex("Hermann Goring"), "It was Hermann Göring.")
    assert j.label == "faithful"
    assert "It was Hermann Göring."[slice(*j.span)] == "Hermann Göring"
    assert judge(ex("Teflon"), "Teflon™").label == "faithful"


def test_longest_alias_wins() -> None:
    j = RuleJudge()(ex("York", "New York City"), "New York City")
    assert j.alias == "New York City" and j.span == (0, 13)


def test_empty_response_and_empty_aliases() -> None:
    judge = RuleJudge()
    j = judge(ex("York"), "")
    assert j.label == "hallucinated" and j.reason == "empty response"
    assert judge(ex(""), "anything").label == "hallucinated"  # an empty alias never matches
    assert judge(ex(), "York").label == "hallucinated"


@pytest.mark.parametrize(
    "response",
    [
        "I don't know.",
        "I don’t know",
        "I'm not sure, but maybe Paris.",
        "I cannot answer that.",
        "Unknown",
        "unknown.",
        "No information is available.",
        "I have no idea",
    ],
)
def test_refusals_are_uncertain(response: str) -> None:
    assert RuleJudge()(ex("Paris"), response).label == "uncertain"


def test_refusal_words_inside_answers_are_not_refusals() -> None:
    judge = RuleJudge()
    assert judge(ex("Tomb of the Unknown Soldier"), "The Tomb of the Unknown Soldier").label == (
        "faithful"
    )
    assert find_refusal("Cannonball") is None
    assert find_refusal("Unknown Pleasures") is None
    # a whole-response abstention that is the gold answer is judged on content
    assert judge(ex("Unknown"), "Unknown").label == "faithful"


def test_refusal_detection_can_be_disabled() -> None:
    judge = RuleJudge(refusal_phrases=(), abstention_answers=())
    assert judge(ex("Paris"), "I don't know, Paris?").label == "faithful"


def test_bad_match_mode() -> None:
    # ValueError from __post_init__; under the test suite's beartype hook the Literal annotation
    # is checked first and raises a TypeError subclass.
    with pytest.raises((ValueError, TypeError)):
        RuleJudge(match="fuzzy")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- pluggable judges


def test_rule_judge_is_a_judge() -> None:
    assert isinstance(RuleJudge(), Judge)


def test_judge_from_callable() -> None:
    calls = []

    def llm(question: str, response: str, answers: tuple[str, ...]) -> str:
        calls.append((question, response, answers))
        return " TRUE " if response == "4" else "f"

    judge = judge_from_callable(llm)
    assert judge(ex("4", question="2+2?"), "4").label == "faithful"
    assert judge(ex("4", question="2+2?"), "5").label == "hallucinated"
    assert calls[0] == ("2+2?", "4", ("4",))
    bad = judge_from_callable(lambda q, r, a: "maybe")
    with pytest.raises(ValueError, match="cannot read the judge label 'maybe'"):
        bad(ex("4"), "4")


def test_to_label() -> None:
    assert to_label("true") == "faithful"
    assert to_label("False") == "hallucinated"
    assert to_label("uncertain") == "uncertain"
    with pytest.raises(ValueError, match="expected one of"):
        to_label("error")


def test_judgement_round_trip_and_validation() -> None:
    j = Judgement("faithful", alias="York", span=(3, 7), reason="word match")
    assert Judgement.from_dict(json.loads(json.dumps(j.to_dict()))) == j
    with pytest.raises((ValueError, TypeError)):
        Judgement("correct")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="span"):
        Judgement("faithful", span=(5, 5))


# ----------------------------------------------------------------------------- consistency filter


def test_consistency_filter_funnel() -> None:
    samples = {
        "all_t": ["true"] * 10,
        "all_f": ["false"] * 10,
        "all_h": ["hallucinated"] * 10,
        "mixed": ["true"] * 9 + ["false"],
        "unc": ["true"] * 9 + ["uncertain"],
        "unc_mixed": ["true", "false", "uncertain"] + ["true"] * 7,
        "short": ["true"] * 3,
    }
    r = consistency_filter(samples, n_samples=10)
    assert r.kept == {"all_t": "faithful", "all_f": "hallucinated", "all_h": "hallucinated"}
    assert r.faithful_ids == ["all_t"] and r.hallucinated_ids == ["all_f", "all_h"]
    assert r.funnel == Funnel(
        n_questions=7,
        n_consistent_faithful=1,
        n_consistent_hallucinated=2,
        n_mixed=1,
        n_with_uncertain=2,
        n_incomplete=1,
    )
    assert r.funnel.n_kept == 3
    assert ConsistencyResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_consistency_filter_errors() -> None:
    with pytest.raises(ValueError, match="has 3 labels but n_samples=2"):
        consistency_filter({"q": ["true"] * 3}, n_samples=2)
    with pytest.raises(ValueError, match="cannot read the judge label"):
        consistency_filter({"q": ["yes-ish"]})
    assert consistency_filter({"q": []}).funnel.n_incomplete == 1


# ----------------------------------------------------------------------------- spans


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("Paris", "Paris"),
        ("  Paris.  ", "Paris"),
        ("Paris.</s>", "Paris"),
        ("Paris<|eot_id|>", "Paris"),
        ("Paris.<end_of_turn>\n", "Paris"),
        ('"Love Hangover"', "Love Hangover"),
        ("“Suspicious Minds”.", "Suspicious Minds"),
        ("Washington, D.C.", "Washington, D.C"),
    ],
)
def test_locate_answer_only_responses(response: str, answer: str) -> None:
    span = locate_answer(response)
    assert span is not None and response[span[0] : span[1]] == answer


def test_locate_answer_with_aliases_and_judgement() -> None:
    r = "I believe it was Sinclair Lewis, in 1930."
    assert r[slice(*locate_answer(r, ["sinclair lewis"]))] == "Sinclair Lewis"
    assert locate_answer(r, Judgement("faithful", span=(17, 31))) == (17, 31)
    # no alias match in a long response: no span rather than a wrong one
    assert locate_answer(r, ["hemingway"], max_words=5) is None


def test_locate_answer_nothing_to_find() -> None:
    assert locate_answer("") is None
    assert locate_answer("  .  </s>") is None
    assert locate_answer("word " * 20) is None
    assert locate_answer("word " * 20, max_words=None) == (0, 99)


def test_locate_answer_extractor() -> None:
    assert locate_answer("Answer: Rome", extractor=lambda r: (8, 12)) == (8, 12)
    # an extractor that finds nothing falls back to the rules
    assert locate_answer("Rome", extractor=lambda r: None) == (0, 4)
    with pytest.raises(ValueError, match="span extractor returned"):
        locate_answer("Rome", extractor=lambda r: (0, 50))


def test_strip_end_tokens() -> None:
    assert strip_end_tokens("Rome</s></s> \n") == "Rome"
    assert strip_end_tokens("Rome <|im_end|><|endoftext|>") == "Rome"


def test_attach_answer_spans_reports_skips() -> None:
    exs = [
        Example(question="q", response="York", id="ok", answers=("york",)),
        Example(question="q", response="Leeds.", id="wrong", answers=("york",)),
        Example(question="q", response="I'm not sure.", id="unc", answers=("york",)),
        Example(question="q", response="word " * 30, id="long", answers=("york",)),
    ]
    kept, skipped = attach_answer_spans(exs, judge=RuleJudge())
    assert [(e.id, e.label, e.answer_text) for e in kept] == [
        ("ok", "faithful", "York"),
        ("wrong", "hallucinated", "Leeds"),
    ]
    assert kept[0].meta["matched_alias"] == "york"
    reasons = {s.id: s.reason for s in skipped}
    assert reasons["unc"].startswith("uncertain")
    assert "cannot locate" in reasons["long"]
    # without a judge the existing labels are used; unlabelled examples are skipped
    kept, skipped = attach_answer_spans([exs[0].replace(label="faithful"), exs[1]])
    assert [e.id for e in kept] == ["ok"] and skipped[0].reason == "no label and no judge"


# ----------------------------------------------------------------------------- recorded labels


def _agreement(path: Path) -> tuple[int, int]:
    judge = RuleJudge()
    agree = total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            ((qid, rec),) = json.loads(line).items()
            example = Example(question=rec["question"], answers=tuple(rec["ground_truth"]), id=qid)
            for response, recorded in zip(rec["responses"], rec["judges"]):
                total += 1
                agree += judge(example, response).label == to_label(recorded)
    return agree, total


def test_agreement_with_recorded_labels_on_slice() -> None:
    agree, total = _agreement(FIXTURES / "gemma3_consistency_slice.jsonl")
    assert total == 2000
    assert agree / total >= 0.99  # measured: 1997 / 2000


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="shared data folder not present")
def test_agreement_with_recorded_labels_full() -> None:
    agree, total = _agreement(SHARED / "gemma3_4b_consistency_samples.jsonl")
    assert total == 35000
    assert agree / total >= 0.97  # measured: 34838 / 35000 = 99.54%


# ----------------------------------------------------------------------------- echoes


def test_echo_aware_judge_does_not_credit_aliases_copied_from_the_question() -> None:
    """The artefact run's "faithful by echo" cases are hallucinated here, and official mode
    keeps the old rule for comparison."""
    ex = Example(
        question="Which English football team is nicknamed the Tractor Boys?",
        answers=("Ipswich Town", "Tractor Boys", "Ipswich Town F.C."),
    )
    r = "The Tractor Boys are a team from the United States"
    assert RuleJudge()(ex, r).label == "uncertain"  # never faithful; dropped by consistency
    assert RuleJudge()(ex, r).reason == "only an alias copied from the question"
    assert RuleJudge.official()(ex, r).label == "faithful"
    assert RuleJudge()(ex, "Ipswich Town, the Tractor Boys.").label == "faithful"
    ex = Example(
        "What is the capital city of Canada?", answers=("Ottawa", "capital city of Canada")
    )
    j = RuleJudge()(ex, "The capital city of Canada is Ottawa.")
    assert (j.label, j.alias) == ("faithful", "Ottawa")  # credited for Ottawa, not the echo
    # wrong, but what it matched is the echo: never faithful, dropped by the consistency filter
    assert RuleJudge()(ex, "The capital city of Canada is Toronto.").label == "uncertain"
    assert RuleJudge()(ex, "Toronto.").label == "hallucinated"


def test_echo_aware_judge_keeps_choices_between_named_options() -> None:
    """ "Who was born first, A or B?": answering "A" chooses an alias, it does not copy it."""
    ex = Example("Who was born first, Susan Sarandon or Glenn Close?", answers=("Susan Sarandon",))
    assert RuleJudge()(ex, "Susan Sarandon.").label == "faithful"
    assert RuleJudge()(ex, "Glenn Close").label == "hallucinated"
    # a sentence naming both options: string rules cannot tell a copy from a choice
    assert RuleJudge()(ex, "Susan Sarandon was born before Glenn Close.").label == "uncertain"
    assert RuleJudge.official()(ex, "Susan Sarandon was born before Glenn Close.").label == (
        "faithful"
    )


def test_echo_check_sees_plurals() -> None:
    ex = Example("What is the common name for abdominal thrusts?",
                 answers=("Heimlich manoeuvre", "abdominal thrust"))  # fmt: skip
    assert RuleJudge()(ex, "It is the abdominal thrust.").label == "uncertain"
    assert RuleJudge()(ex, "The Heimlich manoeuvre.").label == "faithful"
