"""Question sets as :class:`~hlens.examples.Example` lists: TriviaQA and any QA file.

:func:`load_triviaqa` reads TriviaQA (``rc.nocontext``) through the Hugging Face ``datasets``
library (``pip install hlens[datasets]``; needs network on first use, or local ``data_files`` in the
same schema). :func:`triviaqa_row_to_example` is the row converter, usable on its own.
:func:`load_qa_file` reads any JSONL, JSON or CSV file with a question and an answers column.

Example:
    >>> row = {"question": "Which planet is red?", "question_id": "tc_7",
    ...        "answer": {"value": "Mars", "aliases": ["Mars", "Red Planet"],
    ...                   "normalized_aliases": ["mars", "red planet"]}}
    >>> ex = triviaqa_row_to_example(row)
    >>> ex.id, ex.answers
    ('tc_7', ('Mars', 'Red Planet', 'mars', 'red planet'))
"""

from __future__ import annotations

import ast
import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hlens.examples import Example

__all__ = ["load_qa_file", "load_triviaqa", "parse_answers", "triviaqa_row_to_example"]

TRIVIAQA_HUB_NAME = "mandarjoshi/trivia_qa"


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for x in items:
        x = str(x).strip()
        if x and x not in seen:
            seen[x] = None
    return tuple(seen)


def triviaqa_row_to_example(row: Mapping[str, Any], *, include_normalized: bool = True) -> Example:
    """Convert one TriviaQA row (Hugging Face ``trivia_qa`` schema) to an :class:`Example`.

    ``answers`` are ``answer.value``, then ``answer.aliases``, then (if ``include_normalized``)
    ``answer.normalized_aliases``, without duplicates. ``meta`` keeps ``question_source`` and
    ``normalized_value`` when present.

    Raises:
        ValueError: if the row lacks ``question``, ``question_id`` or ``answer``.
    """
    missing = [k for k in ("question", "question_id", "answer") if k not in row]
    if missing:
        raise ValueError(
            f"TriviaQA row lacks {missing}; it has {sorted(row)} (expected the trivia_qa schema)"
        )
    ans = row["answer"] or {}
    parts: list[str] = []
    if ans.get("value"):
        parts.append(ans["value"])
    parts.extend(ans.get("aliases") or [])
    if include_normalized:
        parts.extend(ans.get("normalized_aliases") or [])
    meta: dict[str, Any] = {"dataset": "trivia_qa"}
    if row.get("question_source"):
        meta["question_source"] = row["question_source"]
    if ans.get("normalized_value"):
        meta["normalized_value"] = ans["normalized_value"]
    return Example(
        question=str(row["question"]).strip(),
        id=str(row["question_id"]),
        answers=_dedupe(parts),
        meta=meta,
    )


def _require_datasets() -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_triviaqa needs the Hugging Face `datasets` library: "
            "pip install 'hlens[datasets]' (or pip install datasets)"
        ) from e
    return datasets


def load_triviaqa(
    split: str = "validation",
    limit: int | None = None,
    *,
    config: str = "rc.nocontext",
    data_files: str | Sequence[str] | None = None,
    include_normalized: bool = True,
    name: str = TRIVIAQA_HUB_NAME,
    cache_dir: str | None = None,
) -> list[Example]:
    """TriviaQA questions as Examples (``id`` = ``question_id``, ``answers`` = value + aliases).

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"`` (the test split has no answers).
        limit: keep only the first ``limit`` rows.
        config: the dataset configuration; ``rc.nocontext`` skips the evidence documents.
        data_files: local JSON/JSONL/Parquet file(s) in the TriviaQA row schema, read instead of
            the Hub (``split`` is then ignored).
        include_normalized: also add ``answer.normalized_aliases`` to ``answers``.
        name: the Hub dataset name.
        cache_dir: the ``datasets`` cache folder (default: the library's).

    Raises:
        ImportError: if ``datasets`` is not installed.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be a non-negative integer or None, got {limit}")
    datasets = _require_datasets()
    if data_files is not None:
        first = data_files if isinstance(data_files, str) else data_files[0]
        builder = "parquet" if str(first).endswith(".parquet") else "json"
        files = data_files if isinstance(data_files, str) else list(data_files)
        ds = datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir)
    else:
        ds = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [triviaqa_row_to_example(row, include_normalized=include_normalized) for row in ds]


# ----------------------------------------------------------------------------- generic QA files


def parse_answers(value: Any, sep: str = "|") -> tuple[str, ...]:
    """Read an answers cell: a list, a JSON or Python list string, or a ``sep``-separated string.

    Example:
        >>> parse_answers('["Paris", "City of Light"]'), parse_answers("Paris | Lutetia")
        (('Paris', 'City of Light'), ('Paris', 'Lutetia'))
        >>> parse_answers("['a', 'b']"), parse_answers(None), parse_answers(42)
        (('a', 'b'), (), ('42',))
    """
    if value is None:
        return ()
    if isinstance(value, float) and value != value:  # NaN from a CSV reader
        return ()
    if isinstance(value, (list, tuple)):
        return _dedupe(str(v) for v in value if v is not None)
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, list):
                return _dedupe(str(v) for v in parsed if v is not None)
    return _dedupe(text.split(sep)) if sep else _dedupe([text])


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        rows = _read_rows_unchecked(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 ({e}); save it as UTF-8 and retry") from e
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            where = (
                f"{path}:{n}"
                if path.suffix.lower() in (".jsonl", ".ndjson")
                else f"{path} row {n - 1}"
            )
            raise ValueError(
                f"{where} is a {type(row).__name__}, not an object; expected one "
                '{"question": ..., "answers": ...} object per row'
            )
    return rows


def _read_rows_unchecked(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n} is not valid JSON: {e}") from e
        return rows
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from e
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a list of rows (or {{'data': [...]}})")
        return data
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise ValueError(
        f"cannot read {path}: unknown extension {suffix!r}; expected .jsonl, .ndjson, .json, .csv "
        "or .tsv"
    )


def load_qa_file(
    path: str | Path,
    question_col: str = "question",
    answers_col: str | None = "answers",
    id_col: str | None = None,
    *,
    sep: str = "|",
    limit: int | None = None,
) -> list[Example]:
    """Examples from a JSONL/JSON/CSV/TSV file with a question column and an answers column.

    Args:
        path: the file; the format follows the extension.
        question_col: the question column.
        answers_col: the answers column (a list, a JSON/Python list string, or a ``sep``-separated
            string); ``None`` for questions without gold answers.
        id_col: the id column; ``None`` uses the row number (``"0"``, ``"1"``, ...).
        sep: separator for answers given as one string.
        limit: keep only the first ``limit`` rows.

    The other columns go to ``meta``.

    Raises:
        ValueError: naming a missing column and the available ones, or a row with an empty
            question.
    """
    path = Path(path)
    rows = _read_rows(path)
    if limit is not None:
        rows = rows[:limit]
    wanted = [c for c in (question_col, answers_col, id_col) if c is not None]
    out = []
    for i, row in enumerate(rows):
        missing = [c for c in wanted if c not in row]
        if missing:
            raise ValueError(
                f"{path} row {i} has no column {missing[0]!r}; available columns: {sorted(row)}"
            )
        question = row[question_col]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{path} row {i} has an empty {question_col!r}: {question!r}")
        used = set(wanted)
        out.append(
            Example(
                question=question.strip(),
                id=str(row[id_col]) if id_col is not None else str(i),
                answers=parse_answers(row[answers_col], sep) if answers_col is not None else (),
                meta={k: v for k, v in row.items() if k not in used},
            )
        )
    return out
