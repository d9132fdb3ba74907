"""Shared test helpers: tiny seeded Hugging Face checkpoints and a tokenizer, built offline."""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Q: Where was Ada Vell born?\nA: Ada Vell was born in Korin in 1947.",
    "Respond with the answer only, without any explanation.",
    "Zoë Čapek moved to Zürich; naïve café owners smiled. 東京 is a city.",
    "I don't know. I don't think that's right. Are you sure?",
    "Paris, London, Berlin, Rome, Madrid, Lisbon, Vienna, Prague, Oslo.",
    "0123456789 user assistant system",
]

FAMILIES = ("gpt2", "llama", "qwen2", "gemma2", "gemma3", "mistral")


def build_tokenizer(chat_template: bool = True, pad_token: bool = True):
    """A byte-level BPE tokenizer trained on a tiny corpus, offline and deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "<|user|>",
        "<|assistant|>",
        "<|system|>",
        "<|end|>",
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if pad_token:
        kwargs["pad_token"] = "<pad>"
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def build_config(family: str, vocab_size: int, **overrides):
    import transformers as T

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    gpt2 = dict(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        n_inner=48,
        bos_token_id=1,
        eos_token_id=2,
    )
    builders = {
        "gpt2": lambda: T.GPT2Config(**gpt2),
        "llama": lambda: T.LlamaConfig(**common),
        "mistral": lambda: T.MistralConfig(**common),
        "qwen2": lambda: T.Qwen2Config(**common),
        "gemma2": lambda: T.Gemma2Config(head_dim=8, **common),
        "gemma3": lambda: T.Gemma3TextConfig(head_dim=8, **common),
    }
    if family not in builders:
        raise ValueError(f"unknown test family {family!r}; expected one of {sorted(builders)}")
    cfg = builders[family]()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def build_checkpoint(family: str, out: Path, *, seed: int = 0, tokenizer=None, **overrides) -> Path:
    """Save a seeded random checkpoint of ``family`` (and a tokenizer) to ``out``."""
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(family, len(tokenizer), **overrides))
    # Random init has tiny weights in some families; widen them so activations are not ~0.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def reference_filter(logits, cfg):
    """``cfg``'s temperature, top-k and top-p applied to the whole vocabulary (before #18)."""
    logits = logits / cfg.temperature
    vocab = logits.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= 1 - cfg.top_p
        remove[:, -1] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def reference_choose(logits, gens, cfg):
    """hlens's next-token choice before it filtered only top-k's tokens (#18): the whole
    vocabulary tempered, top-k and top-p filtered and given Gumbel noise (the reference that
    ``hlens.sampling._choose`` must equal; ``benchmarks/bench_sampling.py`` times it)."""
    if cfg.greedy:
        return logits.argmax(dim=-1)
    logits = reference_filter(logits.double(), cfg)
    u = torch.stack([torch.rand(logits.shape[-1], generator=g, dtype=torch.float64) for g in gens])
    exp_noise = -torch.log(u.clamp_min(1e-300))
    gumbel = -torch.log(exp_noise.clamp_min(1e-300))
    return (logits + gumbel.to(logits.device)).argmax(dim=-1)  # drawn on the CPU
