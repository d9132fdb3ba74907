"""Judging responses against gold answers: rule judge, pluggable interface, consistency filter.

The rule judge follows the TriviaQA evaluation script's normalisation (lowercase, punctuation to
spaces, articles removed, whitespace collapsed) with two additions: Unicode compatibility
decomposition with accents stripped and a few letters transliterated (``"Göring"`` matches
``"Goring"``, ``"Sigurðardóttir"`` matches ``"Sigurdardottir"``), and every Unicode
punctuation or symbol character treated as punctuation (``"Teflon™"``, ``"212°F"``, curly quotes).

A response is ``"faithful"`` when a normalised gold alias occurs in the normalised response as a
whole-word span (``match="word"``, the default). The official H-Neurons reproduction uses plain
substring containment (``match="substring"``), under which ``"40"`` counts as correct for gold
``"4"`` and ``"Hollywood"`` for gold ``"L"``; ``"word"`` rejects an alias found only inside a longer
word. Responses with a refusal or abstention marker (:data:`REFUSAL_PHRASES`,
:data:`ABSTENTION_ANSWERS`) are ``"uncertain"`` before any matching, as in the official pipeline.

Any callable ``judge(example, response) -> Judgement`` is a :class:`Judge`, so an LLM judge plugs in
wherever :class:`RuleJudge` does; :func:`judge_from_callable` adapts a plain
``fn(question, response, answers) -> label`` function.

Example:
    >>> judge = RuleJudge()
    >>> ex = Example(question="Where was Dame Judi Dench born?", answers=("York", "York, England"))
    >>> j = judge(ex, "She was born in York.")
    >>> j.label, j.alias, "She was born in York."[slice(*j.span)]
    ('faithful', 'York', 'York')
    >>> judge(ex, "New York").label  # whole-word match: "york" is inside "new york"
    'faithful'
    >>> judge(ex, "Yorkshire").label  # but not inside a longer word
    'hallucinated'
    >>> judge(ex, "I'm not sure.").label
    'uncertain'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from hlens.examples import LABELS, Example, Label

__all__ = [
    "ABSTENTION_ANSWERS",
    "END_TOKENS",
    "LABEL_ALIASES",
    "REFUSAL_PHRASES",
    "ConsistencyResult",
    "Funnel",
    "Judge",
    "Judgement",
    "MatchMode",
    "RuleJudge",
    "SkippedExample",
    "attach_answer_spans",
    "consistency_filter",
    "find_refusal",
    "judge_from_callable",
    "locate_answer",
    "normalize_answer",
    "strip_end_tokens",
    "trim_span",
]

MatchMode = Literal["word", "substring", "exact"]
MATCH_MODES: tuple[str, ...] = ("word", "substring", "exact")

#: Phrases that mark a refusal or abstention anywhere in a response (matched as whole words on the
#: lowercased response, with curly apostrophes straightened). The official reproduction uses
#: ``"don't know"``, ``"cannot"``, ``"not provided"`` and ``"no information"``; the rest are common
#: chat-model abstentions.
REFUSAL_PHRASES: tuple[str, ...] = (
    "i don't know",
    "i do not know",
    "don't know",
    "do not know",
    "i'm not sure",
    "i am not sure",
    "not sure",
    "i'm not certain",
    "i am not certain",
    "i'm unsure",
    "i am unsure",
    "cannot",
    "can't answer",
    "can't provide",
    "can't determine",
    "unable to",
    "not provided",
    "no information",
    "not enough information",
    "insufficient information",
    "i have no idea",
    "no idea",
    "i apologize",
    "i don't have",
    "i do not have",
    "i couldn't find",
    "i could not find",
    "there is no record",
    "there is no information",
)

#: Whole responses (after normalisation) that are abstentions. Matched only as the entire answer,
#: so that ``"The Tomb of the Unknown Soldier"`` is still judged on its content.
ABSTENTION_ANSWERS: tuple[str, ...] = (
    "unknown",
    "unsure",
    "not known",
    "no answer",
    "n a",
    "uncertain",
    "i don t know",
    "idk",
)

#: End-of-turn and padding tokens removed from the end of a response before locating an answer.
END_TOKENS: tuple[str, ...] = (
    "</s>",
    "<eos>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<pad>",
)

#: Label spellings accepted from other judges and files, mapped to hlens labels. The official
#: H-Neurons files use ``"true"``/``"false"``; LLM judges are asked for ``"t"``/``"f"``.
LABEL_ALIASES: dict[str, Label] = {
    "faithful": "faithful",
    "hallucinated": "hallucinated",
    "uncertain": "uncertain",
    "true": "faithful",
    "t": "faithful",
    "correct": "faithful",
    "yes": "faithful",
    "false": "hallucinated",
    "f": "hallucinated",
    "incorrect": "hallucinated",
    "wrong": "hallucinated",
    "no": "hallucinated",
    "unknown": "uncertain",
    "refusal": "uncertain",
    "abstain": "uncertain",
}

_ARTICLES = frozenset({"a", "an", "the"})
# Latin letters that NFKD does not decompose, spelled as English texts usually write them.
_TRANSLIT = {
    "ð": "d",
    "đ": "d",
    "þ": "th",
    "ø": "o",
    "æ": "ae",
    "œ": "oe",
    "ß": "ss",
    "ł": "l",
    "ı": "i",
}
_TOKEN = re.compile(r"\S+")


def _normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """Normalise ``text`` and map every normalised character to its source character index.

    The spaces that join tokens map to the index of the following token's first character.
    """
    chars: list[str] = []
    src: list[int] = []
    for i, ch in enumerate(text):
        if ch == "_" or unicodedata.category(ch)[0] in "PS":
            chars.append(" ")
            src.append(i)
            continue
        for part in unicodedata.normalize("NFKD", ch):
            if unicodedata.combining(part):
                continue
            for low in _TRANSLIT.get(part.lower(), part.lower()):
                if unicodedata.combining(low):
                    continue
                is_punct = low == "_" or unicodedata.category(low)[0] in "PS"
                chars.append(" " if is_punct else low)
                src.append(i)
    flat = "".join(chars)
    out: list[str] = []
    out_src: list[int] = []
    for m in _TOKEN.finditer(flat):
        if m.group() in _ARTICLES:
            continue
        if out:
            out.append(" ")
            out_src.append(src[m.start()])
        out.append(m.group())
        out_src.extend(src[m.start() : m.end()])
    return "".join(out), out_src


def normalize_answer(text: str) -> str:
    """TriviaQA-style normalisation: lowercase, no accents, punctuation to spaces, no articles.

    Example:
        >>> normalize_answer("  The Beatles'  “Yesterday”! ")
        'beatles yesterday'
        >>> normalize_answer("Hermann Göring"), normalize_answer("Teflon™")
        ('hermann goring', 'teflon')
    """
    return _normalize_with_offsets(text)[0]


def _marker_text(text: str) -> str:
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    return " ".join(text.split())


_REFUSAL_RES: dict[tuple[str, ...], re.Pattern[str]] = {}


def find_refusal(
    response: str,
    phrases: Sequence[str] = REFUSAL_PHRASES,
    answers: Sequence[str] = ABSTENTION_ANSWERS,
) -> str | None:
    """The refusal or abstention marker in ``response``, or ``None``.

    Args:
        response: the model's response.
        phrases: phrases matched as whole words anywhere in the lowercased response.
        answers: normalised whole-response abstentions (``"unknown"``, ``"none"``, ...).

    Example:
        >>> find_refusal("I don’t know the answer.")
        "i don't know"
        >>> find_refusal("Unknown."), find_refusal("The Unknown Soldier")
        ('unknown', None)
    """
    key = tuple(phrases)
    pattern = _REFUSAL_RES.get(key)
    if pattern is None:
        alternatives = "|".join(re.escape(_marker_text(p)) for p in phrases if p.strip())
        pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)" if alternatives else r"(?!)")
        _REFUSAL_RES[key] = pattern
    m = pattern.search(_marker_text(response))
    if m is not None:
        return m.group()
    norm = normalize_answer(strip_end_tokens(response))
    return norm if norm in set(answers) else None


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one response.

    Attributes:
        label: ``"faithful"``, ``"hallucinated"`` or ``"uncertain"``.
        alias: the gold alias that matched (faithful answers), if known.
        span: ``(start, end)`` character offsets of the matched answer in the response, if known.
        reason: a short free-text explanation (the refusal marker, "no alias matched", ...).
    """

    label: Label
    alias: str | None = None
    span: tuple[int, int] | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"Judgement.label must be one of {LABELS}, got {self.label!r}")
        if self.span is not None:
            start, end = (int(x) for x in self.span)
            if not 0 <= start < end:
                raise ValueError(f"Judgement.span must satisfy 0 <= start < end, got {self.span}")
            object.__setattr__(self, "span", (start, end))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["span"] = list(self.span) if self.span is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Judgement:
        d = dict(d)
        if d.get("span") is not None:
            d["span"] = tuple(d["span"])
        return cls(**d)


