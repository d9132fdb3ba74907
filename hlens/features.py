"""Streaming CETT feature extraction into sharded safetensors, resumable and data-parallel.

For each example, the per-token CETT scores of every neuron are aggregated (mean or max) over token
regions (``answer``, ``all_except_answer``, ...) while the forward pass runs, one layer at a time:
hlens never holds ``[layer, pos, d_mlp]`` for more than one batch, and never for the dataset.

Shard ``k`` holds examples ``k * shard_size ... (k + 1) * shard_size - 1`` of the given order, as
``shard-{k:05d}.safetensors`` (one ``[n, layer, d_mlp]`` tensor per region) plus
``shard-{k:05d}.json`` (its example ids). Both are written to a temporary name and renamed, so a
shard exists completely or not at all: an interrupted extraction resumes at the first missing
shard and never recomputes or duplicates finished ones. Under ``torchrun``, rank ``r`` of ``w``
takes the shards ``k`` with ``k % w == r``; :func:`merge_manifest` checks that every shard is there.

Example:
    >>> cfg = CETTConfig(regions=("answer",), aggregation="mean")
    >>> CETTConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from hlens import sampling
from hlens._deprecate import UNSET, rename_keys, renamed_kwarg
from hlens._version import __version__
from hlens.cache import _StopForward, neuron_hooks, run_forward
from hlens.contribution import cett_from_parts
from hlens.examples import Example
from hlens.model import Model
from hlens.prompts import REGIONS, PromptFormat, TokenBatch, tokenize_examples
from hlens.records import atomic_write_text
from hlens.sampling import _common_prefix, _forward_kwargs

__all__ = [
    "CETTConfig",
    "FeatureStore",
    "extract_features",
    "features_for_batch",
    "merge_manifest",
]

MANIFEST = "manifest.json"
CONFIG = "extraction.json"


@dataclass(frozen=True)
class CETTConfig:
    """How CETT features are computed and stored.

    Attributes:
        use_abs: use ``|z|`` (the paper's definition).
        use_mag: multiply by ``||W_out[j]||`` (the paper's definition).
        aggregation: aggregate tokens of a region by ``"mean"`` (the paper's default) or
            ``"max"`` (``--aggregation``). ``method=`` is its deprecated name, for one release.
        regions: the token regions to aggregate over (see :mod:`hlens.prompts`).
        eps: added to ``||h||`` (1e-8 as in the official script).
        batch_size: sequences per forward pass (8: as fast as 16 on the real models, at half the
            peak memory; benchmarks/results/extraction_real.md).
        shard_size: examples per shard on disk (the unit of resuming).
        layers: restrict to these layers (``None``: all).
    """

    use_abs: bool = True
    use_mag: bool = True
    aggregation: Literal["mean", "max"] = "mean"
    regions: tuple[str, ...] = ("answer", "all_except_answer")
    eps: float = 1e-8
    batch_size: int = 8
    shard_size: int = 256
    layers: tuple[int, ...] | None = None
    # deprecated keyword for `aggregation`, for one release (init-only: not a field, not saved)
    method: InitVar[Any] = UNSET

    def __post_init__(self, method: Any) -> None:
        aggregation = renamed_kwarg(
            "CETTConfig", "method", "aggregation", method, self.aggregation, "mean", stacklevel=5
        )
        object.__setattr__(self, "aggregation", aggregation)
        object.__setattr__(self, "regions", tuple(self.regions))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.aggregation not in ("mean", "max"):
            raise ValueError(
                f"CETTConfig.aggregation must be 'mean' or 'max', got {self.aggregation!r}"
            )
        unknown = [r for r in self.regions if r not in REGIONS]
        if unknown or not self.regions:
            raise ValueError(
                f"CETTConfig.regions {self.regions} must be a non-empty subset of {REGIONS}"
            )
        if self.batch_size <= 0 or self.shard_size <= 0:
            raise ValueError(
                "batch_size and shard_size must be positive, got "
                f"{self.batch_size}, {self.shard_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["regions"] = list(self.regions)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d

    @classmethod
    def upgrade_dict(cls, d: dict[str, Any], *, warn: bool = False) -> dict[str, Any]:
        """A saved config's dict with its pre-rename keys renamed (``method`` ->
        ``aggregation``); silent by default, for comparing a saved config with a new one."""
        return rename_keys(d, _CETT_RENAMES, "CETTConfig", warn=warn)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CETTConfig:
        """The config of a :meth:`to_dict` dict; a file with the old key ``method`` loads with
        a :class:`DeprecationWarning`."""
        d = cls.upgrade_dict(d, warn=True)
        d["regions"] = tuple(d.get("regions", ()))
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    def score_options(self) -> dict[str, Any]:
        """The options that change the numbers (saved with probes)."""
        return {
            "use_abs": self.use_abs,
            "use_mag": self.use_mag,
            "aggregation": self.aggregation,
            "eps": self.eps,
        }


#: CETTConfig's renamed fields: old name -> new name (the old ones load for one release)
_CETT_RENAMES = {"method": "aggregation"}


@dataclass
class _SharedPrefix:
    """The token ids every example of an extraction starts with, computed once.

    Attributes:
        ids: the shared token ids (at least one token of every example follows them).
        cache: their KV cache at batch size 1 (a ``transformers`` Cache; the layers up to the
            last needed one are filled).
        parts: per region, one ``[pattern, layer, d_mlp]`` tensor: the prefix's CETT summed
            (``mean``) or maxed (``max``) over the prefix tokens of each region mask pattern.
        counts: per region, the number of prefix tokens in each pattern.
        patterns: per region, the prefix masks (tuples of bools) the rows of ``parts`` belong to.
    """

    ids: list[int]
    cache: Any
    parts: dict[str, Tensor]
    counts: dict[str, Tensor]
    patterns: dict[str, list[tuple[bool, ...]]]

    @property
    def n(self) -> int:
        return len(self.ids)

    def rows(self, region: str, mask: Tensor) -> Tensor:
        """For each row of a ``[batch, >= n]`` region mask, its pattern's index in ``parts``."""
        index = {p: i for i, p in enumerate(self.patterns[region])}
        try:
            return torch.tensor([index[tuple(m)] for m in mask[:, : self.n].tolist()])
        except KeyError:
            raise ValueError(
                f"a row's {region!r} mask over the shared prefix is not one the prefix was "
                "computed for (pass the prefix built for these examples)"
            ) from None

    def batch_cache(self, rows: int) -> Any:
        """A cache for ``rows`` sequences that continue the prefix: each layer attends to the
        prefix's keys and values (broadcast, not copied) and the new ones, and keeps nothing
        (the pass stops after the last needed layer; nothing is decoded after it), so the keys
        of one layer are alive at a time."""
        cache = copy.copy(self.cache)
        cache.layers = [_shared_layer(la, rows) for la in self.cache.layers]
        return cache


def _shared_layer(layer: Any, rows: int) -> Any:
    new = copy.copy(layer)
    if not getattr(layer, "is_initialized", False):
        return new
    keys = layer.keys.expand(rows, -1, -1, -1)
    values = layer.values.expand(rows, -1, -1, -1)

    def update(key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)

    new.update = update
    return new


def _prefix_plan(
    model: Model, examples: Sequence[Example], fmt: PromptFormat, config: CETTConfig
) -> tuple[list[int], list[int], dict[str, set[tuple[bool, ...]]]]:
    """Tokenize every example once: their token lengths, the token ids all of them start with
    (leaving at least one token each), and the region masks seen over those ids."""
    lengths: list[int] = []
    ref: list[int] = []
    n = -1
    patterns: dict[str, set[tuple[bool, ...]]] = {r: set() for r in config.regions}
    for start in range(0, len(examples), config.batch_size):
        batch = tokenize_examples(
            examples[start : start + config.batch_size],
            model.tokenizer,
            fmt,
            padding_side="right",
            max_length=model.n_ctx,
            require_answer="answer" in config.regions,
        )
        lens = batch.attention_mask.sum(1).tolist()
        rows = [batch.tokens[i, :k].tolist() for i, k in enumerate(lens)]
        lengths += lens
        if n < 0:
            ref, n = rows[0], len(rows[0])
        n = min(n, _common_prefix([ref, *rows], minimum=0))  # each row against the first
        for r in config.regions:
            patterns[r] = {p[:n] for p in patterns[r]}
            patterns[r].update(tuple(m) for m in batch.region(r)[:, :n].tolist())
    return lengths, ref[: max(n, 0)], patterns


def _shared_prefix(
    model: Model, ids: list[int], patterns: dict[str, set[tuple[bool, ...]]], config: CETTConfig
) -> _SharedPrefix | None:
    """Run the shared prefix once (stopping after the last needed layer): its KV cache and its
    CETT reduced per region mask pattern. ``None`` when there is no prefix worth sharing or the
    model's cache cannot hold all of it (a sliding window shorter than the prefix)."""
    if len(ids) < sampling._MIN_PREFIX:  # read at call time: a monkeypatched value applies
        return None
    try:
        from transformers import DynamicCache
    except ImportError:
        return None
    hf = model.hf_model
    layers = model.check_layers(config.layers)
    dtype = model.score_dtype
    w_norms = model.W_out_norms()
    order = {r: sorted(patterns[r]) for r in config.regions}
    masks = {r: torch.tensor(order[r], dtype=torch.bool).reshape(-1, len(ids)) for r in order}
    parts = {r: torch.empty(len(order[r]), len(layers), model.d_mlp, dtype=dtype) for r in order}
    slot = {layer: i for i, layer in enumerate(layers)}

    def on_layer(layer: int, z: Tensor, h: Tensor) -> None:
        s = cett_from_parts(
            z[0],
            h[0].to(dtype).norm(dim=-1),
            w_norms[layer].to(z.device),
            use_abs=config.use_abs,
            use_mag=config.use_mag,
            eps=config.eps,
        )
        for r, m in masks.items():
            m = m.to(s.device)
            if config.aggregation == "mean":
                agg = m.to(dtype) @ s
            else:
                agg = s.masked_fill(~m[:, :, None], -torch.inf).amax(1)
            parts[r][:, slot[layer]] = agg.cpu()

    cache = DynamicCache(config=hf.config)
    tokens = torch.tensor([ids], dtype=torch.long, device=model.device)
    with torch.no_grad(), neuron_hooks(model, layers, on_layer):
        _forward(model, tokens, torch.ones_like(tokens), max(layers), cache, 0)
    if any(
        not getattr(cache.layers[i], "is_initialized", False)
        or cache.layers[i].keys.shape[-2] != len(ids)
        for i in range(max(layers) + 1)
    ):
        return None
    counts = {r: masks[r].sum(1) for r in masks}
    return _SharedPrefix(list(ids), cache, parts, counts, order)


def _forward(
    model: Model, tokens: Tensor, mask: Tensor, stop_layer: int, cache: Any, n_past: int
) -> None:
    """One forward pass of ``model.hf_model`` (the bridge's hooks apply) continuing ``cache``
    (``n_past`` positions), stopped once layer ``stop_layer``'s MLP output exists."""

    def stop(tensor: Tensor, *, hook: Any) -> Tensor:
        raise _StopForward

    hf = model.hf_model
    b, w = tokens.shape
    attn = torch.cat([mask.new_ones(b, n_past), mask], dim=1)
    pos = torch.arange(n_past, n_past + w, device=tokens.device).expand(b, w)
    hooks = [(model.family.output_hook(stop_layer), stop)]
    with model.bridge.hooks(fwd_hooks=hooks), contextlib.suppress(_StopForward):
        hf(
            input_ids=tokens,
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            **{_forward_kwargs(hf)[0]: cache},
        )


def features_for_batch(
    model: Model,
    batch: TokenBatch,
    config: CETTConfig,
    *,
    prefix: _SharedPrefix | None = None,
    sink: Callable[[str, int, Tensor], None] | None = None,
) -> dict[str, Float[Tensor, "batch layer d_mlp"]] | None:
    """Aggregated CETT features of one batch, computed layer by layer during the forward pass.

    Returns one ``[batch, layer, d_mlp]`` tensor per region; a region with no token in a sequence
    gives NaN for that sequence. Each layer's per-token CETT lives in one buffer and is reduced
    to ``[batch, d_mlp]`` per region at once; the pass stops after the last needed layer.

    ``prefix`` (:func:`extract_features` builds it): token ids every sequence starts with, whose
    KV cache and per-region CETT were computed once; only the tokens after it are run, and the
    regions combine both parts exactly (sums and counts for ``mean``, maxima for ``max``).

    ``sink``: called as ``sink(region, i, features)`` with each region's ``[batch, d_mlp]``
    features of the ``i``-th requested layer as soon as they exist, instead of collecting them
    (then nothing is returned): :func:`extract_features` writes them to disk at once.
    """
    if batch.padding_side != "right":
        raise ValueError("features_for_batch needs a right-padded batch")
    layers = model.check_layers(config.layers)
    w_norms = model.W_out_norms()
    dtype = model.score_dtype
    device = model.device
    n_pre = 0
    if prefix is not None:
        n_pre = prefix.n
        head = torch.tensor(prefix.ids, dtype=batch.tokens.dtype)
        lengths = batch.attention_mask.sum(1)
        if (
            batch.tokens.shape[1] <= n_pre
            or int(lengths.min()) <= n_pre
            or not bool((batch.tokens[:, :n_pre] == head).all())
        ):
            raise ValueError("every sequence of the batch must start with the shared prefix")
    out = {
        r: torch.empty(len(batch), len(layers), model.d_mlp, dtype=dtype)
        for r in (config.regions if sink is None else ())
    }
    masks = {r: batch.region(r)[:, n_pre:].to(device) for r in config.regions}
    weights = {r: m.to(dtype) for r, m in masks.items()} if config.aggregation == "mean" else {}
    counts = {r: w.sum(1, keepdim=True) for r, w in weights.items()}
    empty = {r: ~m.any(1) for r, m in masks.items()}
    pre: dict[str, Tensor] = {}  # each row's prefix pattern
    if prefix is not None:
        for r in config.regions:
            pre[r] = idx = prefix.rows(r, batch.region(r))
            n_in = prefix.counts[r][idx].to(device)
            if r in counts:
                counts[r] = counts[r] + n_in[:, None].to(dtype)
            empty[r] = empty[r] & (n_in == 0)
    slot = {layer: i for i, layer in enumerate(layers)}
    buf: list[Tensor] = []

    def on_layer(layer: int, z: Tensor, h: Tensor) -> None:
        # CETT in one buffer reused by every layer (never touching z, which the pass still uses)
        if not buf or buf[0].shape != z.shape:
            buf[:] = [torch.empty(z.shape, dtype=dtype, device=z.device)]
        s = cett_from_parts(
            z,
            h.to(dtype).norm(dim=-1),
            w_norms[layer].to(z.device),
            use_abs=config.use_abs,
            use_mag=config.use_mag,
            eps=config.eps,
            out=buf[0],
        )
        i = slot[layer]
        for r, m in masks.items():
            if config.aggregation == "mean":
                agg = torch.einsum("bp,bpn->bn", weights[r], s)
                if r in pre:
                    agg += prefix.parts[r][pre[r], i].to(device)
                agg = agg / counts[r]  # 0/0 -> NaN
            else:
                agg = s.masked_fill(~m[:, :, None], -torch.inf).amax(1)
                if r in pre:
                    torch.maximum(agg, prefix.parts[r][pre[r], i].to(device), out=agg)
                agg[empty[r]] = torch.nan
            if sink is None:
                out[r][:, i] = agg.cpu()
            else:
                sink(r, i, agg)

    tokens = batch.tokens[:, n_pre:].to(device)
    mask = batch.attention_mask[:, n_pre:].to(device)
    with torch.no_grad(), neuron_hooks(model, layers, on_layer):
        if prefix is None:
            run_forward(model, TokenBatch(tokens, mask), stop_after_layer=max(layers))
        else:
            _forward(model, tokens, mask, max(layers), prefix.batch_cache(len(batch)), n_pre)
    return out if sink is None else None


class _ShardWriter:
    """A safetensors file of ``[n, layer, d_mlp]`` float32 tensors (one per region) written row
    by row in place: the bytes are those :func:`safetensors.torch.save_file` writes for the
    same tensors (names sorted, compact JSON header padded with spaces to 8 bytes)."""

    def __init__(self, path: Path, regions: Sequence[str], shape: tuple[int, int, int]) -> None:
        n, n_layers, d_mlp = shape
        self.row_bytes = n_layers * d_mlp * 4
        self.row_shape = (n_layers, d_mlp)
        size = n * self.row_bytes
        names = sorted(regions)
        info = {
            r: {
                "dtype": "F32",
                "shape": [n, n_layers, d_mlp],
                "data_offsets": [i * size, (i + 1) * size],
            }
            for i, r in enumerate(names)
        }
        head = json.dumps(info, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        self.start = {r: 8 + len(head) + i * size for i, r in enumerate(names)}
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self.fd, len(head).to_bytes(8, "little") + head)
        os.ftruncate(self.fd, 8 + len(head) + len(names) * size)

    def write(self, rows: Sequence[int], feats: dict[str, Tensor]) -> None:
        """Write ``feats[r][j]`` (``[layer, d_mlp]``) as row ``rows[j]`` of each region."""
        for r, x in feats.items():
            if x.shape[1:] != self.row_shape:
                raise ValueError(f"rows of shape {tuple(x.shape[1:])}, expected {self.row_shape}")
            self._put(r, rows, x.flatten(1), 0)

    def sink(self, rows: Sequence[int], n_layers: int) -> Callable[[str, int, Tensor], None]:
        """A :func:`features_for_batch` sink writing layer ``i``'s ``[batch, d_mlp]`` features
        of the batch whose rows are ``rows``."""
        if n_layers != self.row_shape[0]:
            raise ValueError(f"{n_layers} layers, the shard holds {self.row_shape[0]}")
        return lambda r, i, x: self._put(r, rows, x, i * self.row_shape[1] * 4)

    def _put(self, region: str, rows: Sequence[int], x: Tensor, offset: int) -> None:
        x = x.detach().to("cpu", torch.float32).contiguous()
        for j, row in enumerate(rows):
            data = x[j].numpy().astype("<f4", copy=False)  # safetensors is little-endian
            os.pwrite(self.fd, data.data, self.start[region] + row * self.row_bytes + offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _extraction_meta(
    model: Model, config: CETTConfig, ids: Sequence[str], fmt: PromptFormat
) -> dict:
    return {
        "model": model.name,
        "n_layers": model.n_layers,
        "d_mlp": model.d_mlp,
        "config": config.to_dict(),
        "prompt_format": fmt.to_dict(),
        "n_examples": len(ids),
        "ids_digest": _ids_digest(ids),
        "hlens_version": __version__,
    }


def extract_features(
    model: Model,
    examples: Sequence[Example],
    out_dir: str | Path,
    config: CETTConfig | None = None,
    *,
    fmt: PromptFormat | None = None,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> FeatureStore | None:
    """Extract CETT features for ``examples`` into ``out_dir``, resuming finished shards.

    Args:
        model: an :class:`hlens.Model`.
        examples: examples with ids (unique) and, for ``answer`` regions, answer spans.
        out_dir: where shards and the manifest go.
        config: how to compute features.
        fmt: how examples are rendered (default: chat template, else plain).
        progress: show a progress bar.
        rank, world_size: data-parallel position (default: from ``torch.distributed`` if
            initialised, else a single process).

    Returns:
        The :class:`FeatureStore` (on rank 0 after all ranks finished; ``None`` on other ranks).

    Raises:
        ValueError: duplicate or missing ids, or ``out_dir`` holds an extraction of other examples,
            another model or other options (says which).
    """
    config = config or CETTConfig()
    fmt = fmt or PromptFormat()
    examples = list(examples)
    ids = [ex.id for ex in examples]
    if any(i is None for i in ids):
        raise ValueError("every example needs an id to be extracted (resuming relies on it)")
    if len(set(ids)) != len(ids):
        raise ValueError("example ids must be unique")
    rank, world_size = _dist_position(rank, world_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _extraction_meta(model, config, ids, fmt)
    cfg_path = out / CONFIG
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if isinstance(old.get("config"), dict):  # an extraction made before a rename resumes
            old["config"] = CETTConfig.upgrade_dict(old["config"])
        diff = [k for k in meta if k != "hlens_version" and old.get(k) != meta[k]]
        if diff:
            raise ValueError(
                f"{out} already holds an extraction with different {', '.join(diff)}; use a new "
                "directory or delete it to start over"
            )
    else:  # every rank may write it: the content is identical and the rename atomic
        atomic_write_text(cfg_path, json.dumps(meta, indent=1))
    n_shards = -(-len(examples) // config.shard_size)
    n_layers = len(model.check_layers(config.layers))
    mine = [k for k in range(n_shards) if k % world_size == rank]
    todo = [k for k in mine if not (out / f"{_shard_name(k)}.json").exists()]
    n_todo = sum(len(examples[k * config.shard_size : (k + 1) * config.shard_size]) for k in todo)
    bar = tqdm(
        total=n_todo,
        desc=f"CETT features (rank {rank})" if world_size > 1 else "CETT features",
        disable=not progress,
        unit="ex",
    )
    prefix = None
    if todo:
        # every example tokenized once up front: token lengths (for batching), and the token ids
        # all examples share (a system prompt, the chat scaffolding), run once for all of them.
        # The prefix is that of all examples, not of the shards left, so that a resumed
        # extraction computes what an uninterrupted one does.
        lengths, ids_pre, patterns = _prefix_plan(model, examples, fmt, config)
        prefix = _shared_prefix(model, ids_pre, patterns, config)
    for k in todo:  # a killed run leaves a half-written shard file: never finished work
        for stale in out.glob(f"{_shard_name(k)}.safetensors.tmp*"):
            stale.unlink(missing_ok=True)
    for k in todo:
        shard = examples[k * config.shard_size : (k + 1) * config.shard_size]
        # batch examples of equal token length together (least padding), then restore shard
        # order
        base = k * config.shard_size
        order = sorted(range(len(shard)), key=lambda i: lengths[base + i])
        name = _shard_name(k)
        tmp = out / f"{name}.safetensors.tmp{os.getpid()}"
        # each batch's rows go straight to their place in the shard file: the shard is never
        # held in memory, whatever shard_size is
        writer = _ShardWriter(tmp, config.regions, (len(shard), n_layers, model.d_mlp))
        try:
            for start in range(0, len(shard), config.batch_size):
                rows = order[start : start + config.batch_size]
                batch = tokenize_examples(
                    [shard[i] for i in rows],
                    model.tokenizer,
                    fmt,
                    padding_side="right",
                    max_length=model.n_ctx,
                    require_answer="answer" in config.regions,
                )
                features_for_batch(
                    model, batch, config, prefix=prefix, sink=writer.sink(rows, n_layers)
                )
                bar.update(len(rows))
            writer.close()
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out / f"{name}.safetensors")
        # the .json sidecar is written last: its presence marks the shard complete
        atomic_write_text(out / f"{name}.json", json.dumps({"ids": [ex.id for ex in shard]}))
    bar.close()
    if world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
    if rank != 0:
        return None
    merge_manifest(out)
    return FeatureStore(out)


def _dist_position(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        rank, world_size = int(rank or 0), int(world_size or 1)
    else:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    return rank, world_size


def merge_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Check that every shard of an extraction is complete and write ``manifest.json``.

    Raises:
        ValueError: listing the missing shards (e.g. a rank that has not finished).
    """
    out = Path(out_dir)
    meta = json.loads((out / CONFIG).read_text())
    cfg = CETTConfig.from_dict(CETTConfig.upgrade_dict(meta["config"]))
    n_shards = -(-meta["n_examples"] // cfg.shard_size)
    missing = [
        _shard_name(k)
        for k in range(n_shards)
        if not (
            (out / f"{_shard_name(k)}.json").exists()
            and (out / f"{_shard_name(k)}.safetensors").exists()
        )
    ]
    if missing:
        raise ValueError(f"extraction in {out} is incomplete: missing {', '.join(missing)}")
    ids: list[str] = []
    for k in range(n_shards):
        ids += json.loads((out / f"{_shard_name(k)}.json").read_text())["ids"]
    if len(ids) != meta["n_examples"] or _ids_digest(ids) != meta["ids_digest"]:
        raise ValueError(f"the shards in {out} do not hold the examples of this extraction")
    manifest = dict(meta, shards=[_shard_name(k) for k in range(n_shards)], ids=ids)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


@dataclass
class FeatureStore:
    """Read access to an extraction written by :func:`extract_features`.

    Example:
        >>> store = FeatureStore("runs/organism/features")  # doctest: +SKIP
        >>> X = store.load("answer", ids=["q1", "q2"], flat=True)  # doctest: +SKIP
    """

    path: Path
    manifest: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        mpath = self.path / MANIFEST
        if not mpath.is_file():
            raise FileNotFoundError(
                f"no {MANIFEST} in {self.path}; run extract_features (or merge_manifest after a "
                "multi-process run) first"
            )
        self.manifest = json.loads(mpath.read_text())

    @property
    def ids(self) -> list[str]:
        return list(self.manifest["ids"])

    @property
    def config(self) -> CETTConfig:
        return CETTConfig.from_dict(CETTConfig.upgrade_dict(self.manifest["config"]))

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, d_mlp)`` of the model the features came from."""
        return int(self.manifest["n_layers"]), int(self.manifest["d_mlp"])

    def load(self, region: str, ids: Sequence[str] | None = None, *, flat: bool = False) -> Tensor:
        """Features of ``region`` as ``[n, layer, d_mlp]`` (or ``[n, layer * d_mlp]`` if ``flat``),
        in the order of ``ids`` (default: extraction order)."""
        if region not in self.config.regions:
            raise ValueError(
                f"region {region!r} was not extracted; available: {self.config.regions}"
            )
        parts = [
            load_file(str(self.path / f"{s}.safetensors"))[region] for s in self.manifest["shards"]
        ]
        x = torch.cat(parts)
        if ids is not None:
            index = {i: n for n, i in enumerate(self.manifest["ids"])}
            missing = [i for i in ids if i not in index]
            if missing:
                raise ValueError(
                    f"{len(missing)} ids are not in this extraction, e.g. {missing[:3]}"
                )
            x = x[torch.tensor([index[i] for i in ids], dtype=torch.long)]
        return x.flatten(1) if flat else x


# -- command line: `hlens features` (runs under torchrun too) -------------------------------------
def read_examples(path: str | Path) -> list[Example]:
    """Examples from a JSONL file of :meth:`Example.to_dict` records (as ``hlens find`` writes)."""
    lines = Path(path).read_text().splitlines()
    return [Example.from_dict(json.loads(line)) for line in lines if line.strip()]


def write_examples(examples: Sequence[Example], path: str | Path) -> None:
    """Write examples as JSONL (one :meth:`Example.to_dict` per line)."""
    atomic_write_text(Path(path), "".join(json.dumps(e.to_dict()) + "\n" for e in examples))


def init_distributed() -> tuple[int, int, str | None]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns ``(rank, world_size, device)``: the device is ``cuda:{LOCAL_RANK}`` on GPU machines and
    ``None`` (the caller's choice) otherwise. Uses NCCL on CUDA and gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    device = None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device else "gloo")
    return dist.get_rank(), dist.get_world_size(), device
