"""Readers and writers for the official H-Neurons file formats (thunlp/H-Neurons).

Three formats, all keyed by TriviaQA question id (``qid``):

* ``consistency_samples.jsonl``: one ``{qid: {question, responses, judges, ground_truth}}`` object
  per line; ``judges`` are ``"true"``, ``"false"`` or ``"uncertain"`` per sampled response.
* ``answer_tokens.jsonl``: one ``{qid: {response, tokenized_response, answer_tokens, question}}``
  object per line; tokens are the tokenizer's token *strings* (byte-level ``"ĠGear"`` or
  SentencePiece ``"▁Gear"``), and ``answer_tokens`` is the sub-list of tokens that form the answer.
* qid files: ``{"t": [...], "f": [...]}``, the faithful (``t``) and hallucinated (``f``) question
  ids of one split. The official train and test qid files are drawn independently and overlap;
  :mod:`hlens.splits` makes disjoint ones.

Official questions end with the instruction suffix :data:`OFFICIAL_SUFFIX`; on reading it is moved
from ``Example.question`` to ``meta["instruction_suffix"]`` (``""`` when absent) and restored on
writing, so files round-trip byte for byte. Examples without that key get the suffix appended.

The official pipeline finds answer tokens by matching decoded token strings. hlens instead keeps a
character span (``Example.answer_span``): :func:`answer_tokens_to_examples` decodes the token
strings to text with character offsets and maps the answer tokens to a span, reporting every
record it cannot convert.

Example:
    >>> rec = AnswerTokensRecord("qw_1", "Which show? " + OFFICIAL_SUFFIX, "Top Gear",
    ...                          ["Top", "ĠGear"], ["ĠGear"])
    >>> (ex,), skipped = answer_tokens_to_examples([rec])
    >>> ex.question, ex.answer_text, skipped
    ('Which show?', 'Gear', [])
    >>> examples_to_answer_tokens([ex])[0] == [rec]
    True
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hlens.examples import Example, Label
from hlens.judge import SkippedExample, to_label

__all__ = [
    "OFFICIAL_JUDGE",
    "OFFICIAL_SUFFIX",
    "AnswerTokensRecord",
    "ConsistencyRecord",
    "answer_tokens_to_examples",
    "consistency_labels",
    "consistency_to_examples",
    "decode_token_strings",
    "examples_to_answer_tokens",
    "examples_to_consistency",
    "qids_to_labels",
    "read_answer_tokens",
    "read_consistency_samples",
    "read_qids",
    "write_answer_tokens",
    "write_consistency_samples",
    "write_qids",
]

#: The instruction the official pipeline appends (after one space) to every TriviaQA question.
OFFICIAL_SUFFIX = "Respond with the answer only, without any explanation."

#: hlens label -> the official ``judges`` spelling.
OFFICIAL_JUDGE: dict[str, str] = {
    "faithful": "true",
    "hallucinated": "false",
    "uncertain": "uncertain",
}


# ----------------------------------------------------------------------------- records


@dataclass
class ConsistencyRecord:
    """One question of a ``consistency_samples.jsonl`` file."""

    qid: str
    question: str
    responses: list[str]
    judges: list[str]
    ground_truth: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.responses) != len(self.judges):
            raise ValueError(
                f"consistency record {self.qid!r} has {len(self.responses)} responses but "
                f"{len(self.judges)} judges; expected one judge per response"
            )

    def to_official(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if k != "qid"}
        return {self.qid: body}

    @classmethod
    def from_official(cls, obj: Mapping[str, Any]) -> ConsistencyRecord:
        qid, body = _single_item(obj, "consistency_samples")
        _require_keys(body, ("question", "responses", "judges"), qid)
        for key in ("responses", "judges"):
            if not isinstance(body[key], list):
                raise ValueError(
                    f"record {qid!r}: {key!r} must be a list of strings, got "
                    f"{type(body[key]).__name__}"
                )
        return cls(
            qid=qid,
            question=body["question"],
            responses=list(body["responses"]),
            judges=[str(j) for j in body["judges"]],
            ground_truth=list(body.get("ground_truth", [])),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsistencyRecord:
        return cls(**d)


@dataclass
class AnswerTokensRecord:
    """One question of an ``answer_tokens.jsonl`` file."""

    qid: str
    question: str
    response: str
    tokenized_response: list[str]
    answer_tokens: list[str]

    def to_official(self) -> dict[str, Any]:
        body = {
            "response": self.response,
            "tokenized_response": list(self.tokenized_response),
            "answer_tokens": list(self.answer_tokens),
            "question": self.question,
        }
        return {self.qid: body}

    @classmethod
    def from_official(cls, obj: Mapping[str, Any]) -> AnswerTokensRecord:
        qid, body = _single_item(obj, "answer_tokens")
        _require_keys(body, ("question", "response", "tokenized_response", "answer_tokens"), qid)
        return cls(
            qid=qid,
            question=body["question"],
            response=body["response"],
            tokenized_response=list(body["tokenized_response"]),
            answer_tokens=list(body["answer_tokens"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnswerTokensRecord:
        return cls(**d)


def _single_item(obj: Mapping[str, Any], fmt: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, Mapping) or len(obj) != 1:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(f"each {fmt} line must be one {{qid: record}} object, got keys {keys}")
    ((qid, body),) = obj.items()
    if not isinstance(body, Mapping):
        raise ValueError(f"{fmt} record {qid!r} must be an object, got {type(body).__name__}")
    return str(qid), dict(body)


def _require_keys(body: Mapping[str, Any], keys: Sequence[str], qid: str) -> None:
    missing = [k for k in keys if k not in body]
    if missing:
        raise ValueError(f"record {qid!r} lacks {missing}; it has {sorted(body)}")


def _read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not valid JSON: {e}") from e


def _write_jsonl(objs: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for obj in objs:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def read_consistency_samples(path: str | Path) -> list[ConsistencyRecord]:
    """Read an official ``consistency_samples.jsonl`` file."""
    out = []
    for n, obj in _read_jsonl(path):
        try:
            out.append(ConsistencyRecord.from_official(obj))
        except (TypeError, ValueError) as e:  # TypeError: a field of the wrong type
            raise ValueError(f"{path}:{n}: {e}") from e
    return out


def write_consistency_samples(records: Iterable[ConsistencyRecord], path: str | Path) -> None:
    """Write records in the official ``consistency_samples.jsonl`` layout."""
    _write_jsonl((r.to_official() for r in records), path)


def read_answer_tokens(path: str | Path) -> list[AnswerTokensRecord]:
    """Read an official ``answer_tokens.jsonl`` file."""
    out = []
    for n, obj in _read_jsonl(path):
        try:
            out.append(AnswerTokensRecord.from_official(obj))
        except (TypeError, ValueError) as e:  # TypeError: a field of the wrong type
            raise ValueError(f"{path}:{n}: {e}") from e
    return out


def write_answer_tokens(records: Iterable[AnswerTokensRecord], path: str | Path) -> None:
    """Write records in the official ``answer_tokens.jsonl`` layout."""
    _write_jsonl((r.to_official() for r in records), path)


# ----------------------------------------------------------------------------- qid files


def read_qids(path: str | Path) -> dict[str, list[str]]:
    """Read an official ``{"t": [...], "f": [...]}`` qid file.

    Note that the official train and test qid files overlap (they are drawn independently).
    """
    with open(path, encoding="utf-8") as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict) or set(obj) != {"t", "f"}:
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path} must hold an object with keys ['f', 't'], got {got}")
    return {"t": [str(q) for q in obj["t"]], "f": [str(q) for q in obj["f"]]}


def write_qids(qids: Mapping[str, Sequence[str]], path: str | Path) -> None:
    """Write ``{"t": [...], "f": [...]}`` (faithful, hallucinated ids) like the official files."""
    if set(qids) != {"t", "f"}:
        raise ValueError(f"qids must have keys ['f', 't'], got {sorted(qids)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"t": list(qids["t"]), "f": list(qids["f"])}, f, indent=4, ensure_ascii=False)


def qids_to_labels(qids: Mapping[str, Sequence[str]]) -> dict[str, Label]:
    """``{"t": [...], "f": [...]}`` -> ``{qid: "faithful" | "hallucinated"}``.

    Example:
        >>> qids_to_labels({"t": ["a"], "f": ["b"]})
        {'a': 'faithful', 'b': 'hallucinated'}
    """
    both = set(qids["t"]) & set(qids["f"])
    if both:
        raise ValueError(f"{len(both)} qids are both faithful and hallucinated: {sorted(both)[:5]}")
    out: dict[str, Label] = dict.fromkeys(qids["t"], "faithful")
    out.update(dict.fromkeys(qids["f"], "hallucinated"))
    return out


# ----------------------------------------------------------------------------- questions


def _split_suffix(question: str, suffix: str) -> tuple[str, str]:
    if suffix and question.endswith(suffix):
        head = question[: -len(suffix)]
        body = head.rstrip()
        return body, question[len(body) :]
    return question, ""


def _join_suffix(ex: Example, suffix: str | None) -> str:
    if "instruction_suffix" in ex.meta:
        return ex.question + str(ex.meta["instruction_suffix"])
    if suffix and not ex.question.endswith(suffix):
        return f"{ex.question} {suffix}"
    return ex.question


# ----------------------------------------------------------------------- consistency <-> Example


def consistency_labels(records: Iterable[ConsistencyRecord]) -> dict[str, list[str]]:
    """``{qid: judges}``, the input of :func:`hlens.judge.consistency_filter`."""
    return {r.qid: list(r.judges) for r in records}


def consistency_to_examples(
    records: Iterable[ConsistencyRecord], *, suffix: str = OFFICIAL_SUFFIX
) -> list[Example]:
    """One :class:`Example` per sampled response (``id`` = qid, ``meta["sample"]`` = index).

    The raw judge string is kept in ``meta["judge"]``; ``label`` is its hlens spelling (``None``
    for an unreadable judge such as the official ``"error"``).
    """
    out = []
    for r in records:
        question, tail = _split_suffix(r.question, suffix)
        for i, (resp, judge) in enumerate(zip(r.responses, r.judges)):
            try:
                label: Label | None = to_label(judge)
            except ValueError:
                label = None
            meta: dict[str, Any] = {"sample": i, "judge": judge, "instruction_suffix": tail}
            out.append(
                Example(
                    question=question,
                    response=resp,
                    id=r.qid,
                    answers=tuple(r.ground_truth),
                    label=label,
                    meta=meta,
                )
            )
    return out


def examples_to_consistency(
    examples: Iterable[Example], *, suffix: str | None = OFFICIAL_SUFFIX
) -> list[ConsistencyRecord]:
    """Group examples by ``id`` (in order of first appearance) into consistency records.

    The judge string is ``meta["judge"]`` if present, else the official spelling of ``label``.
    """
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.id is None:
            raise ValueError(f"example {ex.name} has no id; consistency records are keyed by id")
        groups.setdefault(ex.id, []).append(ex)
    out = []
    for qid, exs in groups.items():
        exs = sorted(exs, key=lambda e: e.meta.get("sample", 0))
        judges = []
        for ex in exs:
            if "judge" in ex.meta:
                judges.append(str(ex.meta["judge"]))
            elif ex.label is not None:
                judges.append(OFFICIAL_JUDGE[ex.label])
            else:
                raise ValueError(f"example {ex.name} has neither a label nor meta['judge']")
        out.append(
            ConsistencyRecord(
                qid=qid,
                question=_join_suffix(exs[0], suffix),
                responses=[e.response for e in exs],
                judges=judges,
                ground_truth=list(exs[0].answers),
            )
        )
    return out


# ----------------------------------------------------------------------------- token strings


def _byte_table() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE token strings."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_CHAR_TO_BYTE = {c: b for b, c in _byte_table().items()}
_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _token_bytes(tokens: Sequence[str]) -> list[bytes] | None:
    if any("▁" in t or _SP_BYTE.match(t) for t in tokens):
        out = []
        for t in tokens:
            m = _SP_BYTE.match(t)
            out.append(bytes([int(m.group(1), 16)]) if m else t.replace("▁", " ").encode())
        return out
    if all(c in _CHAR_TO_BYTE for t in tokens for c in t):
        return [bytes(_CHAR_TO_BYTE[c] for c in t) for t in tokens]
    return None


def decode_token_strings(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Decode tokenizer token strings to text, with each token's character span in that text.

    Handles byte-level BPE strings (GPT-2, Llama 3, Mistral Tekken: ``"Ġ"`` is a space,
    ``"Ã¶"`` is ``"ö"``) and SentencePiece strings (``"▁"`` is a space, ``"<0xE2>"`` a byte);
    anything else is joined as plain text. A token that covers only part of a multi-byte character
    gets the whole character.

    Example:
        >>> decode_token_strings(["H", "ermann", "ĠGÃ¶r", "ing"])
        ('Hermann Göring', [(0, 1), (1, 7), (7, 11), (11, 14)])
        >>> decode_token_strings(["▁Top", "▁Gear"])[0]
        ' Top Gear'
    """
    per_token = _token_bytes(tokens)
    if per_token is not None:
        data = b"".join(per_token)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            per_token = None
    if per_token is None:
        spans, pos = [], 0
        for t in tokens:
            spans.append((pos, pos + len(t)))
            pos += len(t)
        return "".join(tokens), spans
    char_of_byte: list[int] = []
    for i, ch in enumerate(text):
        char_of_byte.extend([i] * len(ch.encode("utf-8")))
    char_of_byte.append(len(text))
    spans, pos = [], 0
    for b in per_token:
        start = char_of_byte[pos]
        end = char_of_byte[pos + len(b) - 1] + 1 if b else start
        spans.append((start, end))
        pos += len(b)
    return text, spans


