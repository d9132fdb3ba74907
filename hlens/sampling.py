"""Seeded, batched sampling of responses from a Hugging Face causal LM, with a resumable store.

Sampling is deterministic per ``(seed, id, sample index)``: every sequence draws its noise from
its own ``torch.Generator`` seeded from a stable hash of that triple, and picks its token by the
Gumbel-max trick on the filtered (temperature, top-k, top-p) distribution. The result therefore
does not depend on how questions are batched (up to float ties between logits). With
``temperature == 0`` decoding is greedy and the ``n_samples`` samples are one greedy decode.

Prompts are rendered texts (e.g. from ``tokenizer.apply_chat_template(..., tokenize=False)``),
tokenized with ``add_special_tokens=False``, or lists of token ids, used as they are (so a base
model can be given its BOS). Decoding runs with a KV cache until every row produced the EOS token
(or, with ``stop_at_newline``, a token containing a newline) or ``max_new_tokens`` tokens.

What makes it fast, without changing the tokens chosen: prompts are batched by token length
(left-padded within a batch); a token prefix common to every prompt of a call (system prompt,
chat scaffolding, few-shot turns) is encoded once and its KV cache copied into each batch; the
``n_samples`` rows of a prompt share one prompt encoding; rows that finish leave the batch (their
KV cache rows are dropped); only the last position's logits are computed when prompts are encoded;
when sampling, temperature, top-p and the Gumbel noise are applied to the tokens top-k keeps only,
not to the whole vocabulary (:mod:`hlens.token_choice`; each row still draws one uniform per
vocabulary token and step, so the samples are those of filtering the whole vocabulary).

Example:
    >>> cfg = SamplingConfig(n_samples=4, temperature=1.0, seed=0)
    >>> responses = sample_responses(model, tokenizer, prompts, ids, cfg)  # doctest: +SKIP
    >>> recs = sample_to_jsonl("s.jsonl", model, tokenizer, prompts, ids, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import os
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, DynamicLayer

from hlens.token_choice import NOISE, choose, noise_streams

__all__ = [
    "Prompt",
    "SamplingConfig",
    "read_jsonl",
    "row_seed",
    "sample_responses",
    "sample_to_jsonl",
]

#: A prompt: a rendered text (tokenized with ``add_special_tokens=False``) or token ids.
Prompt = str | Sequence[int] | Int[torch.Tensor, " pos"]


@dataclass
class SamplingConfig:
    """How responses are sampled.

    Attributes:
        n_samples: responses per question.
        temperature: softmax temperature; ``0`` means greedy decoding.
        top_p: nucleus sampling: keep the smallest set of tokens with this much probability
            (``1.0`` disables it).
        top_k: keep only the ``top_k`` most likely tokens (``0`` disables it).
        max_new_tokens: the longest response; a response that reaches it without EOS is
            reported as truncated.
        seed: base seed; each sample's noise comes from ``(seed, id, sample index)``.
        batch_size: sequences (question x sample) per forward pass.
        stop_at_newline: end a response at the first generated token whose text contains a
            newline; the response is the text before it, and it counts as finished, not
            truncated (for base models prompted with few-shot ``Q: ... A: ...`` turns).
        noise: where each sample's Gumbel noise comes from (both sample the filtered
            distribution by the Gumbel-max trick, independently of batching; their samples
            differ from each other).
            ``"mt19937"``: one CPU ``torch.Generator`` per sample, one uniform per vocabulary
            token and step (hlens's samples so far; stores without the field were sampled so).
            ``"counter"``: a hash of ``(seed, step, token)`` computed on the model's device for
            the tokens top-k keeps only: nothing is drawn on the CPU, and the values are the same
            on every device (with ``top_k=0`` it hashes every token, slower than ``"mt19937"``
            on a CPU).
    """

    n_samples: int = 10
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 50
    seed: int = 0
    batch_size: int = 64
    stop_at_newline: bool = False
    noise: str = "mt19937"

    def __post_init__(self) -> None:
        for name in ("n_samples", "max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SamplingConfig.{name} must be a positive integer, got {v!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be an integer >= 0, got {self.top_k!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"SamplingConfig.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.temperature, (int, float)) or not self.temperature >= 0:
            raise ValueError(
                f"SamplingConfig.temperature must be a number >= 0, got {self.temperature!r}"
            )
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.stop_at_newline, bool):
            raise ValueError(
                f"SamplingConfig.stop_at_newline must be a bool, got {self.stop_at_newline!r}"
            )
        if self.noise not in NOISE:
            raise ValueError(f"SamplingConfig.noise must be one of {NOISE}, got {self.noise!r}")

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (``temperature == 0``)."""
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingConfig:
        """The config of a :meth:`to_dict` dict; missing fields take their defaults (configs
        written before a field existed), unknown fields raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown SamplingConfig fields {sorted(unknown)}; expected {sorted(known)}"
            )
        return cls(**d)


def row_seed(seed: int, qid: str, k: int) -> int:
    """A stable 63-bit seed for sample ``k`` of question ``qid`` (independent of batching)."""
    h = hashlib.sha256(f"{seed}\x1f{qid}\x1f{k}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _choose(logits: torch.Tensor, gens: list, cfg: SamplingConfig) -> torch.Tensor:
    """``cfg``'s next-token choice (:func:`hlens.token_choice.choose`), the one place the sampler
    chooses (``benchmarks/bench_sampling.py`` swaps it for the whole-vocabulary reference)."""
    return choose(logits, gens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)


def _forward_kwargs(model) -> tuple[str, bool]:
    """The cache keyword of ``model.forward`` (``cache`` in newer transformers, else
    ``past_key_values``) and whether it accepts ``logits_to_keep``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values", False
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _cache_of(out):
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def _inert(hook) -> bool:
    """Whether ``hook`` is one that the libraries install themselves and that changes nothing
    while no hook point has hooks: transformers' output-capturing hooks (active only when hidden
    states or attentions are requested) and the capture hooks a TransformerLens block wires on
    first use (they keep the residual for split-QKV hooks and route the MLP input through
    ``hook_mlp_in``, a hook point whose own hooks :func:`_hooked` sees)."""
    module = getattr(hook, "__module__", "") or ""
    name = getattr(hook, "__qualname__", "") or ""
    return module == "transformers.utils.output_capturing" or (
        module.startswith("transformer_lens.model_bridge.")
        and name.startswith("BlockBridge._maybe_wire_capture_hooks.<locals>._capture_")
    )


def _hooked(model: torch.nn.Module) -> bool:
    """Whether a forward hook is registered on ``model``, any of its modules, or globally (a
    TransformerLens ``HookPoint`` holds its hooks as forward hooks), other than
    transformers' inert output-capturing hooks."""
    from torch.nn.modules import module as tmod

    if tmod._global_forward_hooks or tmod._global_forward_pre_hooks:
        return True
    return any(
        not _inert(h)
        for m in model.modules()
        for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    )


def _plain_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of a module tree with TransformerLens bridge wrappers replaced by the
    modules they wrap; parameters and buffers are the same tensors (never copied), hooks are not
    carried over, and the original tree is not changed."""
    inner = module.__dict__.get("_modules", {}).get("_original_component")
    while inner is not None and type(module).__module__.startswith("transformer_lens."):
        module = inner
        inner = module.__dict__.get("_modules", {}).get("_original_component")
    new = copy.copy(module)
    new.__dict__ = dict(module.__dict__)
    new._modules = OrderedDict(
        (k, None if v is None else _plain_copy(v)) for k, v in module._modules.items()
    )
    new._parameters = OrderedDict(module._parameters)
    new._buffers = OrderedDict(module._buffers)
    for name in (
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
    ):
        if name in new.__dict__:
            new.__dict__[name] = OrderedDict()
    return new


#: The attention implementation of :func:`_fast_model`'s copies (registered on first use).
_GQA_IMPL = "hlens_eager_gqa"


def _eager_gqa(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Llama's ``eager_attention_forward`` without ``repeat_kv``'s copy of the cache at decoding
    steps: the one query position of the ``num_key_value_groups`` query heads that share a
    key/value head are the rows of one matrix product with that head's cache, as it is (one
    ``[batch, kv_heads]`` batched product for the scores and one for the values, instead of
    ``[batch, heads]`` matrix-vector products on a repeated cache). The numbers differ from
    eager attention's by rounding only (about 1e-7 relative); greedy token ids are checked
    equal to the reference decoder in tests and to ``model.generate`` in
    ``benchmarks/bench_sampling.py``. Prompts (several positions) go through eager attention."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    rep = int(module.num_key_value_groups)
    b, h, q_len, d = query.shape
    if rep == 1 or q_len != 1:
        return eager_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    kvh = key.shape[1]
    w = torch.matmul(query.view(b, kvh, rep, d), key.transpose(2, 3))
    w = w.view(b, h, q_len, -1) * scaling
    if attention_mask is not None:
        w = w + attention_mask
    w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    w = torch.nn.functional.dropout(w, p=dropout, training=module.training)
    out = torch.matmul(w.view(b, kvh, rep, -1), value)
    return out.view(b, h, q_len, d).transpose(1, 2).contiguous(), w


class _ConfigView:
    """A model config seen through another ``_attn_implementation`` (every other attribute is
    the config's own)."""

    def __init__(self, config, impl: str) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_attn_implementation", impl)

    def __getattr__(self, name: str):
        return getattr(self._config, name)


def _llama_eager(module: torch.nn.Module) -> bool:
    """Whether ``module``'s family computes eager attention as Llama does (same bytecode)."""
    import sys

    from transformers.models.llama import modeling_llama

    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    ref = modeling_llama.eager_attention_forward
    return fn is ref or (
        fn is not None
        and fn.__code__.co_code == ref.__code__.co_code
        and fn.__code__.co_names == ref.__code__.co_names
    )


def _fast_model(model):
    """The model that sampling runs: ``model`` itself while any hook is registered on it (so
    interventions apply exactly), else a plain copy sharing its weights (see
    :func:`_plain_copy`): the bridge's wrappers cost a Python call per hook point and step.

    When every layer of the copy has full (not sliding-window) eager attention computed as
    Llama's, the copy's KV cache is preallocated (:class:`_BufferLayer`, marked by
    ``_hlens_kv_heads``) and its attention is :func:`_eager_gqa`: no step concatenates the
    cache or repeats its heads, and the numbers are those of eager attention.
    """
    if _hooked(model) or not hasattr(model, "config"):
        return model
    try:
        plain = _plain_copy(model)
    except Exception:  # an unexpected module layout: the model as it is
        return model
    if any(type(m).__module__.startswith("transformer_lens.") for m in plain.modules()):
        return model
    try:
        from transformers import DynamicCache
        from transformers.modeling_utils import AttentionInterface

        cfg = model.config.get_text_config(decoder=True)
        layers = DynamicCache(config=model.config).layers
        attn = [m for m in plain.modules() if hasattr(m, "num_key_value_groups")]
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        ok = (
            getattr(model.config, "_attn_implementation", None) == "eager"
            and layers
            and all(type(la) is DynamicLayer for la in layers)
            and len(attn) == len(layers)
            and all(getattr(m, "layer_idx", None) == i for i, m in enumerate(attn))
            and all(hasattr(m, "config") and _llama_eager(m) for m in attn)
        )
    except Exception:
        return plain
    if ok:
        if _GQA_IMPL not in AttentionInterface._global_mapping:
            AttentionInterface.register(_GQA_IMPL, _eager_gqa)
        for m in attn:
            m.config = _ConfigView(m.config, _GQA_IMPL)
        plain._hlens_kv_heads = (len(layers), kv_heads, head_dim)
    return plain


class _BufferLayer(DynamicLayer):
    """One layer's keys and values in preallocated buffers ``[batch, heads, capacity, head_dim]``:
    ``update`` writes in place and returns views of the first ``n`` positions (a
    ``DynamicLayer`` concatenates, copying the whole cache at every step)."""

    is_sliding = False
    is_compileable = False
    is_croppable = False
    is_initialized = True

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, n: int) -> None:
        super().__init__()
        self.is_initialized = True
        self.kbuf, self.vbuf, self.n = keys, values, n
        self.device = keys.device
        self._views()

    def _views(self) -> None:
        self.keys = self.kbuf[:, :, : self.n]
        self.values = self.vbuf[:, :, : self.n]

    def update(self, key_states, value_states, *args, **kwargs):
        q = key_states.shape[-2]
        if self.n + q > self.kbuf.shape[-2]:  # more positions than planned: grow
            grow = self.n + q - self.kbuf.shape[-2]
            pad = self.kbuf.new_zeros((*self.kbuf.shape[:2], grow, self.kbuf.shape[-1]))
            self.kbuf = torch.cat([self.kbuf, pad], dim=2)
            self.vbuf = torch.cat([self.vbuf, pad], dim=2)
        self.kbuf[:, :, self.n : self.n + q] = key_states
        self.vbuf[:, :, self.n : self.n + q] = value_states
        self.n += q
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.n + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.kbuf = self.kbuf.repeat_interleave(repeats, dim=0)
        self.vbuf = self.vbuf.repeat_interleave(repeats, dim=0)
        self._views()


def _kv_cache(model, keys: list, values: list, n: int):
    """A :class:`transformers.Cache` over :class:`_BufferLayer` buffers (one pair per layer)."""
    return Cache(layers=[_BufferLayer(k, v, n) for k, v in zip(keys, values)])


def _kv_buffers(model, rows: int, capacity: int) -> tuple[list, list]:
    """Key and value buffers of every layer for ``rows`` rows and ``capacity`` positions, not
    initialised (positions are written before they are read; padding must be zeroed)."""
    n_layers, heads, head_dim = model._hlens_kv_heads
    p = next(model.parameters())
    shape = (rows, heads, capacity, head_dim)
    keys = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in range(n_layers)]
    values = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in range(n_layers)]
    return keys, values


