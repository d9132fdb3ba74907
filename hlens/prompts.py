"""Prompt formatting and token regions.

An :class:`~hlens.examples.Example` is rendered to text with the tokenizer's chat template when it
has one (or a plain ``Q: ... A:`` template otherwise), tokenized with offset mappings, and each
token is assigned to regions by *character offsets*, never by matching decoded token strings:

- ``prompt``: tokens before the response (chat scaffolding, question, assistant header);
- ``response``: tokens that overlap the response text;
- ``answer``: tokens that overlap the answer span (a token that starts before the answer and ends
  inside it counts, so answers starting mid-token are covered);
- ``response_except_answer``: ``response`` and not ``answer``;
- ``all_except_answer``: every real (non-padding) token that is not ``answer``. This is the
  official H-Neurons "other" region: it includes the prompt.

Example:
    >>> from hlens.examples import Example
    >>> fmt = PromptFormat(template="plain")
    >>> r = render(Example("Who?", "It was Ada."), tokenizer=None, fmt=fmt)
    >>> r.text
    'Q: Who?\\nA: It was Ada.'
    >>> r.text[r.response_start:r.response_end]
    'It was Ada.'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from hlens.examples import Example

__all__ = [
    "FEW_SHOT_QA",
    "PAPER_INSTRUCTION",
    "PROMPT_FORMATS",
    "REGIONS",
    "PromptFormat",
    "Rendered",
    "TokenBatch",
    "prompt_format",
    "prompt_ids",
    "register_prompt_format",
    "render",
    "tokenize_examples",
]

REGIONS: tuple[str, ...] = (
    "prompt",
    "response",
    "answer",
    "response_except_answer",
    "all_except_answer",
)

#: The paper's user-turn suffix for TriviaQA sampling.
PAPER_INSTRUCTION = " Respond with the answer only, without any explanation."

#: Demonstrations for base models' few-shot ``Q:``/``A:`` prompt. They are not TriviaQA questions
#: (so no test question leaks into the prompt) and not the easy questions hlens's tests ask.
FEW_SHOT_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital of Japan?", "Tokyo"),
    ("Who wrote the novel Pride and Prejudice?", "Jane Austen"),
    ("Which planet is known as the Red Planet?", "Mars"),
)


@dataclass(frozen=True)
class PromptFormat:
    """How an example becomes text.

    Attributes:
        template: ``"auto"`` uses the tokenizer's chat template if it has one, else ``plain``;
            ``"chat"`` requires a chat template; ``"plain"`` uses ``plain_template``.
        instruction: text appended to the question in the user turn (e.g.
            :data:`PAPER_INSTRUCTION`).
        plain_template: the prompt for ``plain``; ``{question}`` is replaced by the user turn.
            Base models in the origin analysis use ``"Question: {question}\\nAnswer:"``.
        separator: text between a plain prompt and the response.
        end_of_turn: with a chat template, render the assistant turn with the template too, so the
            end-of-turn tokens follow the response (as the official extraction does). Without a chat
            template nothing follows the response.
        few_shot: ``(question, answer)`` demonstrations put before the question: earlier
            ``plain_template`` lines (each followed by ``separator``, the answer and a newline),
            or earlier user/assistant turns with a chat template.
        cut_at_newline: a response ends at its first newline (a base model's few-shot prompt:
            after its answer it starts the next ``Q:`` line). Sampling stops there.
    """

    template: Literal["auto", "chat", "plain"] = "auto"
    instruction: str = ""
    plain_template: str = "Q: {question}\nA:"
    separator: str = " "
    end_of_turn: bool = True
    few_shot: tuple[tuple[str, str], ...] = ()
    cut_at_newline: bool = False

    def __post_init__(self) -> None:
        if self.template not in ("auto", "chat", "plain"):
            raise ValueError(
                f"PromptFormat.template must be 'auto', 'chat' or 'plain', got {self.template!r}"
            )
        if "{question}" not in self.plain_template:
            raise ValueError(
                "PromptFormat.plain_template must contain '{question}', got "
                f"{self.plain_template!r}"
            )
        shots = tuple((str(q), str(a)) for q, a in self.few_shot)
        object.__setattr__(self, "few_shot", shots)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["few_shot"] = [list(x) for x in self.few_shot]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptFormat:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown PromptFormat fields {sorted(unknown)}; expected {sorted(known)}"
            )
        d = dict(d)
        if "few_shot" in d:
            d["few_shot"] = tuple(tuple(x) for x in d["few_shot"])
        return cls(**d)


#: name -> factory(instruction) -> PromptFormat. ``hlens find --prompt NAME``; known models name
#: theirs in :mod:`hlens.zoo`.
PROMPT_FORMATS: dict[str, Callable[[str], PromptFormat]] = {
    # the paper's: the chat template, the question plus the instruction in the user turn
    "chat": lambda instruction: PromptFormat(template="chat", instruction=instruction),
    # a chat template if the tokenizer has one, else the plain template (hlens's old default)
    "auto": lambda instruction: PromptFormat(template="auto", instruction=instruction),
    "plain": lambda instruction: PromptFormat(template="plain", instruction=instruction),
    # base models: three Q:/A: demonstrations, the answer ends at the first newline
    "fewshot_qa": lambda instruction: PromptFormat(
        template="plain", few_shot=FEW_SHOT_QA, cut_at_newline=True
    ),
}


def register_prompt_format(name: str, factory: Callable[[str], PromptFormat]) -> None:
    """Register a prompt format under ``name`` (``factory(instruction) -> PromptFormat``)."""
    PROMPT_FORMATS[name] = factory


def prompt_format(name: str | None, tokenizer: Any = None, instruction: str = "") -> PromptFormat:
    """The prompt format called ``name``; ``None`` picks ``chat`` or ``fewshot_qa``.

    With ``name=None`` a tokenizer with a chat template gets ``"chat"`` and one without (a base
    model) gets ``"fewshot_qa"``.

    Example:
        >>> prompt_format("fewshot_qa").cut_at_newline
        True
        >>> prompt_format(None, None).template
        'plain'
    """
    if name is None:
        has_chat = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        name = "chat" if has_chat else "fewshot_qa"
    if name not in PROMPT_FORMATS:
        raise ValueError(
            f"unknown prompt format {name!r}; expected one of {', '.join(sorted(PROMPT_FORMATS))}"
        )
    return PROMPT_FORMATS[name](instruction)


@dataclass(frozen=True)
class Rendered:
    """An example as text, with the character range of the response and answer in that text."""

    text: str
    response_start: int
    response_end: int
    answer_start: int | None
    answer_end: int | None
    add_special_tokens: bool

    @property
    def prompt(self) -> str:
        return self.text[: self.response_start]


def _uses_chat(tokenizer: Any, fmt: PromptFormat) -> bool:
    has_chat = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if fmt.template == "chat" and not has_chat:
        raise ValueError(
            "PromptFormat(template='chat') needs a tokenizer with a chat template; this tokenizer "
            "has none. Use template='plain' or 'auto'."
        )
    return fmt.template != "plain" and has_chat


def render(example: Example, tokenizer: Any, fmt: PromptFormat | None = None) -> Rendered:
    """Render ``example`` as the text the model reads, locating the response and answer.

    Raises:
        ValueError: if the chat template does not reproduce the response verbatim.
    """
    fmt = fmt or PromptFormat()
    user = example.question + fmt.instruction
    if _uses_chat(tokenizer, fmt):
        msgs = [{"role": "system", "content": example.system}] if example.system else []
        for q, a in fmt.few_shot:
            msgs += [{"role": "user", "content": q + fmt.instruction}]
            msgs += [{"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": user})
        prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        text = prompt + example.response
        if fmt.end_of_turn and example.response:
            full = tokenizer.apply_chat_template(
                [*msgs, {"role": "assistant", "content": example.response}], tokenize=False
            )
            if full.startswith(text):
                text = full
        start, add_special = len(prompt), False
    else:
        if example.system:
            user = example.system + "\n\n" + user
        shots = "".join(
            fmt.plain_template.format(question=q + fmt.instruction) + fmt.separator + a + "\n"
            for q, a in fmt.few_shot
        )
        prompt = shots + fmt.plain_template.format(question=user)
        if example.response:
            prompt += fmt.separator
        text = prompt + example.response
        start, add_special = len(prompt), True
    end = start + len(example.response)
    if text[start:end] != example.response:
        raise ValueError(f"the chat template altered the response of example {example.name}")
    a_start = a_end = None
    if example.answer_span is not None:
        a_start, a_end = start + example.answer_span[0], start + example.answer_span[1]
    return Rendered(text, start, end, a_start, a_end, add_special)


def prompt_ids(example: Example, tokenizer: Any, fmt: PromptFormat | None = None) -> list[int]:
    """The token ids a model reads before it generates its response to ``example``.

    The prompt is tokenized exactly as :func:`tokenize_examples` tokenizes the full text: with the
    tokenizer's special tokens for a plain prompt (so Gemma gets its ``<bos>``), without them for
    a chat template (which writes its own). Sampling, steering and evaluation take these ids, so
    that generation sees what CETT extraction sees.

    Example:
        >>> tok = hlens.load("organism").tokenizer  # doctest: +SKIP
        >>> prompt_ids(Example("Who?"), tok, PromptFormat(template="plain"))[0]  # doctest: +SKIP
        1
    """
    r = render(example.replace(response="", answer_span=None), tokenizer, fmt)
    ids = list(tokenizer(r.text, add_special_tokens=r.add_special_tokens)["input_ids"])
    eos = getattr(tokenizer, "eos_token_id", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    if r.add_special_tokens and eos is not None and eos != bos and ids and ids[-1] == eos:
        ids = ids[:-1]  # a tokenizer that appends EOS (T5-style) must not end the prompt
    return ids


@dataclass
class TokenBatch:
    """Tokenized, padded examples with region masks.

    Attributes:
        tokens: token ids, padded on ``padding_side``.
        attention_mask: 1 for real tokens, 0 for padding.
        regions: boolean masks for each name in :data:`REGIONS` (``answer`` masks are all False
            for examples without an answer span).
        examples: the examples, in batch order.
        padding_side: ``"left"`` or ``"right"``.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    regions: dict[str, Bool[Tensor, "batch pos"]] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    padding_side: str = "right"

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def region(self, name: str) -> Bool[Tensor, "batch pos"]:
        """The mask of one region, with a clear error for an unknown name."""
        if name not in self.regions:
            raise ValueError(f"unknown region {name!r}; expected one of {REGIONS}")
        return self.regions[name]

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.tokens.to(device),
            self.attention_mask.to(device),
            {k: v.to(device) for k, v in self.regions.items()},
            self.examples,
            self.padding_side,
        )


