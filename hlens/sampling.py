"""Seeded, batched sampling of responses from a Hugging Face causal LM, with a resumable store.

Sampling is deterministic per ``(seed, id, sample index)``: every sequence draws its noise from
its own ``torch.Generator`` seeded from a stable hash of that triple, and picks its token by the
Gumbel-max trick on the filtered (temperature, top-k, top-p) distribution. The result therefore
does not depend on how questions are batched (up to float ties between logits). With
``temperature == 0`` decoding is greedy and the ``n_samples`` samples are one greedy decode.

Prompts are rendered texts (e.g. from ``tokenizer.apply_chat_template(..., tokenize=False)``)
and are tokenized with ``add_special_tokens=False``; they are left-padded and decoded with a KV
cache until every row produced the EOS token or ``max_new_tokens`` tokens.

Example:
    >>> cfg = SamplingConfig(n_samples=4, temperature=1.0, seed=0)
    >>> responses = sample_responses(model, tokenizer, prompts, ids, cfg)  # doctest: +SKIP
    >>> recs = sample_to_jsonl("s.jsonl", model, tokenizer, prompts, ids, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

__all__ = ["SamplingConfig", "read_jsonl", "row_seed", "sample_responses", "sample_to_jsonl"]


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
    """

    n_samples: int = 10
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 50
    seed: int = 0
    batch_size: int = 64

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

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (``temperature == 0``)."""
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingConfig:
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


@torch.no_grad()
def _generate(
    model,
    prompt_ids: list[list[int]],
    repeats: int,
    seeds: list[int],
    cfg: SamplingConfig,
    eos_id: int,
    pad_id: int,
) -> tuple[list[list[int]], list[bool]]:
    """Decode ``repeats`` rows per prompt; returns generated ids (without EOS) and truncation.

    Each prompt is encoded once and its KV cache repeated (when the cache supports it).
    """
    device = next(model.parameters()).device
    n_prompts, width = len(prompt_ids), max(len(p) for p in prompt_ids)
    input_ids = torch.full((n_prompts, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n_prompts, width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p) :] = 1
    input_ids, attn = input_ids.to(device), attn.to(device)
    cache_kw, keep = _forward_kwargs(model)
    extra = {"logits_to_keep": 1} if keep else {}
    share = repeats == 1
    if not share:
        probe = model(input_ids=input_ids[:1, :1], attention_mask=attn[:1, :1], use_cache=True)
        share = hasattr(_cache_of(probe), "batch_repeat_interleave")
    if not share:  # the cache cannot be repeated: encode every row
        input_ids = input_ids.repeat_interleave(repeats, dim=0)
        attn = attn.repeat_interleave(repeats, dim=0)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True, **extra)
    past = _cache_of(out)
    logits = out.logits[:, -1, :].float()
    if share and repeats > 1:
        past.batch_repeat_interleave(repeats)
        logits = logits.repeat_interleave(repeats, dim=0)
        attn = attn.repeat_interleave(repeats, dim=0)
        pos = pos.repeat_interleave(repeats, dim=0)
    n = n_prompts * repeats
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    generated: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    for step in range(cfg.max_new_tokens):
        tokens = _choose(logits, gens, cfg).tolist()
        for i, t in enumerate(tokens):
            if finished[i]:
                continue
            if t == eos_id:
                finished[i] = True
            else:
                generated[i].append(t)
        if all(finished) or step == cfg.max_new_tokens - 1:
            break
        nxt = torch.tensor([eos_id if f else t for f, t in zip(finished, tokens)], device=device)
        attn = torch.cat([attn, attn.new_ones((n, 1))], dim=1)
        pos = pos[:, -1:] + 1
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


def _iter_questions(
    model,
    tokenizer,
    prompts: Sequence[str],
    ids: Sequence[str],
    cfg: SamplingConfig,
    progress: bool,
    desc: str,
) -> Iterator[list[tuple[str, list[str], list[bool]]]]:
    """Yield, batch by batch, ``(id, responses, truncated)`` for each question in order."""
    if len(prompts) != len(ids):
        raise ValueError(f"got {len(prompts)} prompts but {len(ids)} ids; they must match")
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"ids must be unique; duplicated: {dup}")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos_token_id; sampling needs one to stop")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    rows_per_q = 1 if cfg.greedy else cfg.n_samples
    q_per_batch = max(1, cfg.batch_size // rows_per_q)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), desc=desc, unit="q", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(prompts), q_per_batch):
            chunk = list(range(start, min(start + q_per_batch, len(prompts))))
            enc = tokenizer([prompts[i] for i in chunk], add_special_tokens=False)["input_ids"]
            for i, e in zip(chunk, enc):
                if not e:
                    raise ValueError(f"prompt of id {ids[i]!r} is empty after tokenization")
            rows = [(j, k) for j in range(len(chunk)) for k in range(rows_per_q)]
            gen, trunc = _generate(
                model,
                enc,
                rows_per_q,
                [row_seed(cfg.seed, ids[chunk[j]], k) for j, k in rows],
                cfg,
                eos_id,
                pad_id,
            )
            texts = tokenizer.batch_decode(gen, skip_special_tokens=True)
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
    prompts: list[str],
    ids: list[str],
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
        prompts: rendered prompt texts.
        ids: one unique id per prompt (seeds the sampling noise).
        config: the :class:`SamplingConfig`.
        progress: show a tqdm bar.
        return_truncated: also return, per sample, whether it hit ``max_new_tokens``.

    Returns:
        ``responses[i][k]``, the ``k``-th response to ``prompts[i]`` (no prompt, no EOS), or
        ``(responses, truncated)`` when ``return_truncated``.
    """
    responses: list[list[str]] = []
    truncated: list[list[bool]] = []
    for batch in _iter_questions(model, tokenizer, prompts, ids, config, progress, "sampling"):
        for _, rs, ts in batch:
            responses.append(rs)
            truncated.append(ts)
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
    prompts: list[str],
    ids: list[str],
    config: SamplingConfig,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample into a resumable JSONL store and return the records of ``ids`` in order.

    Each finished question appends ``{"id", "responses", "truncated"}``; the file is flushed after
    every batch, so an interrupted run loses at most the batch in progress. On a rerun, ids already
    in the file are skipped. The sampling config is kept in ``<path>.config.json``; resuming with a
    different config raises ``ValueError`` (samples would otherwise mix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = path.with_name(path.name + ".config.json")
    if cfg_path.exists() and path.exists():
        old = json.loads(cfg_path.read_text())
        if old != config.to_dict():
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
