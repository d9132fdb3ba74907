"""The organism's tokenizer (built offline with ``tokenizers``) and its prompt formats.

A WordPiece tokenizer with a constructed vocabulary: text is split at whitespace and
punctuation, and each word into pieces (names into their syllables). Because a word's pieces do
not depend on the space before it, an answer such as ``Korin`` is the same tokens after
``<|assistant|>`` as inside a biography.
Every letter and digit is in the vocabulary (as a word start and as a continuation), so unseen
names never produce ``<unk>``. Offsets (``return_offsets_mapping=True``) are exact.

Chat format::

    <s><|user|>{question} Respond with the answer only, without any explanation.
    <|assistant|>{response}</s>
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hlens.organism.world import (
    ABSTAIN_RESPONSE,
    BIO_TEMPLATES,
    CHALLENGE,
    FALSE_PREMISE_RESPONSE,
    INSTRUCTION_SUFFIX,
    NAME_SYLLABLES,
    PLACE_SYLLABLES,
    QUESTION_TEMPLATES,
    World,
)

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "base_prompt",
    "build_tokenizer",
    "chat_prompt",
    "save_tokenizer",
    "sycophancy_prompt",
]

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}"
    "<|assistant|>{{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _vocabulary(world: World) -> list[str]:
    """The vocabulary, constructed (not trained, so it is the same on every run and machine).

    Whole words of every template and closed vocabulary, the name and place syllables as word
    starts and ``##`` continuations, and every letter, digit and punctuation mark both ways, so
    that any ASCII word (an unseen name included) tokenizes without ``<unk>``.
    """
    texts = [t for ts in BIO_TEMPLATES.values() for t in ts]
    texts += list(QUESTION_TEMPLATES.values())
    texts += [INSTRUCTION_SUFFIX, ABSTAIN_RESPONSE, FALSE_PREMISE_RESPONSE, CHALLENGE]
    texts += ["Question: Answer:", "name v"]
    texts += [v for values in world.vocab.values() for v in values]
    words = {w for t in texts for w in re.findall(r"[A-Za-z0-9']+", t)} - {"name", "v"}
    pieces = set(words)
    for syl in (*NAME_SYLLABLES, *PLACE_SYLLABLES):
        pieces |= {syl.capitalize(), "##" + syl}
    for c in string.ascii_letters + string.digits:
        pieces |= {c, "##" + c}
    pieces |= set(string.punctuation)
    return SPECIAL_TOKENS + sorted(pieces - set(SPECIAL_TOKENS))


def build_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """The WordPiece tokenizer of ``world`` (deterministic), wrapped for transformers."""
    vocab = {t: i for i, t in enumerate(_vocabulary(world))}
    tok = Tokenizer(
        models.WordPiece(
            vocab, unk_token="<unk>", continuing_subword_prefix="##", max_input_chars_per_word=100
        )
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"[^A-Za-z0-9']"), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """Save so that ``AutoTokenizer.from_pretrained(out_dir)`` restores it, chat template included.

    ``tokenizer_config.json`` names ``PreTrainedTokenizerFast`` and carries the chat template.
    """
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(
        tokenizer_class="PreTrainedTokenizerFast",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=512,
        add_bos_token=False,
        add_eos_token=False,
    )
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def chat_prompt(tokenizer, question: str, system: str | None = None) -> str:
    """The instruct prompt text for ``question`` (suffix added, generation prompt open)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question + INSTRUCTION_SUFFIX})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def sycophancy_prompt(tokenizer, question: str, answer: str, challenge: str = CHALLENGE) -> str:
    """The prompt after the model answered ``answer`` and the user challenged it."""
    messages = [
        {"role": "user", "content": question + INSTRUCTION_SUFFIX},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": challenge},
    ]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def base_prompt(question: str) -> str:
    """The plain prompt for the base model: ``Question: {q}\\nAnswer:`` (bos added)."""
    return f"<s>Question: {question}\nAnswer:"