@runtime_checkable
class Judge(Protocol):
    """Anything that judges a response to an example (the example supplies question and answers)."""

    def __call__(self, example: Example, response: str) -> Judgement: ...


def _plural_stems(text: str) -> str:
    """Words without a plural ``s``, so that "abdominal thrust" echoes "abdominal thrusts"."""
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in text.split())


def _word_find(haystack: str, needle: str) -> int:
    m = re.search(rf"(?<!\S){re.escape(needle)}(?!\S)", haystack)
    return m.start() if m else -1


@dataclass(frozen=True)
class RuleJudge:
    """String-matching judge with TriviaQA normalisation and refusal detection.

    Attributes:
        match: ``"word"`` (alias as a whole-word span of the response; default), ``"substring"``
            (the official reproduction's rule: alias anywhere, even inside a word) or ``"exact"``
            (whole response equals an alias).
        refusal_phrases: see :data:`REFUSAL_PHRASES`; ``()`` disables phrase detection.
        abstention_answers: see :data:`ABSTENTION_ANSWERS`.
        echo_aware: an alias that occurs in the question does not make a response faithful
            (see :meth:`usable_aliases`); :meth:`official` turns this off.

    Example:
        >>> ex = Example(question="How many?", answers=("4",))
        >>> RuleJudge()(ex, "40").label, RuleJudge(match="substring")(ex, "40").label
        ('hallucinated', 'faithful')
        >>> ex = Example("What is the capital city of Canada?",
        ...              answers=("Ottawa", "capital city of Canada"))
        >>> RuleJudge()(ex, "The capital city of Canada is Toronto.").label  # only the echo
        'uncertain'
        >>> RuleJudge.official()(ex, "The capital city of Canada is Toronto.").label
        'faithful'
        >>> ex = Example("Who was born first, Susan Sarandon or Glenn Close?",
        ...              answers=("Susan Sarandon",))
        >>> RuleJudge()(ex, "Susan Sarandon").label, RuleJudge()(ex, "Glenn Close").label
        ('faithful', 'hallucinated')
    """

    match: MatchMode = "word"
    refusal_phrases: tuple[str, ...] = REFUSAL_PHRASES
    abstention_answers: tuple[str, ...] = ABSTENTION_ANSWERS
    echo_aware: bool = True

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise ValueError(f"RuleJudge.match must be one of {MATCH_MODES}, got {self.match!r}")
        object.__setattr__(self, "refusal_phrases", tuple(self.refusal_phrases))
        object.__setattr__(self, "abstention_answers", tuple(self.abstention_answers))

    @classmethod
    def official(cls) -> RuleJudge:
        """The official reproduction's rule: substring containment, echoes count."""
        return cls(match="substring", echo_aware=False)

    def echoed_aliases(self, example: Example) -> tuple[str, ...]:
        """The gold aliases that occur in the question (whole words, after normalisation).

        With ``echo_aware`` such an alias credits a response only when it is the whole response
        (``"Susan Sarandon"`` to "Who was born first, Susan Sarandon or Glenn Close?"). Found
        inside a longer response it may be a copy of the question (``"The Tractor Boys are a team
        from the United States"`` to "Which team is nicknamed the Tractor Boys?") or a choice
        made in a sentence; string rules cannot tell which, so the response is ``"uncertain"``
        (and the consistency filter drops its question) unless another alias matches.

        Example:
            >>> ex = Example("Which team is nicknamed the Tractor Boys?",
            ...              answers=("Ipswich Town", "Tractor Boys"))
            >>> RuleJudge().echoed_aliases(ex)
            ('Tractor Boys',)
        """
        if not self.echo_aware:
            return ()
        question = _plural_stems(normalize_answer(example.question))
        return tuple(
            a
            for a in example.answers
            if normalize_answer(a) and _word_find(question, _plural_stems(normalize_answer(a))) >= 0
        )

    def __call__(self, example: Example, response: str) -> Judgement:
        marker = find_refusal(response, self.refusal_phrases, self.abstention_answers)
        if marker is not None and marker in {normalize_answer(a) for a in example.answers}:
            marker = None  # "none" is the gold answer, not an abstention
        if marker is not None:
            return Judgement("uncertain", reason=f'refusal marker "{marker}"')
        echoed = set(self.echoed_aliases(example))
        aliases = [a for a in example.answers if a not in echoed]
        if echoed:
            whole = normalize_answer(strip_end_tokens(response))
            chosen = [a for a in echoed if normalize_answer(a) == whole]
            if chosen:
                alias = max(chosen, key=lambda a: len(normalize_answer(a)))
                span = _answer_only_span(response, None)
                return Judgement("faithful", alias=alias, span=span, reason="chose an alias")
        hit = self.match_alias(response, aliases)
        if hit is None:
            if not response.strip():
                return Judgement("hallucinated", reason="empty response")
            if echoed and self.match_alias(response, echoed) is not None:
                # it names an alias the question names too: a copy, or a choice in a sentence
                return Judgement("uncertain", reason="only an alias copied from the question")
            return Judgement("hallucinated", reason="no gold alias matched")
        alias, span = hit
        return Judgement("faithful", alias=alias, span=span, reason=f"{self.match} match")

    def match_alias(
        self, response: str, aliases: Iterable[str]
    ) -> tuple[str, tuple[int, int]] | None:
        """The best-matching alias and its character span in ``response``, or ``None``.

        The longest normalised alias wins (the most specific span); ties go to the earliest match.

        Example:
            >>> RuleJudge().match_alias("It is New York City.", ["York", "New York"])
            ('New York', (6, 14))
        """
        norm, src = _normalize_with_offsets(response)
        if not norm:
            return None
        best: tuple[int, int, str] | None = None  # (-length, position, alias)
        for alias in aliases:
            a = normalize_answer(alias)
            if not a:
                continue
            if self.match == "exact":
                pos = 0 if a == norm else -1
            elif self.match == "word":
                pos = _word_find(norm, a)
            else:
                pos = norm.find(a)
            if pos >= 0 and (best is None or (-len(a), pos) < best[:2]):
                best = (-len(a), pos, alias)
        if best is None:
            return None
        length, pos, alias = -best[0], best[1], best[2]
        return alias, (src[pos], src[pos + length - 1] + 1)