def _length_groups(lengths: list[int], overhead: int = 48) -> list[list[int]]:
    """Indices of ``lengths`` in groups of consecutive lengths (sorted) that minimise the padded
    tokens encoded plus ``overhead`` tokens per group (one forward call each)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        w = lengths[order[j - 1]]
        for i in range(j):
            c = best[i] + (j - i) * w + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


#: The shortest common token prefix worth encoding once and reusing (``_Prefix``).
_MIN_PREFIX = 4


def _common_prefix(prompt_ids: Sequence[Sequence[int]], minimum: int | None = None) -> int:
    """The length of the longest token prefix common to every prompt that leaves at least one
    token of each, or 0 when it is shorter than ``minimum`` (default: :data:`_MIN_PREFIX`, read
    at call time; CETT extraction shares it too)."""
    minimum = _MIN_PREFIX if minimum is None else minimum
    shortest = min(len(p) for p in prompt_ids)
    first = prompt_ids[0]
    n = 0
    while n < shortest - 1 and all(p[n] == first[n] for p in prompt_ids):
        n += 1
    return n if n >= minimum else 0


class _Prefix:
    """Token ids common to every prompt of a call, encoded once; its KV cache is copied per batch.

    Attributes:
        ids: the shared token ids (at least one token of every prompt is left after them).
        cache: the prefix's KV cache at batch size 1, or ``None`` when there is no prefix.
    """

    def __init__(self, model, prompt_ids: list[list[int]], fwd: dict[str, Any]) -> None:
        self.ids: list[int] = []
        self.cache = None
        first = prompt_ids[0]
        n = _common_prefix(prompt_ids)
        if n == 0:
            return
        device = next(model.parameters()).device
        ids = torch.tensor([first[:n]], dtype=torch.long, device=device)
        past = {}
        if getattr(model, "_hlens_kv_heads", None):
            past = {_forward_kwargs(model)[0]: _kv_cache(model, *_kv_buffers(model, 1, n), 0)}
        with torch.no_grad():  # a cache with autograd history could not be copied
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=torch.arange(n, device=device)[None],
                use_cache=True,
                **fwd,
                **past,
            )
        cache = _cache_of(out)
        if all(hasattr(cache, a) for a in ("batch_repeat_interleave", "batch_select_indices")):
            self.ids, self.cache = first[:n], cache

    def expand(self, n: int):
        """A fresh copy of the prefix cache for ``n`` rows."""
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        return cache


@torch.no_grad()
def _generate(
    model,
    prompt_ids: list[list[int]],
    repeats: int,
    seeds: list[int],
    cfg: SamplingConfig,
    eos_id: int,
    pad_id: int,
    prefix: _Prefix | None = None,
    stop_ids: torch.Tensor | None = None,
) -> tuple[list[list[int]], list[bool]]:
    """Decode ``repeats`` rows per prompt; returns generated ids (without EOS) and truncation.

    Each prompt is encoded once and its KV cache repeated (when the cache supports it). When
    ``prefix`` holds a cache, every prompt starts with ``prefix.ids`` and only the rest is
    encoded. Rows that finish leave the batch (their KV cache rows are dropped). ``stop_ids`` is
    a boolean mask over the vocabulary: a generated token in it is kept and ends its row.
    """
    device = next(model.parameters()).device
    cache_kw, keep = _forward_kwargs(model)
    extra = {"logits_to_keep": 1} if keep else {}
    n_pre = len(prefix.ids) if prefix is not None and prefix.cache is not None else 0
    suffixes = [p[n_pre:] for p in prompt_ids]
    n_prompts, width = len(suffixes), max(len(p) for p in suffixes)
    if getattr(model, "_hlens_kv_heads", None):
        past, logits, attn, pos, perm = _encode_buffered(
            model, suffixes, repeats, prefix if n_pre else None, cfg, pad_id, extra
        )
        seeds = [seeds[r] for r in perm]  # the buffers' rows are in length order
        gen, trunc = _decode(model, past, logits, attn, pos, seeds, cfg, eos_id, stop_ids, True)
        out_gen: list[list[int]] = [[] for _ in perm]
        out_trunc = [False] * len(perm)
        for j, r in enumerate(perm):
            out_gen[r], out_trunc[r] = gen[j], trunc[j]
        return out_gen, out_trunc
    input_ids = torch.full((n_prompts, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n_prompts, n_pre + width), dtype=torch.long)
    attn[:, :n_pre] = 1
    for i, p in enumerate(suffixes):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[i, n_pre + width - len(p) :] = 1
    input_ids, attn = input_ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)[:, n_pre:]
    past_in = {cache_kw: prefix.expand(n_prompts)} if n_pre else {}
    out = model(
        input_ids=input_ids,
        attention_mask=attn,
        position_ids=pos,
        use_cache=True,
        **extra,
        **past_in,
    )
    past = _cache_of(out)
    logits = out.logits[:, -1, :].float()
    pos = pos[:, -1:]
    if repeats > 1:
        if hasattr(past, "batch_repeat_interleave"):
            past.batch_repeat_interleave(repeats)
            logits = logits.repeat_interleave(repeats, dim=0)
        else:  # the cache cannot be repeated (so there is no prefix either): encode every row
            rep = lambda t: t.repeat_interleave(repeats, dim=0)  # noqa: E731
            out = model(
                input_ids=rep(input_ids),
                attention_mask=rep(attn),
                position_ids=rep((attn.cumsum(-1) - 1).clamp_min(0)),
                use_cache=True,
                **extra,
            )
            past = _cache_of(out)
            logits = out.logits[:, -1, :].float()
        attn = attn.repeat_interleave(repeats, dim=0)
        pos = pos.repeat_interleave(repeats, dim=0)
    return _decode(model, past, logits, attn, pos, seeds, cfg, eos_id, stop_ids)


def _encode_buffered(model, suffixes, repeats, prefix, cfg, pad_id, extra):
    """Encode prompts (after the shared prefix) into one :class:`_KVCache` laid out as the
    left-padded batch would be (prefix, padding, prompt), but without encoding the padding:
    prompts of similar lengths are encoded together (:func:`_length_groups`), each group writing
    into its rows of the one buffer. Returns the cache (rows repeated ``repeats`` times), the
    last position's logits, the attention mask, the last positions, and for each of these rows
    its row in the order of ``suffixes`` (prompt ``i``'s sample ``k`` is row ``i * repeats + k``).
    """
    device = next(model.parameters()).device
    cache_kw = _forward_kwargs(model)[0]
    n_pre = len(prefix.ids) if prefix is not None else 0
    n_prompts, width = len(suffixes), max(len(p) for p in suffixes)
    attn = torch.zeros((n_prompts, n_pre + width), dtype=torch.long)
    attn[:, :n_pre] = 1
    for i, p in enumerate(suffixes):
        attn[i, n_pre + width - len(p) :] = 1
    attn = attn.to(device)
    pos_all = (attn.cumsum(-1) - 1).clamp_min(0)
    # rows in length order, so that each group is a contiguous slice of the buffers
    groups = _length_groups([len(p) for p in suffixes])
    order = [i for g in groups for i in g]
    keys, values = _kv_buffers(model, n_prompts, n_pre + width + cfg.max_new_tokens)
    if prefix is not None:
        for k, v, la in zip(keys, values, prefix.cache.layers):
            k[:, :, :n_pre] = la.keys[:, :, :n_pre]
            v[:, :, :n_pre] = la.values[:, :, :n_pre]
    logits = None
    start = 0
    for g in groups:
        w = max(len(suffixes[i]) for i in g)
        rows = slice(start, start + len(g))
        start += len(g)
        ids = torch.full((len(g), w), pad_id, dtype=torch.long)
        for j, i in enumerate(g):
            ids[j, w - len(suffixes[i]) :] = torch.tensor(suffixes[i], dtype=torch.long)
        idx = torch.tensor(g, dtype=torch.long, device=device)
        cache = _kv_cache(model, [k[rows] for k in keys], [v[rows] for v in values], 0)
        for la in cache.layers:  # the padding is masked, but must be finite
            la.kbuf[:, :, n_pre : n_pre + width - w] = 0
            la.vbuf[:, :, n_pre : n_pre + width - w] = 0
            la.n = n_pre + width - w
            la._views()
        out = model(
            input_ids=ids.to(device),
            attention_mask=attn[idx],
            position_ids=pos_all[idx, n_pre + width - w :],
            use_cache=True,
            **extra,
            **{cache_kw: cache},
        )
        last = out.logits[:, -1, :].float()
        if logits is None:
            logits = last.new_empty((n_prompts, last.shape[-1]))
        logits[rows] = last
    if repeats > 1:
        keys = [k.repeat_interleave(repeats, dim=0) for k in keys]
        values = [v.repeat_interleave(repeats, dim=0) for v in values]
        logits = logits.repeat_interleave(repeats, dim=0)
    perm = [i * repeats + k for i in order for k in range(repeats)]
    idx = torch.tensor(order, dtype=torch.long, device=device)
    attn = attn[idx].repeat_interleave(repeats, dim=0)
    pos = pos_all[idx, -1:].repeat_interleave(repeats, dim=0)
    return _kv_cache(model, keys, values, n_pre + width), logits, attn, pos, perm


def _decode(model, past, logits, attn, pos, seeds, cfg, eos_id, stop_ids, lazy=False):
    """The decoding loop from the prompts' last logits and KV cache (see :func:`_generate`).

    With ``lazy``, finished rows leave the batch only once they are an eighth of it (dropping
    rows copies every layer's preallocated buffers)."""
    device = logits.device
    cache_kw = _forward_kwargs(model)[0]
    prune = hasattr(past, "batch_select_indices")
    n = logits.shape[0]
    gens = noise_streams(seeds, cfg.noise)
    generated: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    rows = list(range(n))  # the batch row -> output row
    stops = stop_ids.tolist() if stop_ids is not None else None
    for step in range(cfg.max_new_tokens):
        tokens = _choose(logits, [gens[r] for r in rows], cfg).tolist()
        for r, t in zip(rows, tokens):
            if finished[r]:
                continue
            if t == eos_id:
                finished[r] = True
                continue
            generated[r].append(t)
            if stops is not None and t < len(stops) and stops[t]:
                finished[r] = True
        if step == cfg.max_new_tokens - 1 or all(finished[r] for r in rows):
            break
        live = [j for j, r in enumerate(rows) if not finished[r]]
        done = len(rows) - len(live)
        if prune and done and (not lazy or done * 8 >= len(rows)):
            idx = torch.tensor(live, dtype=torch.long, device=device)
            past.batch_select_indices(idx)
            attn, pos = attn[idx], pos[idx]
            rows = [rows[j] for j in live]
            tokens = [tokens[j] for j in live]
        nxt = torch.tensor(
            [eos_id if finished[r] else t for r, t in zip(rows, tokens)], device=device
        )
        attn = torch.cat([attn, attn.new_ones((len(rows), 1))], dim=1)
        pos = pos + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            **{cache_kw: past},
        )
        past = _cache_of(out)
        logits = out.logits[:, -1, :].float()
    return generated, [not f for f in finished]


#: tokenizer -> boolean mask of the token ids whose decoded text contains a newline.
_NEWLINE_MASKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _newline_mask(tokenizer) -> torch.Tensor:
    """Which token ids decode (alone) to a text that contains ``"\n"``."""
    try:
        return _NEWLINE_MASKS[tokenizer]
    except (KeyError, TypeError):
        pass
    n = max(len(tokenizer), getattr(tokenizer, "vocab_size", 0) or 0)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=True)
    mask = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
    with contextlib.suppress(TypeError):  # a tokenizer that cannot be weakly referenced
        _NEWLINE_MASKS[tokenizer] = mask
    return mask