def _find_sublist(hay: Sequence[str], needle: Sequence[str]) -> list[int] | None:
    """Indices of ``needle`` in ``hay``: a contiguous run if there is one, else in-order greedy."""
    n = len(needle)
    for i in range(len(hay) - n + 1):
        if list(hay[i : i + n]) == list(needle):
            return list(range(i, i + n))
    idx, j = [], 0
    for i, tok in enumerate(hay):
        if j < n and tok == needle[j]:
            idx.append(i)
            j += 1
    return idx if j == n else None


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def answer_tokens_to_examples(
    records: Iterable[AnswerTokensRecord],
    *,
    labels: Mapping[str, Label] | None = None,
    non_contiguous: Literal["skip", "cover"] = "skip",
    suffix: str = OFFICIAL_SUFFIX,
) -> tuple[list[Example], list[SkippedExample]]:
    """Convert answer-token records to Examples with a character ``answer_span``.

    The token strings are decoded to text with offsets (:func:`decode_token_strings`); the answer
    tokens are found in ``tokenized_response`` and their characters, without surrounding
    whitespace, become the span. If the decoded text differs from ``response`` the decoded answer
    text is searched for in ``response`` instead.

    Args:
        records: the records.
        labels: optional ``{qid: label}`` (e.g. from :func:`qids_to_labels`).
        non_contiguous: answer tokens that are an in-order but gapped sub-list of the response
            (``"Russia, China"`` -> ``["Russia", "ĠChina"]``): ``"skip"`` them (default) or
            ``"cover"`` them with one span from the first to the last answer token.
        suffix: the instruction suffix moved from the question to ``meta["instruction_suffix"]``.

    Returns:
        The examples (``meta`` keeps the token lists so they can be written back) and the skipped
        records with reasons: empty answer tokens, answer tokens not in the tokenized response,
        gapped answer tokens, answer text not found in the response.
    """
    examples: list[Example] = []
    skipped: list[SkippedExample] = []
    for r in records:
        if not r.answer_tokens:
            skipped.append(SkippedExample(r.qid, "answer_tokens is empty"))
            continue
        idx = _find_sublist(r.tokenized_response, r.answer_tokens)
        if idx is None:
            skipped.append(SkippedExample(r.qid, "answer_tokens are not a sub-list of the tokens"))
            continue
        contiguous = idx == list(range(idx[0], idx[-1] + 1))
        if not contiguous and non_contiguous == "skip":
            skipped.append(
                SkippedExample(r.qid, "answer_tokens are not contiguous (non_contiguous='cover')")
            )
            continue
        text, spans = decode_token_strings(r.tokenized_response)
        start, end = _trim(text, spans[idx[0]][0], spans[idx[-1]][1])
        if text != r.response:
            answer = text[start:end]
            offset = r.response.find(answer) if answer else -1
            if offset < 0:
                skipped.append(
                    SkippedExample(r.qid, f"decoded answer {answer!r} not found in the response")
                )
                continue
            start, end = offset, offset + len(answer)
        if start >= end:
            skipped.append(SkippedExample(r.qid, "answer tokens decode to whitespace only"))
            continue
        question, tail = _split_suffix(r.question, suffix)
        meta: dict[str, Any] = {
            "tokenized_response": list(r.tokenized_response),
            "answer_tokens": list(r.answer_tokens),
            "instruction_suffix": tail,
        }
        if not contiguous:
            meta["answer_span_covers_gaps"] = True
        label = labels.get(r.qid) if labels is not None else None
        examples.append(
            Example(
                question=question,
                response=r.response,
                answer_span=(start, end),
                id=r.qid,
                label=label,
                meta=meta,
            )
        )
    return examples, skipped