def _overlaps(offsets: list[tuple[int, int]], start: int, end: int) -> list[bool]:
    return [s < end and e > start and e > s for s, e in offsets]


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    fmt: PromptFormat | None = None,
    *,
    padding_side: Literal["left", "right"] | None = None,
    max_length: int | None = None,
    require_answer: bool = False,
) -> TokenBatch:
    """Tokenize examples into a padded batch with region masks from offset mappings.

    Args:
        examples: the examples to tokenize.
        tokenizer: a Hugging Face *fast* tokenizer (offset mappings are required).
        fmt: how to render each example (default: chat template if any, else plain).
        padding_side: ``"left"`` or ``"right"``; defaults to the tokenizer's.
        max_length: raise if an example is longer than this (the model's context).
        require_answer: raise if an example has no answer span.

    Raises:
        ValueError: naming the example, if its answer span covers no token, it has no span while
            ``require_answer`` is set, or it is longer than ``max_length``.
    """
    if not examples:
        raise ValueError("tokenize_examples needs at least one example, got none")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"hlens needs a fast tokenizer (offset mappings), got {type(tokenizer).__name__}"
        )
    side = padding_side or getattr(tokenizer, "padding_side", "right")
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    fmt = fmt or PromptFormat()
    rows: list[tuple[list[int], dict[str, list[bool]]]] = []
    for ex in examples:
        r = render(ex, tokenizer, fmt)
        enc = tokenizer(
            r.text, add_special_tokens=r.add_special_tokens, return_offsets_mapping=True
        )
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        if max_length is not None and len(ids) > max_length:
            raise ValueError(
                f"example {ex.name} is {len(ids)} tokens long, longer than the model's context "
                f"of {max_length} tokens"
            )
        resp = _overlaps(offsets, r.response_start, r.response_end)
        first_resp = resp.index(True) if any(resp) else len(ids)
        prompt = [i < first_resp and not resp[i] for i in range(len(ids))]
        if r.answer_start is not None:
            ans = _overlaps(offsets, r.answer_start, r.answer_end)
            if not any(ans):
                raise ValueError(
                    f"cannot locate the answer span {ex.answer_span} of example {ex.name} in its "
                    f"tokens (answer {ex.answer_text!r})"
                )
        else:
            if require_answer:
                raise ValueError(f"example {ex.name} has no answer span, but one is required")
            ans = [False] * len(ids)
        masks = {
            "prompt": prompt,
            "response": resp,
            "answer": ans,
            "response_except_answer": [a and not b for a, b in zip(resp, ans, strict=True)],
            "all_except_answer": [not b for b in ans],
        }
        rows.append((ids, masks))
    width = max(len(ids) for ids, _ in rows)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    regions = {name: torch.zeros((len(rows), width), dtype=torch.bool) for name in REGIONS}
    for b, (ids, masks) in enumerate(rows):
        sl = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
        tokens[b, sl] = torch.tensor(ids, dtype=torch.long)
        attn[b, sl] = 1
        for name in REGIONS:
            regions[name][b, sl] = torch.tensor(masks[name], dtype=torch.bool)
    return TokenBatch(tokens, attn, regions, list(examples), side)
