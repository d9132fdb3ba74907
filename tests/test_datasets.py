"""Tests for hlens.datasets: TriviaQA rows (offline) and generic QA files."""

from __future__ import annotations

import csv
import doctest
import json
from pathlib import Path

import pytest

import hlens.datasets
from hlens.datasets import load_qa_file, load_triviaqa, parse_answers, triviaqa_row_to_example

FIXTURES = Path(__file__).parent / "fixtures"


def test_doctests() -> None:
    assert doctest.testmod(hlens.datasets).failed == 0


def _rows() -> list[dict]:
    with open(FIXTURES / "triviaqa_rows.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_triviaqa_row_to_example() -> None:
    ex = triviaqa_row_to_example(_rows()[1])
    assert ex.id == "qb_202"
    assert ex.question == "Who wrote the novel 'Lord of the Flies'?"  # stripped
    assert ex.answers == (
        "William Golding",
        "Golding",
        "Sir William Golding",
        "william golding",
        "golding",
        "sir william golding",
    )
    assert ex.meta["question_source"] == "http://www.quizballs.com/"
    assert ex.response == "" and ex.label is None
    plain = triviaqa_row_to_example(_rows()[1], include_normalized=False)
    assert plain.answers == ("William Golding", "Golding", "Sir William Golding")


def test_triviaqa_row_missing_fields() -> None:
    with pytest.raises(
        ValueError, match=r"lacks \['question_id', 'answer'\]; it has \['question'\]"
    ):
        triviaqa_row_to_example({"question": "Q?"})
    ex = triviaqa_row_to_example({"question": "Q?", "question_id": 7, "answer": None})
    assert ex.id == "7" and ex.answers == ()


def test_load_triviaqa_offline(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    exs = load_triviaqa(
        data_files=str(FIXTURES / "triviaqa_rows.jsonl"), limit=2, cache_dir=str(tmp_path)
    )
    assert [e.id for e in exs] == ["tc_101", "qb_202"]
    assert exs[0].answers[0] == "Mars"
    all_rows = load_triviaqa(
        data_files=[str(FIXTURES / "triviaqa_rows.jsonl")], cache_dir=str(tmp_path)
    )
    assert all_rows[2].answers[:2] == ("Nuremberg", "Nürnberg")
    with pytest.raises(ValueError, match="limit must be"):
        load_triviaqa(limit=-1)


def test_load_triviaqa_without_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install 'hlens\\[datasets\\]'"):
        load_triviaqa()


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (["a", "b", "a"], ("a", "b")),
        ('["a", "b"]', ("a", "b")),
        ("['It\\'s a', \"b\"]", ("It's a", "b")),
        ("a | b|c", ("a", "b", "c")),
        ("single", ("single",)),
        ("", ()),
        (None, ()),
        (float("nan"), ()),
        (3, ("3",)),
        ("[not a list", ("[not a list",)),
    ],
)
def test_parse_answers(cell: object, expected: tuple[str, ...]) -> None:
    assert parse_answers(cell) == expected


def test_parse_answers_no_separator() -> None:
    assert parse_answers("a | b", sep="") == ("a | b",)


def test_load_qa_file_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [
        {"q": "Capital of France?", "gold": ["Paris"], "key": "x1", "topic": "geo"},
        {"q": "2+2?", "gold": "4|four", "key": "x2", "topic": "math"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    exs = load_qa_file(path, question_col="q", answers_col="gold", id_col="key")
    assert [(e.id, e.answers, e.meta) for e in exs] == [
        ("x1", ("Paris",), {"topic": "geo"}),
        ("x2", ("4", "four"), {"topic": "math"}),
    ]
    assert [e.id for e in load_qa_file(path, "q", "gold")] == ["0", "1"]
    assert load_qa_file(path, "q", None, limit=1)[0].answers == ()


def test_load_qa_file_csv_and_json(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answers"])
        w.writerow(["Who wrote Hamlet?", '["Shakespeare", "William Shakespeare"]'])
        w.writerow(["Ünïcode?", "ja|yes"])
    exs = load_qa_file(path)
    assert exs[0].answers == ("Shakespeare", "William Shakespeare")
    assert exs[1].question == "Ünïcode?" and exs[1].answers == ("ja", "yes")
    jpath = tmp_path / "qa.json"
    jpath.write_text(json.dumps({"data": [{"question": "Q?", "answers": ["A"]}]}))
    assert load_qa_file(jpath)[0].answers == ("A",)


def test_load_qa_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"prompt": "Q?", "answers": ["A"]}) + "\n")
    with pytest.raises(
        ValueError, match=r"no column 'question'; available columns: \['answers', 'prompt'\]"
    ):
        load_qa_file(path)
    with pytest.raises(ValueError, match="no column 'id'"):
        load_qa_file(path, question_col="prompt", id_col="id")
    path.write_text(json.dumps({"question": "  ", "answers": []}) + "\n")
    with pytest.raises(ValueError, match="empty 'question'"):
        load_qa_file(path)
    with pytest.raises(ValueError, match="unknown extension '.txt'"):
        load_qa_file(tmp_path / "qa.txt")
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match="qa.jsonl:1 is not valid JSON"):
        load_qa_file(path)