def examples_to_answer_tokens(
    examples: Iterable[Example],
    *,
    tokenize: Callable[[str], list[str]] | None = None,
    suffix: str | None = OFFICIAL_SUFFIX,
) -> tuple[list[AnswerTokensRecord], list[SkippedExample]]:
    """Convert Examples with an ``answer_span`` to answer-token records.

    Tokens come from ``meta["tokenized_response"]``/``meta["answer_tokens"]`` when an example was
    read from an official file; otherwise ``tokenize(response)`` (e.g. ``tokenizer.tokenize``)
    gives the token strings and the answer tokens are those overlapping the answer span.

    Returns:
        The records and the skipped examples with reasons (no id, no span, no tokenizer, tokens
        that do not decode to the response).
    """
    records: list[AnswerTokensRecord] = []
    skipped: list[SkippedExample] = []
    for ex in examples:
        if ex.id is None or ex.answer_span is None:
            skipped.append(SkippedExample(ex.id, "example needs an id and an answer_span"))
            continue
        question = _join_suffix(ex, suffix)
        if "tokenized_response" in ex.meta and "answer_tokens" in ex.meta:
            toks, ans = list(ex.meta["tokenized_response"]), list(ex.meta["answer_tokens"])
            records.append(AnswerTokensRecord(ex.id, question, ex.response, toks, ans))
            continue
        if tokenize is None:
            skipped.append(SkippedExample(ex.id, "no token strings in meta and no tokenize given"))
            continue
        toks = list(tokenize(ex.response))
        text, spans = decode_token_strings(toks)
        offset = text.find(ex.response) if ex.response else -1
        if offset < 0:
            skipped.append(SkippedExample(ex.id, "tokens do not decode to the response"))
            continue
        a, b = ex.answer_span[0] + offset, ex.answer_span[1] + offset
        ans = [t for t, (s, e) in zip(toks, spans) if s < b and e > a]
        records.append(AnswerTokensRecord(ex.id, question, ex.response, toks, ans))
    return records, skipped
