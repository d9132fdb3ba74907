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
    >>> cfg = CETTConfig(regions=("answer",), method="mean")
    >>> CETTConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from hlens._version import __version__
from hlens.cache import neuron_hooks, run_forward
from hlens.examples import Example
from hlens.prompts import REGIONS, PromptFormat, TokenBatch, tokenize_examples

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
        method: aggregate tokens of a region by ``"mean"`` (the paper's default) or ``"max"``.
        regions: the token regions to aggregate over (see :mod:`hlens.prompts`).
        eps: added to ``||h||`` (1e-8 as in the official script).
        batch_size: sequences per forward pass.
        shard_size: examples per shard on disk (the unit of resuming).
        layers: restrict to these layers (``None``: all).
    """

    use_abs: bool = True
    use_mag: bool = True
    method: Literal["mean", "max"] = "mean"
    regions: tuple[str, ...] = ("answer", "all_except_answer")
    eps: float = 1e-8
    batch_size: int = 16
    shard_size: int = 256
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.method not in ("mean", "max"):
            raise ValueError(f"CETTConfig.method must be 'mean' or 'max', got {self.method!r}")
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
    def from_dict(cls, d: dict[str, Any]) -> CETTConfig:
        d = dict(d)
        d["regions"] = tuple(d.get("regions", ()))
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    def score_options(self) -> dict[str, Any]:
        """The options that change the numbers (saved with probes)."""
        return {
            "use_abs": self.use_abs,
            "use_mag": self.use_mag,
            "method": self.method,
            "eps": self.eps,
        }


def features_for_batch(
    model: Any, batch: TokenBatch, config: CETTConfig
) -> dict[str, Float[Tensor, "batch layer d_mlp"]]:
    """Aggregated CETT features of one batch, computed layer by layer during the forward pass.

    Returns one ``[batch, layer, d_mlp]`` tensor per region; a region with no token in a sequence
    gives NaN for that sequence.
    """
    layers = model.check_layers(config.layers)
    w_norms = model.W_out_norms()
    dtype = model.score_dtype
    out = {
        r: torch.empty(len(batch), len(layers), model.d_mlp, dtype=dtype) for r in config.regions
    }
    masks = {r: batch.region(r) for r in config.regions}
    slot = {layer: i for i, layer in enumerate(layers)}

    def on_layer(layer: int, z: Tensor, h: Tensor) -> None:
        # CETT in one buffer, in place (never touching z, which the forward pass still uses)
        s = z.to(dtype).abs() if config.use_abs else z.to(dtype).clone()
        if config.use_mag:
            s.mul_(w_norms[layer].to(s.device))
        s.div_(h.to(dtype).norm(dim=-1, keepdim=True).add_(config.eps))
        for r, mask in masks.items():
            m = mask.to(s.device)
            if config.method == "mean":
                w = m.to(dtype)
                agg = torch.einsum("bp,bpn->bn", w, s) / w.sum(1, keepdim=True)  # 0/0 -> NaN
            else:
                agg = s.masked_fill(~m[:, :, None], -torch.inf).amax(1)
                agg[~m.any(1)] = torch.nan
            out[r][:, slot[layer]] = agg.cpu()

    if batch.padding_side != "right":
        raise ValueError("features_for_batch needs a right-padded batch")
    with torch.no_grad(), neuron_hooks(model, layers, on_layer):
        run_forward(model, batch, stop_after_layer=max(layers))
    return out


def _ids_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _extraction_meta(model: Any, config: CETTConfig, ids: Sequence[str], fmt: PromptFormat) -> dict:
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
    model: Any,
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
        diff = [k for k in meta if k != "hlens_version" and old.get(k) != meta[k]]
        if diff:
            raise ValueError(
                f"{out} already holds an extraction with different {', '.join(diff)}; use a new "
                "directory or delete it to start over"
            )
    else:  # every rank may write it: the content is identical and the rename atomic
        _atomic_write_text(cfg_path, json.dumps(meta, indent=1))
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
    for k in todo:
        shard = examples[k * config.shard_size : (k + 1) * config.shard_size]
        # batch examples of similar length together (less padding), then restore shard order
        # (text length is a close proxy: the template adds the same text to every example)
        order = sorted(
            range(len(shard)),
            key=lambda i: (
                len(shard[i].question) + len(shard[i].response) + len(shard[i].system or "")
            ),
        )
        tensors = {
            r: torch.empty(len(shard), n_layers, model.d_mlp, dtype=torch.float32)
            for r in config.regions
        }
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
            feats = features_for_batch(model, batch, config)
            for r in config.regions:
                tensors[r][rows] = feats[r].float()
            bar.update(len(rows))
        name = _shard_name(k)
        tmp = out / f"{name}.safetensors.tmp{os.getpid()}"
        save_file(tensors, str(tmp))
        os.replace(tmp, out / f"{name}.safetensors")
        # the .json sidecar is written last: its presence marks the shard complete
        _atomic_write_text(out / f"{name}.json", json.dumps({"ids": [ex.id for ex in shard]}))
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
    cfg = CETTConfig.from_dict(meta["config"])
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
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
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
        return CETTConfig.from_dict(self.manifest["config"])

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
    _atomic_write_text(Path(path), "".join(json.dumps(e.to_dict()) + "\n" for e in examples))


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