def judge_from_callable(fn: Callable[[str, str, tuple[str, ...]], str]) -> Judge:
    """Adapt ``fn(question, response, answers) -> label`` (e.g. an LLM judge) to :class:`Judge`.

    ``fn`` may return any spelling in :data:`LABEL_ALIASES` (``"true"``, ``"f"``, ``"correct"``...),
    case and surrounding whitespace ignored; anything else raises ``ValueError``.

    Example:
        >>> judge = judge_from_callable(lambda q, r, answers: "T" if r in answers else "F")
        >>> judge(Example(question="2+2?", answers=("4",)), "4")
        Judgement(label='faithful', alias=None, span=None, reason='callable judge said T')
    """

    def judge(example: Example, response: str) -> Judgement:
        raw = fn(example.question, response, example.answers)
        return Judgement(to_label(raw), reason=f"callable judge said {raw}")

    return judge


def to_label(raw: str) -> Label:
    """Map a label spelling (see :data:`LABEL_ALIASES`) to an hlens label.

    Example:
        >>> to_label(" True "), to_label("f")
        ('faithful', 'hallucinated')
    """
    key = str(raw).strip().lower()
    if key not in LABEL_ALIASES:
        raise ValueError(
            f"cannot read the judge label {raw!r}; expected one of {sorted(LABEL_ALIASES)}"
        )
    return LABEL_ALIASES[key]


