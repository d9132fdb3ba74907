"""Label-blind answer spans: mark the answer in a response without knowing whether it is right.

CETT is scored on the answer tokens, so the span that marks them must mean the same thing in both
classes. If faithful spans came from matching a gold alias and hallucinated spans from some
fallback, the span's length or position alone would tell the classes apart, and a probe would
learn where the span is rather than whether the model knew. The paper avoids this by having an
LLM mark the answer of every response. :class:`RuleSpanExtractor` does it offline with rules that
read only the question and the response, never the gold answers or the label:

1. ``trim``: end-of-turn tokens, the first line and the first sentence, surrounding quotes and
   trailing punctuation;
2. ``lead_in``: a fixed lead-in is dropped ("The answer is", "It is", "I think", ...);
3. ``answer_only``: a response of at most ``max_answer_words`` words is the answer;
4. ``new_phrase``: otherwise the answer is the first phrase of words that are new, neither copied
   from the question nor function words (``"The capital city of Canada is Ottawa."`` ->
   ``"Ottawa"``), extended over names, numbers and connectors (``"Sinclair Lewis"``,
   ``"Lord of the Flies"``);
5. ``none``: a response that only echoes the question has no answer to mark; it is skipped, in
   either class.

Any callable ``extractor(question, response) -> SpanResult`` plugs in instead (for example an LLM
that marks the answer), as long as it is blind to the label.

Example:
    >>> x = RuleSpanExtractor()
    >>> q = "What is the capital city of Canada?"
    >>> r = "The capital city of Canada is Ottawa."
    >>> res = x(q, r)
    >>> res.step, r[slice(*res.span)]
    ('new_phrase', 'Ottawa')
    >>> res = x(q, "Toronto.")
    >>> res.step, res.span
    ('answer_only', (0, 7))
    >>> x(q, "The capital city of Canada.").step
    'none'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from hlens.judge import _QUOTES, locate_answer, normalize_answer, strip_end_tokens, trim_span

__all__ = [
    "LEAD_INS",
    "SPAN_STEPS",
    "RuleSpanExtractor",
    "SpanExtractor",
    "SpanResult",
    "WholeResponseExtractor",
    "span_step_counts",
]

SpanStep = Literal["answer_only", "lead_in", "new_phrase", "whole", "none"]
SPAN_STEPS: tuple[str, ...] = ("answer_only", "lead_in", "new_phrase", "whole", "none")

#: Lead-ins dropped from the start of a response (case-insensitive, longest first).
LEAD_INS: tuple[str, ...] = (
    "the correct answer is",
    "the answer is",
    "my answer is",
    "answer:",
    "a:",
    "i think it is",
    "i think it's",
    "i believe it is",
    "i believe it's",
    "i think",
    "i believe",
    "it is",
    "it's",
    "it was",
    "that is",
    "that's",
    "that would be",
    "this is",
    "probably",
    "perhaps",
)


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry no answer: function words, copulas and the predicates a sentence answer wraps
# around its answer ("X was born in Y", "X was written by Y").
_STOPWORDS = _wordset(
    """
    a an the of in on at to for from by with as into onto about over under between than then
    and or but nor so if is are was were be been being am has have had do does did will would
    can could shall should may might must it its it s he she they them his her their there here
    who whom whose which what when where why how this that these those not also very just only
    i me my we our you your one s
    known called named born died won wrote written directed played located situated awarded
    published invented released founded created made became considered famous originally first
    answer correct think believe refers refer real actually
    """
)
# Words that name the kind of answer rather than the answer ("the novel", "the city of").
_CATEGORIES = _wordset(
    """
    novel book film movie song album show series play poem opera city town village country state
    nation team club band group writer author actor actress singer player person man woman
    character name word year capital place river island mountain language
    """
)
# Predicates: a short response that holds one is a sentence, not an answer ("Golding wrote it").
_PREDICATES = _wordset(
    """
    is are was were be been am has have had wrote written won born died directed played located
    awarded published invented released founded created made became
    """
)
# Words that may join the parts of a multi-word answer ("Lord of the Flies", "Leonardo da Vinci").
_CONNECTORS = _wordset("of the de la le du da di van von der den del y and & st")
_ABBREVIATIONS = _wordset("st mr mrs ms dr mt jr sr vs no co inc ltd gen col lt sgt rev")
_WORD = re.compile(r"\S+")
_EDGE = "\"'“”‘’«»`()[]{}.,;:!?*"


@dataclass(frozen=True)
class SpanResult:
    """Where an extractor put the answer, and which step found it.

    Attributes:
        span: ``(start, end)`` character offsets in the response, or ``None``.
        step: the step that decided (see :data:`SPAN_STEPS`).
    """

    span: tuple[int, int] | None
    step: SpanStep

    def __post_init__(self) -> None:
        if self.step not in SPAN_STEPS:
            raise ValueError(f"SpanResult.step must be one of {SPAN_STEPS}, got {self.step!r}")
        if (self.span is None) != (self.step == "none"):
            raise ValueError(f"SpanResult: step {self.step!r} does not fit span {self.span}")


@runtime_checkable
class SpanExtractor(Protocol):
    """Marks the answer of a response; must not look at gold answers or labels."""

    def __call__(self, question: str, response: str) -> SpanResult: ...


def _first_sentence_end(text: str, start: int, end: int) -> int:
    for m in re.finditer(r"[.!?][\"'”’)]*(?=\s|$)", text[start:end]):
        pos = start + m.start()
        if text[pos] == ".":
            before = re.search(r"(\S+)$", text[start:pos])
            word = before.group(1).lower().strip(_EDGE) if before else ""
            if len(word) == 1 or word in _ABBREVIATIONS or "." in word:
                continue  # an initial ("J. K. Rowling"), "St." or "U.S."
            nxt = text[start + m.end() : end].lstrip()
            if nxt[:1].islower() or nxt[:1].isdigit():
                continue
        return start + m.end()
    return end


@dataclass(frozen=True)
class _Word:
    start: int
    end: int
    norm: str
    raw: str

    @property
    def capitalized(self) -> bool:
        return self.raw[:1].isupper() or self.raw[:1].isdigit()

    @property
    def ends_clause(self) -> bool:
        return self.raw.rstrip(_QUOTES + ")").endswith((",", ";", ":"))


def _stem(word: str) -> str:
    """A crude English stem, enough to see that "achieved" echoes "achieve"."""
    for suffix in ("ing", "ed", "es", "s", "d", "e"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _words(text: str, start: int, end: int) -> list[_Word]:
    out = []
    for m in _WORD.finditer(text, start, end):
        s, e = m.start(), m.end()
        while s < e and text[s] in _EDGE:
            s += 1
        core_end = e
        while core_end > s and text[core_end - 1] in _EDGE:
            core_end -= 1
        if s >= core_end:
            continue
        out.append(_Word(s, core_end, normalize_answer(text[s:core_end]), text[m.start() : e]))
    return out


@dataclass(frozen=True)
class RuleSpanExtractor:
    """The rule-based, label-blind answer extractor (see the module doc for its steps).

    Attributes:
        max_answer_words: a trimmed response of at most this many words is the answer itself.
        lead_ins: lead-ins dropped from the start of the response.
        first_sentence: look only at the first sentence (answers come first).

    Example:
        >>> x = RuleSpanExtractor()
        >>> r = "The novel was written by Jack London in 1903."
        >>> r[slice(*x("Who wrote the novel The Call of the Wild?", r).span)]
        'Jack London'
    """

    max_answer_words: int = 4
    lead_ins: tuple[str, ...] = LEAD_INS
    first_sentence: bool = True
    _lead_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_answer_words < 1:
            raise ValueError(f"max_answer_words must be >= 1, got {self.max_answer_words}")
        alts = "|".join(re.escape(x) for x in sorted(self.lead_ins, key=len, reverse=True))
        pattern = rf"^(?:{alts})(?:\s+|\s*[:,\-]\s*|$)" if alts else r"(?!)"
        object.__setattr__(self, "_lead_re", re.compile(pattern, re.IGNORECASE))

    def __call__(self, question: str, response: str) -> SpanResult:
        text = strip_end_tokens(response)
        start, end = 0, len(text)
        newline = text.find("\n", start)
        lead = text[:newline] if newline >= 0 else text
        if newline >= 0 and lead.strip():
            end = newline
        start, end = trim_span(text, start, end)
        if self.first_sentence and start < end:
            start, end = trim_span(text, start, _first_sentence_end(text, start, end))
        if start >= end:
            return SpanResult(None, "none")
        step: SpanStep = "answer_only"
        m = self._lead_re.match(text[start:end])
        if m and m.end() < end - start:
            start, end = trim_span(text, start + m.end(), end)
            step = "lead_in"
        if start >= end:
            return SpanResult(None, "none")
        words = _words(text, start, end)
        if not words:
            return SpanResult(None, "none")
        short = len(words) <= self.max_answer_words
        if short and not any(w.norm in _PREDICATES for w in words):
            return SpanResult((start, end), step)
        return self._new_phrase(question, text, words)

    def _new_phrase(self, question: str, text: str, words: list[_Word]) -> SpanResult:
        asked = {_stem(p) for p in normalize_answer(question).split()}

        def is_new(w: _Word) -> bool:
            parts = w.norm.split()
            return any(
                p not in _STOPWORDS and p not in _CATEGORIES and _stem(p) not in asked
                for p in parts
            )

        first = next((i for i, w in enumerate(words) if is_new(w)), None)
        if first is None:
            return SpanResult(None, "none")
        i = j = first
        # names reach back over capitalised words copied from the question ("Sinclair Lewis")
        while i > 0 and words[i - 1].capitalized and not words[i - 1].ends_clause:
            if words[i - 1].norm in _STOPWORDS:
                break
            i -= 1
        while j + 1 < len(words) and not words[j].ends_clause:
            nxt = words[j + 1]
            if is_new(nxt) or (nxt.capitalized and nxt.norm not in _STOPWORDS):
                j += 1
                continue
            k = j + 1  # connectors, then a name word: "Lord of the Flies"
            while k < len(words) and words[k].norm in _CONNECTORS and not words[k].ends_clause:
                k += 1
            if k < len(words) and k > j + 1 and words[k].capitalized:
                j = k
                continue
            break
        return SpanResult((words[i].start, words[j].end), "new_phrase")


@dataclass(frozen=True)
class WholeResponseExtractor:
    """The whole trimmed response is the answer (for answer-only formats); label-blind too."""

    def __call__(self, question: str, response: str) -> SpanResult:
        span = locate_answer(response, None, max_words=None)  # the answer-only rule
        return SpanResult(span, "whole") if span is not None else SpanResult(None, "none")


def span_step_counts(steps: Iterable[str]) -> dict[str, int]:
    """How many examples each step handled: :data:`SPAN_STEPS` in order (zeros included), then
    any other step name (``"judge"``, ``"alias"``) that occurs."""
    c = Counter(steps)
    return {s: int(c.get(s, 0)) for s in SPAN_STEPS} | {
        s: int(n) for s, n in c.items() if s not in SPAN_STEPS
    }
