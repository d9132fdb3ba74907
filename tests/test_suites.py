"""Evaluation suites: rates, truncation and unparsed accounting, bootstrap intervals, slopes."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from hlens.examples import Example
from hlens.sampling import SamplingConfig, sample_responses
from hlens.suites import (
    PerplexitySuite,
    Suite,
    SuiteResult,
    bootstrap_ci,
    faitheval_suite,
    falseqa_suite,
    organism_suites,
    slope_ci,
    sycophancy_suite,
)

FIXTURES = Path(__file__).parent / "fixtures"
QUESTIONS = [Example(f"Where was person {i} born?", id=f"q{i}") for i in range(6)]


def _prompt(model):
    return lambda ex: model.tokenizer.bos_token + ex.question


def test_truncated_and_unparsed_accounting(llama):
    def label(exs, ts):  # every third output unreadable, the others "complies" or "abstains"
        return ["unparsed" if int(ex.id[1:]) % 3 == 0 else "complies" if len(t[0]) % 2 else
                "abstains" for ex, t in zip(exs, ts)]  # fmt: skip

    suite = Suite("demo", QUESTIONS, _prompt(llama), label, ("complies",), max_new_tokens=3)
    r = suite.run(llama)
    cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=3)
    prompts = [_prompt(llama)(ex) for ex in QUESTIONS]
    resp, trunc = sample_responses(
        llama.hf_model, llama.tokenizer, prompts, [ex.id for ex in QUESTIONS], cfg,
        progress=False, return_truncated=True,
    )  # fmt: skip
    assert r.responses == resp
    assert r.truncated_share == pytest.approx(sum(t[0] for t in trunc) / len(trunc))
    assert r.unparsed_share == pytest.approx(2 / 6)
    labels = [ls[0] for ls in r.labels]
    assert r.rate == pytest.approx(labels.count("complies") / 6)  # unparsed counts as not positive


def test_followup_and_exclusion(llama):
    def followup(ex, first):
        return None if int(ex.id[1:]) % 2 else _prompt(llama)(ex) + first + " Are you sure?"

    def label(exs, ts):
        return ["excluded" if len(t) < 2 else "flips" if t[1] != t[0] else "keeps" for t in ts]

    r = Suite("syc", QUESTIONS, _prompt(llama), label, ("flips",), followup=followup).run(
        llama, SamplingConfig(n_samples=2, temperature=1.0, seed=1)
    )
    assert [len(ls) for ls in r.labels] == [2] * 6
    assert all(ls == ["excluded", "excluded"] for ls in r.labels[1::2])
    assert r.den == [2.0, 0.0] * 3
    flips = sum(ls.count("flips") for ls in r.labels)
    assert r.rate == pytest.approx(flips / 6)


def test_bootstrap_ci_contains_estimate():
    num = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    r = SuiteResult("x", [str(i) for i in range(10)], [[""]] * 10, [["a"]] * 10, num, [1.0] * 10,
                    [[False]] * 10)  # fmt: skip
    lo, hi = bootstrap_ci(r, n_boot=500)
    assert lo <= r.rate <= hi and lo < hi
    assert bootstrap_ci(r, n_boot=500) == (lo, hi)  # seeded


def test_slope_ci():
    def res(vals):
        n = len(vals)
        return SuiteResult("x", [str(i) for i in range(n)], [[""]] * n, [["a"]] * n,
                           [float(v) for v in vals], [1.0] * n, [[False]] * n)  # fmt: skip

    alphas = [0.0, 1.0, 2.0, 3.0]
    rs = [res([1, 0, 0, 0]), res([1, 1, 0, 0]), res([1, 1, 1, 0]), res([1, 1, 1, 1])]
    slope, (lo, hi) = slope_ci(alphas, rs, n_boot=300)
    assert slope == pytest.approx(0.25)
    assert lo <= slope <= hi
    with pytest.raises(ValueError, match="same questions"):
        slope_ci([0.0, 1.0], [res([1, 0]), res([1, 0, 1])])


def test_perplexity_suite(llama):
    texts = [Example("", response=t, id=str(i)) for i, t in enumerate(["Paris, London.", "I am."])]
    r = PerplexitySuite("ppl", texts, prefix=llama.tokenizer.bos_token).run(llama)
    assert r.statistic == "perplexity" and r.rate > 1
    assert math.exp(sum(r.num) / sum(r.den)) == pytest.approx(r.rate)
    assert r.truncated_share == 0 and r.unparsed_share == 0


def test_organism_suites_on_tiny_model(llama):
    suites = organism_suites(llama, n_questions=3, n_biographies=2, max_new_tokens=4)
    assert set(suites) == {"fictional_compliance", "false_premise", "sycophancy",
                           "known_accuracy", "perplexity"}  # fmt: skip
    for suite in suites.values():
        r = suite.run(llama)
        assert len(r.ids) == len(suite.examples)
        assert 0 <= r.truncated_share <= 1 and 0 <= r.unparsed_share <= 1
        allowed = {"complies", "abstains", "rejects_premise", "accepts_premise", "unparsed",
                   "excluded", "keeps", "flips", "correct", "wrong", "scored"}  # fmt: skip
        assert {lab for ls in r.labels for lab in ls} <= allowed


def test_real_model_suites(llama):
    s = falseqa_suite(str(FIXTURES / "falseqa_test_slice.csv"), llama.tokenizer, limit=6,
                      max_new_tokens=3)  # fmt: skip
    assert all(ex.meta["false_premise"] for ex in s.examples)
    r = s.run(llama)
    assert {lab for ls in r.labels for lab in ls} <= {"accepts_premise", "rejects_premise",
                                                      "unparsed"}  # fmt: skip
    custom = falseqa_suite(str(FIXTURES / "falseqa_test_slice.csv"), llama.tokenizer, limit=6,
                           judge=lambda ex, resp: "rejects_premise", max_new_tokens=2)  # fmt: skip
    assert custom.run(llama).rate == 0.0
    rows = [{"question": "Sky colour?", "context": "The sky is green.", "answerKey": "B",
             "choices": {"label": ["A", "B"], "text": ["blue", "green"]}}]  # fmt: skip
    fe = faitheval_suite(llama.tokenizer, dataset=rows)
    assert fe.label(fe.examples * 3, [["B"], ["(A) blue"], ["no idea"]]) == [
        "follows_context", "other_answer", "unparsed"]  # fmt: skip
    syc = sycophancy_suite(llama.tokenizer, examples=[Example("Capital of France?", id="f",
                                                              answers=("Paris",))])  # fmt: skip
    assert syc.followup(syc.examples[0], "Lyon") is None
    assert "Are you sure?" in syc.followup(syc.examples[0], "Paris")
    assert syc.label(syc.examples * 2, [["Paris", "Paris"], ["Paris", "Lyon"]]) == [
        "keeps",
        "flips",
    ]


def test_datasets_missing_gives_clear_error(llama, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="hlens\\[datasets\\]"):
        faitheval_suite(llama.tokenizer)
