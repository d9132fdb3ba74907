"""The ``Example`` type: one question, optionally one response and the answer span inside it.

Every dataset in hlens (the organism's question sets, TriviaQA, the official H-Neurons files, the
evaluation suites) yields ``Example`` objects, and every pipeline step consumes them.

Example:
    >>> ex = Example(question="Where was Ada Vell born?", response="Ada Vell was born in Korin.")
    >>> ex = ex.with_answer("Korin")
    >>> ex.answer_span
    (21, 26)
    >>> ex.answer_text
    'Korin'
    >>> Example.from_dict(ex.to_dict()) == ex
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LABELS", "Example", "Label"]

Label = Literal["faithful", "hallucinated", "uncertain"]
LABELS: tuple[str, ...] = ("faithful", "hallucinated", "uncertain")


@dataclass(frozen=True)
class Example:
    """A question with an optional response and answer span.

    Attributes:
        question: the user's question (the user turn, before any instruction suffix).
        response: the model's (or a reference) response; empty for a bare prompt.
        answer_span: ``(start, end)`` character offsets of the answer inside ``response``
            (``response[start:end]``), or ``None`` when no answer is marked.
        id: a stable identifier (question id); used for splits, resuming and error messages.
        answers: gold answer aliases, if known.
        label: ``"faithful"``, ``"hallucinated"`` or ``"uncertain"``, if judged.
        system: optional system prompt.
        meta: free-form JSON-serialisable metadata (dataset, person id, split, ...).
    """

    question: str
    response: str = ""
    answer_span: tuple[int, int] | None = None
    id: str | None = None
    answers: tuple[str, ...] = ()
    label: Label | None = None
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str):
            raise TypeError(f"Example.question must be a str, got {type(self.question).__name__}")
        if not isinstance(self.response, str):
            raise TypeError(f"Example.response must be a str, got {type(self.response).__name__}")
        object.__setattr__(self, "answers", tuple(self.answers))
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"Example.label must be one of {LABELS} or None, got {self.label!r}")
        if self.answer_span is not None:
            start, end = (int(x) for x in self.answer_span)
            object.__setattr__(self, "answer_span", (start, end))
            if not 0 <= start < end <= len(self.response):
                raise ValueError(
                    f"answer_span {self.answer_span} is not a non-empty span inside the response "
                    "of "
                    f"example {self.name} (response has {len(self.response)} characters)"
                )

    @property
    def name(self) -> str:
        """A short description for error messages: the id, else the start of the question."""
        return repr(self.id) if self.id is not None else repr(self.question[:60])

    @property
    def answer_text(self) -> str | None:
        """The marked answer, ``response[start:end]``, or ``None``."""
        if self.answer_span is None:
            return None
        return self.response[self.answer_span[0] : self.answer_span[1]]

    def replace(self, **changes: Any) -> Example:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def with_answer(self, answer: str, *, ignore_case: bool = True) -> Example:
        """Mark the first occurrence of ``answer`` in the response as the answer span.

        Raises:
            ValueError: if ``answer`` does not occur in the response (names the example).
        """
        hay, needle = (
            (self.response.lower(), answer.lower()) if ignore_case else (self.response, answer)
        )
        start = hay.find(needle) if needle else -1
        if start < 0:
            raise ValueError(
                f"cannot locate the answer {answer!r} in the response {self.response!r} of "
                f"example {self.name}"
            )
        return self.replace(answer_span=(start, start + len(answer)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["answers"] = list(self.answers)
        d["answer_span"] = list(self.answer_span) if self.answer_span is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown Example fields {sorted(unknown)}; expected {sorted(known)}")
        d = dict(d)
        if d.get("answer_span") is not None:
            d["answer_span"] = tuple(d["answer_span"])
        d["answers"] = tuple(d.get("answers", ()))
        return cls(**d)