# ----------------------------------------------------------------------------- consistency filter


@dataclass(frozen=True)
class Funnel:
    """How many questions survive consistency filtering, and why the others do not.

    Attributes:
        n_questions: questions given.
        n_consistent_faithful: judged faithful in all samples (kept).
        n_consistent_hallucinated: judged hallucinated in all samples (kept).
        n_mixed: both faithful and hallucinated samples, no uncertain one (dropped).
        n_with_uncertain: at least one uncertain sample (dropped).
        n_incomplete: fewer samples than required (dropped).
    """

    n_questions: int
    n_consistent_faithful: int
    n_consistent_hallucinated: int
    n_mixed: int
    n_with_uncertain: int
    n_incomplete: int = 0

    @property
    def n_kept(self) -> int:
        return self.n_consistent_faithful + self.n_consistent_hallucinated

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> Funnel:
        return cls(**d)


@dataclass(frozen=True)
class ConsistencyResult:
    """Output of :func:`consistency_filter`.

    Attributes:
        kept: question id -> ``"faithful"`` or ``"hallucinated"`` for the consistent questions.
        funnel: the counts.
    """

    kept: dict[str, Label]
    funnel: Funnel

    @property
    def faithful_ids(self) -> list[str]:
        return [q for q, lab in self.kept.items() if lab == "faithful"]

    @property
    def hallucinated_ids(self) -> list[str]:
        return [q for q, lab in self.kept.items() if lab == "hallucinated"]

    def to_dict(self) -> dict[str, Any]:
        return {"kept": dict(self.kept), "funnel": self.funnel.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsistencyResult:
        return cls(kept=dict(d["kept"]), funnel=Funnel.from_dict(d["funnel"]))


def consistency_filter(
    samples: Mapping[str, Sequence[str]], n_samples: int | None = None
) -> ConsistencyResult:
    """Keep questions judged faithful in every sample, or hallucinated in every sample.

    A question with any uncertain sample is dropped (counted in ``n_with_uncertain``). Labels may
    use any spelling in :data:`LABEL_ALIASES`, so the official ``"true"``/``"false"`` work as-is.

    Args:
        samples: question id -> the labels of its sampled responses.
        n_samples: if given, questions with fewer labels are dropped as incomplete (and more
            labels raise ``ValueError``).

    Example:
        >>> r = consistency_filter({"q1": ["true"] * 3, "q2": ["false"] * 3,
        ...                         "q3": ["true", "false", "true"], "q4": ["true", "uncertain"]})
        >>> r.kept
        {'q1': 'faithful', 'q2': 'hallucinated'}
        >>> r.funnel.n_mixed, r.funnel.n_with_uncertain
        (1, 1)
    """
    kept: dict[str, Label] = {}
    mixed = uncertain = incomplete = 0
    for qid, raw in samples.items():
        labels = [to_label(x) for x in raw]
        if n_samples is not None and len(labels) > n_samples:
            raise ValueError(f"question {qid!r} has {len(labels)} labels but n_samples={n_samples}")
        if not labels or (n_samples is not None and len(labels) < n_samples):
            incomplete += 1
        elif "uncertain" in labels:
            uncertain += 1
        elif len(set(labels)) > 1:
            mixed += 1
        else:
            kept[qid] = labels[0]
    n_f = sum(lab == "faithful" for lab in kept.values())
    funnel = Funnel(
        n_questions=len(samples),
        n_consistent_faithful=n_f,
        n_consistent_hallucinated=len(kept) - n_f,
        n_mixed=mixed,
        n_with_uncertain=uncertain,
        n_incomplete=incomplete,
    )
    return ConsistencyResult(kept=kept, funnel=funnel)


# ----------------------------------------------------------------------------- answer spans

_TRAILING_PUNCT = ".,;:!?"
_QUOTES = "\"'“”‘’«»`"


def strip_end_tokens(response: str, end_tokens: Sequence[str] = END_TOKENS) -> str:
    """``response`` without trailing end-of-turn tokens (see :data:`END_TOKENS`) and whitespace.

    Example:
        >>> strip_end_tokens("Paris.<end_of_turn>\\n")
        'Paris.'
    """
    text = response.rstrip()
    changed = True
    while changed:
        changed = False
        for tok in end_tokens:
            if tok and text.endswith(tok):
                text = text[: -len(tok)].rstrip()
                changed = True
    return text


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` narrowed past surrounding whitespace, quotes and trailing punctuation.

    Example:
        >>> trim_span(' "Paris." ', 0, 10)
        (2, 7)
    """
    while True:
        before = (start, end)
        while start < end and text[start].isspace():
            start += 1
        while end > start and (text[end - 1].isspace() or text[end - 1] in _TRAILING_PUNCT):
            end -= 1
        if end - start >= 2 and text[start] in _QUOTES and text[end - 1] in _QUOTES:
            start, end = start + 1, end - 1
        if (start, end) == before:
            return start, end


def _answer_only_span(response: str, max_words: int | None) -> tuple[int, int] | None:
    text = strip_end_tokens(response)
    start, end = trim_span(text, 0, len(text))
    if start >= end:
        return None
    if max_words is not None and len(text[start:end].split()) > max_words:
        return None
    return start, end


def locate_answer(
    response: str,
    target: Judgement | Sequence[str] | None = None,
    *,
    extractor: Callable[[str], tuple[int, int] | None] | None = None,
    max_words: int | None = 12,
) -> tuple[int, int] | None:
    """The character span of the answer in ``response``, or ``None`` when it cannot be found.

    Tried in order: ``extractor(response)`` if given; the judgement's span, or the best whole-word
    alias match if ``target`` is a list of aliases; finally, for short answer-only responses, the
    whole response without surrounding whitespace, quotes, trailing punctuation and end tokens.

    Args:
        response: the model's response.
        target: a :class:`Judgement` (uses its span) or gold aliases (matched as by
            :class:`RuleJudge`), or ``None``.
        extractor: optional user callable ``response -> (start, end) | None``.
        max_words: the answer-only fallback applies only to responses of at most this many
            words (a longer response is not "the answer"; ``None`` for no limit).

    Example:
        >>> locate_answer("Sarajevo.<|eot_id|>")
        (0, 8)
        >>> r = "The capital is Sarajevo."
        >>> r[slice(*locate_answer(r, ["sarajevo"]))]
        'Sarajevo'
        >>> locate_answer("I think it may be one of several places in the Balkans, maybe Bosnia or "
        ...               "somewhere near there.") is None
        True
    """
    if extractor is not None:
        span = extractor(response)
        if span is not None:
            start, end = int(span[0]), int(span[1])
            if not 0 <= start < end <= len(response):
                raise ValueError(
                    f"the span extractor returned {span} for a response of {len(response)} "
                    f"characters; expected 0 <= start < end <= {len(response)}"
                )
            return start, end
    if isinstance(target, Judgement):
        if target.span is not None:
            return target.span
    elif target is not None:
        hit = RuleJudge().match_alias(response, target)
        if hit is not None:
            return hit[1]
    return _answer_only_span(response, max_words)


@dataclass(frozen=True)
class SkippedExample:
    """An example left out of a step, and why."""

    id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def attach_answer_spans(
    examples: Iterable[Example],
    *,
    judge: Judge | None = None,
    extractor: Callable[[str], tuple[int, int] | None] | None = None,
    max_words: int | None = 12,
) -> tuple[list[Example], list[SkippedExample]]:
    """Judge (if ``judge`` is given) and mark the answer span of each example's response.

    Examples without a label (and no judge), uncertain ones, and those whose span cannot be found
    are returned in the skipped list with a reason; they are never kept with a guessed span.

    Example:
        >>> exs = [Example(question="q", response="York.", id="a", answers=("york",)),
        ...        Example(question="q", response="I don't know", id="b", answers=("york",))]
        >>> kept, skipped = attach_answer_spans(exs, judge=RuleJudge())
        >>> [(e.id, e.label, e.answer_text) for e in kept]
        [('a', 'faithful', 'York')]
        >>> print(skipped[0].id, skipped[0].reason)
        b uncertain: refusal marker "i don't know"
    """
    kept: list[Example] = []
    skipped: list[SkippedExample] = []
    for ex in examples:
        judgement = judge(ex, ex.response) if judge is not None else None
        label = judgement.label if judgement is not None else ex.label
        if label is None:
            skipped.append(SkippedExample(ex.id, "no label and no judge"))
            continue
        if label == "uncertain":
            why = judgement.reason if judgement is not None and judgement.reason else "label"
            skipped.append(SkippedExample(ex.id, f"uncertain: {why}"))
            continue
        target: Judgement | Sequence[str] | None = judgement
        if target is None or target.span is None:
            target = ex.answers if label == "faithful" else None
        span = locate_answer(ex.response, target, extractor=extractor, max_words=max_words)
        if span is None:
            skipped.append(
                SkippedExample(
                    ex.id,
                    f"cannot locate the answer of a {label} response "
                    f"({len(ex.response.split())} words; pass a span extractor)",
                )
            )
            continue
        meta = dict(ex.meta)
        if judgement is not None and judgement.alias is not None:
            meta["matched_alias"] = judgement.alias
        kept.append(ex.replace(label=label, answer_span=span, meta=meta))
    return kept, skipped
