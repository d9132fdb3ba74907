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
KV cache rows are dropped); only the last position's logits are computed when prompts are encoded.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from tqdm.auto import tqdm

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
    """

    n_samples: int = 10
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 50
    seed: int = 0
    batch_size: int = 64
    stop_at_newline: bool = False

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


def _filter_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    logits = logits / cfg.temperature
    vocab = logits.shape[-1]
    if 0 < cfg.top_k < vocab:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= 1 - cfg.top_p
        remove[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def _choose(logits: torch.Tensor, gens: list[torch.Generator], cfg: SamplingConfig) -> torch.Tensor:
    if cfg.greedy:
        return logits.argmax(dim=-1)
    logits = _filter_logits(logits.double(), cfg)
    vocab = logits.shape[-1]
    u = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in gens])
    exp_noise = -torch.log(u.clamp_min(1e-300))  # Exp(1) noise
    gumbel = -torch.log(exp_noise.clamp_min(1e-300))
    return (logits + gumbel.to(logits.device)).argmax(dim=-1)


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


#: The shortest common token prefix worth encoding once and reusing (``_Prefix``).
_MIN_PREFIX = 4


class _Prefix:
    """Token ids common to every prompt of a call, encoded once; its KV cache is copied per batch.

    Attributes:
        ids: the shared token ids (at least one token of every prompt is left after them).
        cache: the prefix's KV cache at batch size 1, or ``None`` when there is no prefix.
    """

    def __init__(self, model, prompt_ids: list[list[int]], fwd: dict[str, Any]) -> None:
        self.ids: list[int] = []
        self.cache = None
        shortest = min(len(p) for p in prompt_ids)
        first = prompt_ids[0]
        n = 0
        while n < shortest - 1 and all(p[n] == first[n] for p in prompt_ids):
            n += 1
        if n < _MIN_PREFIX:
            return
        device = next(model.parameters()).device
        ids = torch.tensor([first[:n]], dtype=torch.long, device=device)
        with torch.no_grad():  # a cache with autograd history could not be copied
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=torch.arange(n, device=device)[None],
                use_cache=True,
                **fwd,
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
    prune = hasattr(past, "batch_select_indices")
    n = n_prompts * repeats
    gens = [torch.Generator().manual_seed(s) for s in seeds]
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
        if prune and len(live) < len(rows):
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
        fwd = {"logits_to_keep": 1} if _forward_kwargs(model)[1] else {}
        with torch.no_grad():
            prefix = _Prefix(model, enc, fwd) if len(enc) > 1 else None
        for start in range(0, len(order), q_per_batch):
            chunk = order[start : start + q_per_batch]
            rows = [(j, k) for j in range(len(chunk)) for k in range(rows_per_q)]
            gen, trunc = _generate(
                model,
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