def _encode(tokenizer, prompts: Sequence[Prompt], ids: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt: texts tokenized without special tokens, id lists as they are."""
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    enc: list[list[int]] = [[] for _ in prompts]
    if texts:
        got = tokenizer([prompts[i] for i in texts], add_special_tokens=False)["input_ids"]
        for i, e in zip(texts, got):
            enc[i] = list(e)
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            if isinstance(p, torch.Tensor):
                p = p.reshape(-1).tolist()
            enc[i] = [int(t) for t in p]
    for i, e in enumerate(enc):
        if not e:
            raise ValueError(f"prompt of id {ids[i]!r} is empty after tokenization")
    return enc


def _iter_questions(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    ids: Sequence[str],
    cfg: SamplingConfig,
    progress: bool,
    desc: str,
) -> Iterator[list[tuple[str, list[str], list[bool]]]]:
    """Yield, batch by batch, ``(id, responses, truncated)`` for every question.

    Questions are batched by token length (longest first), so batches hold prompts of similar
    lengths; every question comes exactly once, but not in the order of ``prompts``.
    """
    if len(prompts) != len(ids):
        raise ValueError(f"got {len(prompts)} prompts but {len(ids)} ids; they must match")
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"ids must be unique; duplicated: {dup}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token_id; sampling needs one to stop")
    if not prompts:
        return
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    enc = _encode(tokenizer, prompts, ids)
    stop_ids = _newline_mask(tokenizer) if cfg.stop_at_newline else None
    rows_per_q = 1 if cfg.greedy else cfg.n_samples
    q_per_batch = max(1, cfg.batch_size // rows_per_q)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=desc, unit="q", disable=not progress, dynamic_ncols=True)
    try:
        run = _fast_model(model)  # hooks are looked for once, when sampling starts
        fwd = {"logits_to_keep": 1} if _forward_kwargs(run)[1] else {}
        with torch.no_grad():
            prefix = _Prefix(run, enc, fwd) if len(enc) > 1 else None
        for start in range(0, len(order), q_per_batch):
            chunk = order[start : start + q_per_batch]
            rows = [(j, k) for j in range(len(chunk)) for k in range(rows_per_q)]
            gen, trunc = _generate(
                run,
                [enc[i] for i in chunk],
                rows_per_q,
                [row_seed(cfg.seed, ids[chunk[j]], k) for j, k in rows],
                cfg,
                eos_id,
                pad_id,
                prefix,
                stop_ids,
            )
            texts = tokenizer.batch_decode(gen, skip_special_tokens=True)
            if cfg.stop_at_newline:
                texts = [t.split("\n", 1)[0] for t in texts]
            batch = []
            for j, i in enumerate(chunk):
                rs = texts[j * rows_per_q : (j + 1) * rows_per_q]
                ts = trunc[j * rows_per_q : (j + 1) * rows_per_q]
                if cfg.greedy:
                    rs, ts = rs * cfg.n_samples, ts * cfg.n_samples
                batch.append((ids[i], [r.strip() for r in rs], [bool(t) for t in ts]))
            yield batch
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)


def sample_responses(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    ids: Sequence[str],
    config: SamplingConfig,
    *,
    progress: bool = True,
    return_truncated: bool = False,
):
    """Sample ``config.n_samples`` responses for each prompt.

    Args:
        model: a Hugging Face causal LM (called with ``input_ids``, ``attention_mask``,
            ``position_ids``, ``past_key_values``, ``use_cache=True``).
        tokenizer: its tokenizer (needs ``eos_token_id``; ``pad_token_id`` defaults to EOS).
        prompts: rendered prompt texts (tokenized with ``add_special_tokens=False``) or lists
            of token ids (used as they are, e.g. to start with a base model's BOS).
        ids: one unique id per prompt (seeds the sampling noise).
        config: the :class:`SamplingConfig`.
        progress: show a tqdm bar.
        return_truncated: also return, per sample, whether it hit ``max_new_tokens``.

    Returns:
        ``responses[i][k]``, the ``k``-th response to ``prompts[i]`` (no prompt, no EOS), or
        ``(responses, truncated)`` when ``return_truncated``.
    """
    got: dict[str, tuple[list[str], list[bool]]] = {}
    for batch in _iter_questions(model, tokenizer, prompts, ids, config, progress, "sampling"):
        for qid, rs, ts in batch:
            got[qid] = (rs, ts)
    responses = [got[str(q)][0] for q in ids]
    truncated = [got[str(q)][1] for q in ids]
    return (responses, truncated) if return_truncated else responses


def read_jsonl(path: str | Path) -> dict[str, dict[str, Any]]:
    """Records of a sample store by id (a torn last line, from an interrupted write, is ignored)."""
    path = Path(path)
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[str(rec["id"])] = rec
    return records


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so that appending starts on a fresh line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def sample_to_jsonl(
    path: str | Path,
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    ids: Sequence[str],
    config: SamplingConfig,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample into a resumable JSONL store and return the records of ``ids`` in order.

    Each finished question appends ``{"id", "responses", "truncated"}``; the file is flushed after
    every batch, so an interrupted run loses at most the batch in progress. On a rerun, ids already
    in the file are skipped. The sampling config is kept in ``<path>.config.json``; resuming with a
    different config raises ``ValueError`` (samples would otherwise mix). A stored config that
    lacks a field added later reads as that field's default. Records are appended batch by batch,
    in the sampler's order (by prompt length), not in the order of ``ids``.

    ``prompts`` are texts or token ids, as in :func:`sample_responses`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = path.with_name(path.name + ".config.json")
    if cfg_path.exists() and path.exists():
        old = json.loads(cfg_path.read_text())
        try:
            same = SamplingConfig.from_dict(old) == config
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ValueError(
                f"{path} was sampled with config {old}, got {config.to_dict()}; use another file"
            )
    cfg_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if path.exists():
        _repair_tail(path)
    done = read_jsonl(path)
    todo = [i for i, q in enumerate(ids) if str(q) not in done]
    if todo:
        with path.open("a") as f:
            for batch in _iter_questions(
                model,
                tokenizer,
                [prompts[i] for i in todo],
                [ids[i] for i in todo],
                config,
                progress,
                "sampling",
            ):
                for qid, rs, ts in batch:
                    rec = {"id": qid, "responses": rs, "truncated": ts}
                    f.write(json.dumps(rec) + "\n")
                    done[qid] = rec
                f.flush()
                os.fsync(f.fileno())
    return [done[str(q)] for q in ids]
