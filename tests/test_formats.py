"""Tests for hlens.formats: official H-Neurons files <-> Examples."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import hlens.formats
from hlens.examples import Example
from hlens.formats import (
    OFFICIAL_SUFFIX,
    AnswerTokensRecord,
    ConsistencyRecord,
    answer_tokens_to_examples,
    consistency_labels,
    consistency_to_examples,
    decode_token_strings,
    examples_to_answer_tokens,
    examples_to_consistency,
    qids_to_labels,
    read_answer_tokens,
    read_consistency_samples,
    read_qids,
    write_answer_tokens,
    write_consistency_samples,
    write_qids,
)
from hlens.judge import consistency_filter

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hneurons_official_examples"


def test_doctests() -> None:
    assert doctest.testmod(hlens.formats).failed == 0


# ----------------------------------------------------------------------------- consistency


def test_consistency_round_trip_is_byte_identical(tmp_path: Path) -> None:
    src = FIXTURES / "gemma3_consistency_slice.jsonl"
    records = read_consistency_samples(src)
    assert len(records) == 200 and records[0].qid == "tc_1"
    examples = consistency_to_examples(records)
    assert len(examples) == 2000
    first = examples[0]
    assert first.id == "tc_1" and first.meta["sample"] == 0
    assert not first.question.endswith(OFFICIAL_SUFFIX)
    assert first.meta["instruction_suffix"] == " " + OFFICIAL_SUFFIX
    assert first.label == "hallucinated" and first.meta["judge"] == "false"
    assert "Sinclair Lewis" in first.answers
    out = tmp_path / "c.jsonl"
    write_consistency_samples(examples_to_consistency(examples), out)
    assert out.read_bytes() == src.read_bytes()


def test_consistency_labels_feed_the_filter() -> None:
    records = read_consistency_samples(FIXTURES / "gemma3_consistency_slice.jsonl")
    result = consistency_filter(consistency_labels(records), n_samples=10)
    f = result.funnel
    assert f.n_questions == 200
    assert f.n_consistent_faithful + f.n_consistent_hallucinated + f.n_mixed == 200


def test_examples_to_consistency_from_labels() -> None:
    exs = [
        Example(question="Q?", response="a", id="q", label="faithful", meta={"sample": 1}),
        Example(question="Q?", response="b", id="q", label="uncertain", meta={"sample": 0}),
    ]
    (rec,) = examples_to_consistency(exs)
    assert rec.responses == ["b", "a"] and rec.judges == ["uncertain", "true"]
    assert rec.question == "Q? " + OFFICIAL_SUFFIX
    (rec,) = examples_to_consistency(exs, suffix=None)
    assert rec.question == "Q?"
    with pytest.raises(ValueError, match="has no id"):
        examples_to_consistency([Example(question="Q?", label="faithful")])
    with pytest.raises(ValueError, match="neither a label"):
        examples_to_consistency([Example(question="Q?", id="x")])


def test_unreadable_judge_gives_no_label() -> None:
    rec = ConsistencyRecord("q", "Q?", ["x"], ["error"], ["y"])
    (ex,) = consistency_to_examples([rec])
    assert ex.label is None and ex.meta["judge"] == "error"
    assert examples_to_consistency([ex])[0] == rec


def test_bad_consistency_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 responses but 2 judges"):
        ConsistencyRecord("q", "Q?", ["a", "b", "c"], ["true", "false"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"a": {"question": "Q"}, "b": {}}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: each consistency_samples line"):
        read_consistency_samples(bad)
    bad.write_text(json.dumps({"a": {"question": "Q", "responses": []}}) + "\n")
    with pytest.raises(ValueError, match=r"lacks \['judges'\]"):
        read_consistency_samples(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_consistency_samples(bad)


# ----------------------------------------------------------------------------- token strings


@pytest.mark.parametrize(
    ("tokens", "text"),
    [
        (["Top", "ĠGear"], "Top Gear"),
        (["H", "ermann", "ĠGÃ¶r", "ing"], "Hermann Göring"),
        (["Â£", "2", "0"], "£20"),
        (["Leo", "Å¡", "ĠJan", "Ã¡", "Äįek"], "Leoš Janáček"),
        (["a", "Ċ", "b"], "a\nb"),
        (["▁Top", "▁Ge", "ar"], " Top Gear"),
        (["▁caf", "<0xC3>", "<0xA9>"], " café"),
        (["naïve", " word"], "naïve word"),  # not byte-level: joined as plain text
        ([], ""),
    ],
)
def test_decode_token_strings(tokens: list[str], text: str) -> None:
    decoded, spans = decode_token_strings(tokens)
    assert decoded == text
    assert len(spans) == len(tokens)
    if spans:
        assert spans[0][0] == 0 and spans[-1][1] == len(text)


def test_decode_token_split_inside_a_character() -> None:
    # "é" is two bytes; a token boundary between them gives the character to both tokens
    text, spans = decode_token_strings(["caf", "Ã", "©"])
    assert text == "café"
    assert spans == [(0, 3), (3, 4), (3, 4)]


# ----------------------------------------------------------------------------- answer tokens


def rec(response: str, toks: list[str], ans: list[str], qid: str = "q") -> AnswerTokensRecord:
    return AnswerTokensRecord(qid, "Q? " + OFFICIAL_SUFFIX, response, toks, ans)


def test_answer_tokens_spans() -> None:
    records = [
        rec("Quince.", ["Qu", "ince", "."], ["Qu", "ince"], "a"),
        rec("Hermann Göring", ["H", "ermann", "ĠGÃ¶r", "ing"], ["ĠGÃ¶r", "ing"], "b"),
        rec("It is Top Gear", ["It", "Ġis", "ĠTop", "ĠGear"], ["ĠTop", "ĠGear"], "c"),
    ]
    exs, skipped = answer_tokens_to_examples(records, labels={"a": "faithful"})
    assert skipped == []
    assert [e.answer_text for e in exs] == ["Quince", "Göring", "Top Gear"]
    assert exs[0].label == "faithful" and exs[1].label is None
    assert exs[0].question == "Q?"


def test_answer_tokens_unconvertible_are_reported() -> None:
    records = [
        rec("Schindler's Ark", ["Sch", "ind", "ler", "'s", "ĠArk"], [], "empty"),
        rec("Paris", ["Paris"], ["Rome"], "absent"),
        rec("Russia, China", ["Russia", ",", "ĠChina"], ["Russia", "ĠChina"], "gap"),
        rec("Paris", ["Par", "is", "Ġ"], ["Ġ"], "blank"),
        rec("Lyon", ["Paris"], ["Paris"], "mismatch"),
    ]
    exs, skipped = answer_tokens_to_examples(records)
    assert exs == []
    reasons = {s.id: s.reason for s in skipped}
    assert reasons["empty"] == "answer_tokens is empty"
    assert "not a sub-list" in reasons["absent"]
    assert "not contiguous" in reasons["gap"]
    assert "not found in the response" in reasons["mismatch"]
    assert set(reasons) == {"empty", "absent", "gap", "blank", "mismatch"}
    (ex,), _ = answer_tokens_to_examples(records[2:3], non_contiguous="cover")
    assert ex.answer_text == "Russia, China" and ex.meta["answer_span_covers_gaps"]


def test_answer_tokens_response_differs_from_decoded_text() -> None:
    # tokens decode to " Paris" but the stored response was stripped: the answer is searched for
    (ex,), skipped = answer_tokens_to_examples([rec("Paris", ["ĠParis"], ["ĠParis"])])
    assert skipped == [] and ex.answer_span == (0, 5)


def test_answer_tokens_fixture_round_trip(tmp_path: Path) -> None:
    src = FIXTURES / "official_answer_tokens_slice.jsonl"
    records = read_answer_tokens(src)
    labels = qids_to_labels(read_qids(FIXTURES / "official_qids_slice.json"))
    exs, skipped = answer_tokens_to_examples(records, labels=labels)
    assert len(exs) + len(skipped) == len(records)
    assert all(s.reason for s in skipped)
    assert any(e.label == "hallucinated" for e in exs)
    for e in exs:  # the span's text is what the answer tokens decode to, without outer spaces
        decoded, _ = decode_token_strings(e.meta["answer_tokens"])
        if not e.meta.get("answer_span_covers_gaps"):
            assert e.answer_text == decoded.strip()
    back, skipped_back = examples_to_answer_tokens(exs)
    assert skipped_back == []
    by_id = {r.qid: r for r in records}
    assert all(by_id[r.qid] == r for r in back)
    out = tmp_path / "a.jsonl"
    write_answer_tokens(records, out)
    assert out.read_bytes() == src.read_bytes()


def test_examples_to_answer_tokens_with_tokenizer() -> None:
    def tokenize(text: str) -> list[str]:  # a toy byte-level tokenizer: words with "Ġ" prefix
        words = text.split(" ")
        return [words[0]] + ["Ġ" + w for w in words[1:]]

    ex = Example(question="Q?", response="It is Top Gear", id="q").with_answer("Top Gear")
    (r,), skipped = examples_to_answer_tokens([ex], tokenize=tokenize)
    assert skipped == []
    assert r.tokenized_response == ["It", "Ġis", "ĠTop", "ĠGear"]
    assert r.answer_tokens == ["ĠTop", "ĠGear"]
    assert r.question == "Q? " + OFFICIAL_SUFFIX
    (back,), _ = answer_tokens_to_examples([r])
    assert back.answer_span == ex.answer_span
    _, skipped = examples_to_answer_tokens([ex])
    assert "no tokenize" in skipped[0].reason
    _, skipped = examples_to_answer_tokens([Example(question="Q?", response="x", id="q")])
    assert "answer_span" in skipped[0].reason
    _, skipped = examples_to_answer_tokens([ex], tokenize=lambda t: ["other"])
    assert "do not decode" in skipped[0].reason


# ----------------------------------------------------------------------------- qid files


def test_qids_round_trip(tmp_path: Path) -> None:
    qids = read_qids(FIXTURES / "official_qids_slice.json")
    out = tmp_path / "q.json"
    write_qids(qids, out)
    assert read_qids(out) == qids
    labels = qids_to_labels(qids)
    assert set(labels.values()) == {"faithful", "hallucinated"}


def test_bad_qids(tmp_path: Path) -> None:
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps({"true": [], "false": []}))
    with pytest.raises(ValueError, match=r"keys \['f', 't'\], got \['false', 'true'\]"):
        read_qids(bad)
    with pytest.raises(ValueError, match="both faithful and hallucinated"):
        qids_to_labels({"t": ["a"], "f": ["a"]})
    with pytest.raises(ValueError, match="must have keys"):
        write_qids({"t": []}, bad)


@pytest.mark.skipif(not SHARED.exists(), reason="shared data folder not present")
@pytest.mark.parametrize("model", ["Llama33", "Mistral24b"])
def test_official_files_convert(model: str, tmp_path: Path) -> None:
    src = SHARED / f"{model}_TriviaQA_answer_tokens_test.jsonl"
    records = read_answer_tokens(src)
    assert all(decode_token_strings(r.tokenized_response)[0] == r.response for r in records)
    exs, skipped = answer_tokens_to_examples(records)
    assert len(exs) / len(records) > 0.95  # the rest: empty or gapped official answer tokens
    assert {s.reason.split(" (")[0] for s in skipped} <= {
        "answer_tokens is empty",
        "answer_tokens are not contiguous",
    }
    out = tmp_path / "a.jsonl"
    write_answer_tokens(records, out)
    assert out.read_bytes() == src.read_bytes()
    qid_file = SHARED / f"{model}_TriviaQA_test_qids.json"
    write_qids(read_qids(qid_file), tmp_path / "q.json")
    assert (tmp_path / "q.json").read_bytes() == qid_file.read_bytes()
