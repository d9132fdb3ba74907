"""Exact activation patching between a clean and a corrupted run, batched over patches.

A *patch* copies the activation of some units from a *source* run into a *target* run of the
paired prompt and measures how a user metric changes. ``direction="clean_to_corrupt"`` patches
clean activations into the corrupted run (denoising); ``"corrupt_to_clean"`` patches corrupted
activations into the clean run (noising). The effect of a patch is
``metric(patched target) - metric(target)``, per prompt pair.

Targets (one score per unit and layer; a unit's activation is replaced at every position):

- ``"neurons"``: every MLP neuron of the chosen layers, one by one -> ``[layer, d_mlp]``;
- ``"heads"``: every attention head (``blocks.{l}.attn.hook_z``) -> ``[layer, head]``;
- ``"resid"``: the residual stream before each block at each position -> ``[layer, pos]``;
- ``"group"``: each :class:`~hlens.NeuronSet` given, patched as one unit -> ``[group]``.

With ``patch_at="last"`` a unit is patched at each sequence's last token only. Nothing before
that token changes, so exact patching then runs the shared prefix once with a KV cache and
recomputes only the last token per patch (about ``width`` times cheaper); attribution patching
takes the same first-order term at that token.

Many patches run in one forward pass: the target batch is repeated ``k`` times and copy ``i``
gets patch ``i`` (rows ``i * n_pairs + b`` hold pair ``b``), so exact patching over every
neuron of a small model is a few hundred batched forward passes. Clean and corrupted prompts
must have the same tokens count, pair by pair (see :func:`match_lengths`); batches are run
right-aligned, and positions in results count from each sequence's first token.

A metric is ``metric(logits, batch) -> Float[Tensor, "batch"]`` (one value per row of the
possibly repeated batch), or an :class:`ActivationMetric` that reads an activation instead of the
logits (see :func:`neuron_activation`).

Example:
    >>> import hlens
    >>> from hlens.patching import exact_patching, logit_diff
    >>> model = hlens.load("organism")  # doctest: +SKIP
    >>> res = exact_patching(model, clean, corrupt, logit_diff(good, bad))  # doctest: +SKIP
    >>> res.scores.shape  # [layer, d_mlp]  # doctest: +SKIP
    torch.Size([4, 512])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hlens.cache import right_align_batch
from hlens.model import Model
from hlens.neurons import NeuronId, NeuronSet
from hlens.prompts import PromptFormat, TokenBatch
from hlens.records import reject_unknown
from hlens.sampling import _cache_of, _forward_kwargs

__all__ = [
    "DIRECTIONS",
    "PATCH_AT",
    "TARGETS",
    "ActivationMetric",
    "Direction",
    "Metric",
    "PatchAt",
    "PatchResult",
    "Target",
    "exact_patching",
    "last_token_mask",
    "logit_diff",
    "match_lengths",
    "neuron_activation",
    "passes_per_pair",
    "patch_pairs",
]

Direction = Literal["clean_to_corrupt", "corrupt_to_clean"]
PatchAt = Literal["all", "last"]
PATCH_AT: tuple[str, ...] = ("all", "last")
Target = Literal["neurons", "heads", "resid", "group"]
DIRECTIONS: tuple[str, ...] = ("clean_to_corrupt", "corrupt_to_clean")
TARGETS: tuple[str, ...] = ("neurons", "heads", "resid", "group")
METHODS: tuple[str, ...] = ("exact", "atp", "ig", "dla")
Metric = Callable[[Tensor, TokenBatch], Tensor]


# ---------------------------------------------------------------------------------------- metrics
def _last_pos(batch: TokenBatch) -> Tensor:
    """Index of the last real token of each row of a right-aligned batch."""
    return batch.attention_mask.sum(1).long() - 1


def _per_row(ids: int | Tensor, rows: int) -> Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if rows % ids.numel():
        raise ValueError(f"{ids.numel()} token ids cannot be tiled over a batch of {rows} rows")
    return ids.repeat(rows // ids.numel())


def logit_diff(good: int | Int[Tensor, " batch"], bad: int | Int[Tensor, " batch"]) -> Metric:
    """Metric: ``logit[good] - logit[bad]`` at each sequence's last real token.

    Args:
        good: token id, or one id per prompt pair (tiled over a repeated batch).
        bad: token id, or one id per prompt pair.

    Example:
        >>> from hlens.prompts import TokenBatch
        >>> logits = torch.zeros(1, 2, 5); logits[0, 1, 3] = 2.0
        >>> logit_diff(3, 0)(logits, TokenBatch(torch.zeros(1, 2).long(), torch.ones(1, 2).long()))
        tensor([2.])
    """

    def metric(logits: Tensor, batch: TokenBatch) -> Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        pos = _last_pos(batch).to(logits.device)
        g = _per_row(good, logits.shape[0]).to(logits.device)
        b = _per_row(bad, logits.shape[0]).to(logits.device)
        return logits[rows, pos, g] - logits[rows, pos, b]

    return metric


@dataclass(frozen=True)
class ActivationMetric:
    """A metric computed from the activation at ``hook_name`` instead of the logits.

    Attributes:
        hook_name: the TransformerLens hook whose output ``fn`` reads.
        layer: the block holding that hook (forward passes stop after it).
        fn: ``fn(activation, batch) -> Float[Tensor, "batch"]``.
    """

    hook_name: str
    layer: int
    fn: Callable[[Tensor, TokenBatch], Tensor]

    def __call__(self, activation: Tensor, batch: TokenBatch) -> Tensor:
        return self.fn(activation, batch)


def neuron_activation(
    model: Model, neuron: NeuronId | tuple[int, int], position: Literal["last", "mean"] = "last"
) -> ActivationMetric:
    """Metric: one neuron's activation at the last real token, or its mean over real tokens.

    Example:
        >>> m = neuron_activation(model, NeuronId(1, 3))  # doctest: +SKIP
    """
    n = neuron if isinstance(neuron, NeuronId) else NeuronId(*neuron)
    if not 0 <= n.layer < model.n_layers or n.index >= model.d_mlp:
        raise ValueError(f"{n} is outside the model ({model.n_layers} layers, d_mlp={model.d_mlp})")
    if position not in ("last", "mean"):
        raise ValueError(f"position must be 'last' or 'mean', got {position!r}")

    def fn(act: Tensor, batch: TokenBatch) -> Tensor:
        a = act[..., n.index]
        if position == "last":
            return a[torch.arange(a.shape[0]), _last_pos(batch).to(a.device)]
        m = batch.attention_mask.to(a.device, a.dtype)
        return (a * m).sum(1) / m.sum(1)

    return ActivationMetric(model.family.activation_hook(n.layer), n.layer, fn)


# ---------------------------------------------------------------------------------------- results
@dataclass
class PatchResult:
    """Patching or attribution scores for one target, averaged over prompt pairs.

    Attributes:
        target: ``"neurons"`` / ``"heads"`` / ``"resid"`` / ``"group"``.
        method: ``"exact"`` (activation patching), ``"atp"`` (attribution patching), ``"ig"``
            (integrated gradients) or ``"dla"`` (direct logit attribution).
        direction: ``"clean_to_corrupt"`` or ``"corrupt_to_clean"``.
        scores: mean effect over pairs: ``[layer, d_mlp]``, ``[layer, head]``, ``[layer, pos]``
            or ``[group]``.
        per_pair: the same per prompt pair (leading ``batch`` axis).
        layers: model layers that the ``layer`` axis holds (empty for groups).
        clean_metric: metric of each clean run.
        corrupt_metric: metric of each corrupted run.
        groups: names of the groups (``target="group"`` only).
        meta: pass counts, timings, settings.
    """

    target: str
    method: str
    direction: str
    scores: Float[Tensor, "layer unit"] | Float[Tensor, " group"]
    per_pair: Float[Tensor, "batch layer unit"] | Float[Tensor, "batch group"]
    layers: tuple[int, ...]
    clean_metric: Float[Tensor, " batch"]
    corrupt_metric: Float[Tensor, " batch"]
    groups: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, options in (
            ("target", self.target, TARGETS),
            ("method", self.method, METHODS),
            ("direction", self.direction, DIRECTIONS),
        ):
            if value not in options:
                raise ValueError(f"PatchResult.{name} must be one of {options}, got {value!r}")
        if tuple(self.per_pair.shape[1:]) != tuple(self.scores.shape):
            raise ValueError(
                f"per_pair has shape {tuple(self.per_pair.shape)} but should have shape "
                f"[batch, {', '.join(map(str, self.scores.shape))}] to match scores"
            )
        self.layers = tuple(int(x) for x in self.layers)
        self.groups = tuple(self.groups)

    @property
    def effect_range(self) -> Float[Tensor, " batch"]:
        """``clean_metric - corrupt_metric``: the effect of patching everything (to normalise)."""
        return self.clean_metric - self.corrupt_metric

    def records(self) -> list[dict[str, Any]]:
        """One row per unit (DataFrame-ready): ``layer``, ``unit`` (or ``group``), ``score``."""
        if self.target == "group":
            return [
                {"group": g, "score": float(s)}
                for g, s in zip(self.groups, self.scores.tolist(), strict=True)
            ]
        unit = {"neurons": "index", "heads": "head", "resid": "pos"}[self.target]
        return [
            {"layer": layer, unit: j, "score": float(s)}
            for layer, row in zip(self.layers, self.scores.tolist(), strict=True)
            for j, s in enumerate(row)
        ]

    def top(self, k: int, *, by_abs: bool = True) -> list[dict[str, Any]]:
        """The ``k`` records with the largest (absolute) scores."""
        recs = self.records()
        return sorted(recs, key=lambda r: -abs(r["score"]) if by_abs else -r["score"])[:k]

    def _info(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "direction": self.direction,
            "layers": list(self.layers),
            "groups": list(self.groups),
            "meta": self.meta,
        }

    def to_dict(self) -> dict[str, Any]:
        return self._info() | {
            "scores": self.scores.tolist(),
            "per_pair": self.per_pair.tolist(),
            "clean_metric": self.clean_metric.tolist(),
            "corrupt_metric": self.corrupt_metric.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchResult:
        t = {k: torch.tensor(d[k], dtype=torch.float32) for k in _TENSORS}
        return cls(
            d["target"], d["method"], d["direction"], t["scores"], t["per_pair"],
            tuple(d["layers"]), t["clean_metric"], t["corrupt_metric"],
            tuple(d.get("groups", ())), dict(d.get("meta", {})),
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        """Write ``path.safetensors`` (tensors) and ``path.json`` (everything else)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).detach().contiguous().cpu() for k in _TENSORS}
        save_file(tensors, str(path.with_suffix(".safetensors")))
        path.with_suffix(".json").write_text(json.dumps(self._info(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> PatchResult:
        """Read a result written by :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.with_suffix(".json").is_file():
            raise FileNotFoundError(f"no PatchResult at {path} (expected {path}.json/.safetensors)")
        info = json.loads(path.with_suffix(".json").read_text())
        reject_unknown(
            f"PatchResult ({path.with_suffix('.json')})",
            info,
            ("target", "method", "direction", "layers", "groups", "meta"),
        )
        t = load_file(str(path.with_suffix(".safetensors")))
        return cls(
            info["target"], info["method"], info["direction"], t["scores"], t["per_pair"],
            tuple(info["layers"]), t["clean_metric"], t["corrupt_metric"],
            tuple(info["groups"]), info["meta"],
        )  # fmt: skip


_TENSORS = ("scores", "per_pair", "clean_metric", "corrupt_metric")


# ---------------------------------------------------------------------------------- prompt pairs
def _right_aligned(batch: TokenBatch) -> TokenBatch:
    if batch.padding_side != "left" and not bool((batch.attention_mask[:, 0] == 0).any()):
        return batch
    return right_align_batch(batch)


def patch_pairs(model: Model, clean: Any, corrupt: Any) -> tuple[TokenBatch, TokenBatch]:
    """Tokenize and check prompt pairs: right-aligned batches with equal lengths pair by pair.

    Raises:
        ValueError: if the batches differ in size, or a pair differs in token count (names it).
    """
    c, k = _right_aligned(model.as_batch(clean)), _right_aligned(model.as_batch(corrupt))
    if len(c) != len(k):
        raise ValueError(f"got {len(c)} clean prompts but {len(k)} corrupted prompts")
    width = max(c.tokens.shape[1], k.tokens.shape[1])
    c, k = _pad_to(c, width, model), _pad_to(k, width, model)
    lc, lk = c.attention_mask.sum(1), k.attention_mask.sum(1)
    bad = (lc != lk).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(f"pair {i}: {int(lc[i])} vs {int(lk[i])} tokens" for i in bad[:5])
        raise ValueError(
            f"clean and corrupted prompts must have the same number of tokens pair by pair so "
            f"positions align; {len(bad)} pair(s) differ ({shown}). Build equal-length pairs, e.g. "
            "with hlens.patching.match_lengths."
        )
    return c, k


def _pad_to(batch: TokenBatch, width: int, model: Model) -> TokenBatch:
    extra = width - batch.tokens.shape[1]
    if extra == 0:
        return batch
    pad = model.tokenizer.pad_token_id or 0
    t = torch.nn.functional.pad(batch.tokens, (0, extra), value=pad)
    m = torch.nn.functional.pad(batch.attention_mask, (0, extra), value=0)
    r = {k: torch.nn.functional.pad(v, (0, extra), value=False) for k, v in batch.regions.items()}
    return TokenBatch(t, m, r, batch.examples, "right")


def match_lengths(
    model: Model, clean: Sequence[Any], corrupt: Sequence[Any], *, fmt: PromptFormat | None = None
) -> list[tuple[Any, Any]]:
    """Pair each clean prompt with an unused corrupted prompt of the same token count.

    Prompts without a partner are dropped. Items are strings or examples (rendered with ``fmt``).

    Example:
        >>> pairs = match_lengths(model, known, nonexist)  # doctest: +SKIP
        >>> clean, corrupt = zip(*pairs)  # doctest: +SKIP
    """
    if not clean or not corrupt:
        return []
    lengths_k = model.as_batch(list(corrupt), fmt=fmt).attention_mask.sum(1).tolist()
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths_k):
        by_len.setdefault(int(n), []).append(i)
    out = []
    for i, n in enumerate(model.as_batch(list(clean), fmt=fmt).attention_mask.sum(1).tolist()):
        if by_len.get(int(n)):
            out.append((clean[i], corrupt[by_len[int(n)].pop(0)]))
    return out


def _repeat(batch: TokenBatch, k: int) -> TokenBatch:
    if k == 1:
        return batch
    return TokenBatch(
        batch.tokens.repeat(k, 1),
        batch.attention_mask.repeat(k, 1),
        {n: v.repeat(k, 1) for n, v in batch.regions.items()},
        list(batch.examples) * k,
        batch.padding_side,
    )


# ---------------------------------------------------------------------------------- run machinery
def hook_name(model: Model, target: str, layer: int) -> str:
    """The hook whose output holds ``target``'s units at ``layer``."""
    if target in ("neurons", "group"):
        return model.family.activation_hook(layer)
    if target == "heads":
        return model.family.head_hook(layer)
    if target == "resid":
        return model.family.resid_pre_hook(layer)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def n_units(model: Model, target: str, width: int) -> int:
    """Units per layer: ``d_mlp`` neurons, ``n_heads`` heads or ``width`` positions."""
    return {"neurons": model.d_mlp, "heads": int(model.cfg.n_heads), "resid": width}[target]


def unit_mask(target: str, mask: Tensor) -> Tensor:
    """Shape a ``[k, unit]`` patch mask to broadcast against ``[k, batch, *activation]``."""
    k, u = mask.shape
    if target in ("neurons", "group"):  # [k, b, pos, d_mlp]
        return mask.view(k, 1, 1, u)
    if target == "heads":  # [k, b, pos, head, d_head]
        return mask.view(k, 1, 1, u, 1)
    return mask.view(k, 1, u, 1)  # resid: [k, b, pos, d_model]


def reduce_units(target: str, x: Tensor) -> Tensor:
    """Sum a ``[batch, *activation]`` product down to ``[batch, unit]``."""
    if target in ("neurons", "group"):
        return x.sum(1)
    if target == "heads":
        return x.sum((1, 3))
    return x.sum(2)


def forward_metric(
    model: Model,
    batch: TokenBatch,
    metric: Metric | ActivationMetric,
    hooks: Sequence[tuple[str, Callable]] = (),
) -> Float[Tensor, " batch"]:
    """Run ``batch`` with ``hooks`` and return the metric per row (grad follows the caller)."""
    tokens = batch.tokens.to(model.device)
    mask = batch.attention_mask.to(model.device)
    if isinstance(metric, ActivationMetric):
        seen: dict[str, Tensor] = {}

        def grab(t: Tensor, *, hook: Any) -> Tensor:
            seen["act"] = t
            return t

        fwd = [*hooks, (metric.hook_name, grab)]
        with model.bridge.hooks(fwd_hooks=fwd):
            kwargs = (
                {"stop_at_layer": metric.layer + 1} if metric.layer + 1 < model.n_layers else {}
            )
            model.bridge(tokens, return_type=None, attention_mask=mask, **kwargs)
        out = metric(seen["act"], batch)
    else:
        with model.bridge.hooks(fwd_hooks=list(hooks)):
            logits = model.bridge(tokens, return_type="logits", attention_mask=mask)
        out = metric(logits, batch)
    if out.shape != (len(batch),):
        raise ValueError(
            f"the metric returned shape {tuple(out.shape)} but should return one value per row "
            f"({len(batch)},); reduce over positions and vocabulary inside the metric"
        )
    return out.to(model.score_dtype)


def capture(model: Model, batch: TokenBatch, names: Sequence[str]) -> dict[str, Tensor]:
    """Detached activations at ``names`` for ``batch`` (one forward pass)."""
    store: dict[str, Tensor] = {}

    def grabber(name: str) -> Callable:
        def grab(t: Tensor, *, hook: Any) -> Tensor:
            store[name] = t.detach()
            return t

        return grab

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(n, grabber(n)) for n in names]):
        model.bridge(
            batch.tokens.to(model.device),
            return_type=None,
            attention_mask=batch.attention_mask.to(model.device),
        )
    return store


def _check(direction: str, target: str, patch_at: str = "all", metric: Any = None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if patch_at not in PATCH_AT:
        raise ValueError(f"patch_at must be one of {PATCH_AT}, got {patch_at!r}")
    if patch_at == "last" and target == "resid":
        raise ValueError("patch_at='last' patches units at the last token; target='resid' has "
                         "one unit per position, so use patch_at='all'")  # fmt: skip
    if patch_at == "last" and isinstance(metric, ActivationMetric):
        raise ValueError("patch_at='last' needs a logit metric (e.g. logit_diff), not an "
                         "ActivationMetric")  # fmt: skip


def last_token_mask(batch: TokenBatch) -> Bool[Tensor, "batch pos"]:
    """True at each sequence's last real token of a right-padded batch."""
    pos = torch.arange(batch.tokens.shape[1])
    return pos.unsqueeze(0) == _last_pos(batch).unsqueeze(1)


class _LastToken:
    """Runs a batch's prefix once with a KV cache, then its last token under many patches.

    Rows are left-padded for the cached run (HF position ids from the attention mask). The ``k``
    patched copies of a row's last token run as ``k`` queries of that row at the same position,
    each attending to the cached prefix and to itself only (a 4-D attention mask), so the cache
    is never copied ``k`` times. :meth:`run` returns the metric in the row order of
    :func:`_repeat` (copy ``i`` of pair ``b`` is row ``i * n + b``).
    """

    def __init__(self, model: Model, batch: TokenBatch, metric: Metric) -> None:
        lengths = batch.attention_mask.sum(1).long()
        if int(lengths.min()) < 2:
            raise ValueError("patch_at='last' needs prompts of at least 2 tokens")
        n, w = batch.tokens.shape
        col = torch.arange(w).unsqueeze(0)
        shift = (w - lengths).unsqueeze(1)
        src = (col - shift).clamp(min=0)  # left-padded column j holds token j - shift
        real = col >= shift
        pad = model.tokenizer.pad_token_id or 0
        self.tokens = torch.where(real, batch.tokens.gather(1, src), pad).to(model.device)
        self.mask = real.long().to(model.device)
        self.pos = (self.mask.cumsum(1) - 1).clamp(min=0)
        self.model, self.metric, self.n, self.width = model, metric, n, w
        self.last = (lengths - 1).to(model.device)
        self.kw = _forward_kwargs(model.hf_model)[0]  # "cache" in newer transformers
        with torch.no_grad():
            out = model.hf_model(input_ids=self.tokens[:, :-1], attention_mask=self.mask[:, :-1],
                                 position_ids=self.pos[:, :-1], use_cache=True)  # fmt: skip
        self.cache = _cache_of(out)

    def at_last(self, act: Tensor) -> Tensor:
        """``[n, pos, ...]`` activations of the right-padded batch at each last token."""
        return act[torch.arange(self.n, device=act.device), self.last.to(act.device)].unsqueeze(1)

    def _mask(self, k: int) -> Tensor:
        """Additive ``[n, 1, k, prefix + k]`` mask: query ``i`` sees the prefix and key ``i``."""
        p = self.width - 1
        allowed = torch.zeros(self.n, 1, k, p + k, dtype=torch.bool, device=self.tokens.device)
        allowed[:, 0, :, :p] = self.mask[:, :p].bool()[:, None, :]
        q = torch.arange(k, device=self.tokens.device)
        allowed[:, 0, q, p + q] = True
        dtype = self.model.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    def run(self, k: int, patches: Sequence[tuple[str, Tensor, Tensor]]) -> Tensor:
        """The metric with ``k`` patched copies of every row's last token.

        ``patches`` holds ``(hook name, mask [k, unit], source [n, 1, ...])``: copy ``i`` takes
        the source activation of the units ``mask[i]`` selects.
        """
        import copy

        def make(m: Tensor, src: Tensor) -> Callable:
            def hook(t: Tensor, *, hook: Any) -> Tensor:  # t: [n, k, unit, ...]
                mm = m.to(t.device).view(1, *m.shape, *[1] * (t.dim() - 3))
                return torch.where(mm, src.to(t.dtype), t)

            return hook

        hooks = [(name, make(m, src)) for name, m, src in patches]
        with torch.no_grad(), self.model.bridge.hooks(fwd_hooks=hooks):
            out = self.model.hf_model(
                input_ids=self.tokens[:, -1:].repeat(1, k),
                attention_mask=self._mask(k),
                position_ids=self.pos[:, -1:].repeat(1, k),
                use_cache=True,
                **{self.kw: copy.deepcopy(self.cache)},
            )
        logits = out.logits.transpose(0, 1).reshape(k * self.n, 1, -1)
        step = TokenBatch(self.tokens[:, -1:].repeat(k, 1).cpu(), torch.ones(k * self.n, 1).long())
        return self.metric(logits, step).to(self.model.score_dtype)


def _groups(model: Model, neurons: Any) -> list[NeuronSet]:
    if neurons is None:
        raise ValueError("target='group' needs neurons=: a NeuronSet or a list of NeuronSets")
    groups = [neurons] if isinstance(neurons, NeuronSet) else list(neurons)
    for g in groups:
        g.check_model(model.n_layers, model.d_mlp, what="patched model")
        if len(g) == 0:
            raise ValueError("cannot patch an empty NeuronSet")
    return groups


def group_masks(model: Model, groups: Sequence[NeuronSet]) -> dict[int, Tensor]:
    """``{layer: [group, d_mlp] bool}`` for the layers any group touches."""
    masks: dict[int, Tensor] = {}
    for i, g in enumerate(groups):
        for n in g:
            masks.setdefault(n.layer, torch.zeros(len(groups), model.d_mlp, dtype=torch.bool))
            masks[n.layer][i, n.index] = True
    return masks


# ---------------------------------------------------------------------------------- exact patching
def exact_patching(
    model: Model,
    clean: Any,
    corrupt: Any,
    metric: Metric | ActivationMetric,
    *,
    target: Target = "neurons",
    direction: Direction = "clean_to_corrupt",
    layers: Sequence[int] | None = None,
    neurons: NeuronSet | Sequence[NeuronSet] | None = None,
    max_rows: int = 512,
    patch_at: PatchAt = "all",
) -> PatchResult:
    """Exact activation patching of every unit of ``target``, batched over patches.

    Args:
        model: an :class:`hlens.Model`.
        clean: clean prompts (texts, examples, token ids or a TokenBatch).
        corrupt: corrupted prompts, same count and token lengths pair by pair.
        metric: ``metric(logits, batch) -> [batch]`` or an :class:`ActivationMetric`.
        target: ``"neurons"``, ``"heads"``, ``"resid"`` or ``"group"``.
        direction: ``"clean_to_corrupt"`` (clean activations into the corrupted run) or
            ``"corrupt_to_clean"``.
        layers: layers to patch (default all; ignored for groups).
        neurons: for ``target="group"``, a NeuronSet (one group) or a list of them.
        max_rows: most rows per forward pass (patches per pass = ``max_rows // n_pairs``).
        patch_at: ``"all"`` positions, or the ``"last"`` token of each sequence only (a KV-cached
            prefix; logit metrics only, not ``target="resid"``).

    Returns:
        A :class:`PatchResult`; ``meta["forward_rows"]`` counts sequences run forward.

    Example:
        >>> res = exact_patching(model, clean, corrupt, metric, target="heads")  # doctest: +SKIP
        >>> res.scores.shape  # [layer, head]  # doctest: +SKIP
    """
    _check(direction, target, patch_at, metric)
    c, k = patch_pairs(model, clean, corrupt)
    src, tgt = (c, k) if direction == "clean_to_corrupt" else (k, c)
    n_pairs, width = len(c), c.tokens.shape[1]
    meta: dict[str, Any] = {"forward_rows": 0, "backward_rows": 0, "n_pairs": n_pairs}
    with torch.no_grad():
        clean_m = forward_metric(model, c, metric)
        corrupt_m = forward_metric(model, k, metric)
    meta["forward_rows"] += 2 * n_pairs
    base = corrupt_m if direction == "clean_to_corrupt" else clean_m
    last = _LastToken(model, tgt, metric) if patch_at == "last" else None
    if last is not None:
        base = last.run(1, [])  # the same numerics as the patched runs
        meta["patch_at"] = "last"
    if target == "group":
        groups = _groups(model, neurons)
        masks = group_masks(model, groups)
        layer_sel: tuple[int, ...] = ()
        names = [hook_name(model, "group", la) for la in masks]
        n_patch = len(groups)
    else:
        layer_sel = model.check_layers(layers)
        names = [hook_name(model, target, la) for la in layer_sel]
        u = n_units(model, target, width)
        n_patch = u
    source = capture(model, src, names)
    meta["forward_rows"] += n_pairs
    if last is not None:  # the source activation at each sequence's last token
        source = {nm: last.at_last(a) for nm, a in source.items()}
    per_k = max(1, max_rows // n_pairs)

    def run_chunk(chunk_masks: dict[int, Tensor]) -> Tensor:
        kk = next(iter(chunk_masks.values())).shape[0]

        def make(layer: int, m: Tensor) -> Callable:
            name = hook_name(model, target, layer)
            s = source[name]

            def hook(t: Tensor, *, hook: Any) -> Tensor:
                view = t.view(kk, n_pairs, *t.shape[1:])
                mm = unit_mask(target, m.to(t.device))
                return torch.where(mm, s.unsqueeze(0).to(t.dtype), view).view_as(t)

            return hook

        if last is not None:
            names_k = [(hook_name(model, target, la), m) for la, m in chunk_masks.items()]
            out = last.run(kk, [(nm, m, source[nm]) for nm, m in names_k])
            meta["forward_rows"] += kk * n_pairs
            return out.view(kk, n_pairs) - base.view(1, n_pairs)
        hooks = [(hook_name(model, target, la), make(la, m)) for la, m in chunk_masks.items()]
        with torch.no_grad():
            out = forward_metric(model, _repeat(tgt, kk), metric, hooks)
        meta["forward_rows"] += kk * n_pairs
        return out.view(kk, n_pairs) - base.view(1, n_pairs)

    if target == "group":
        effects = [
            run_chunk({la: m[i : i + per_k] for la, m in masks.items()})
            for i in range(0, n_patch, per_k)
        ]
        per_pair = torch.cat(effects).T.contiguous().cpu()  # [pair, group]
        names_g = tuple(str(g.meta.get("name", f"group{i}")) for i, g in enumerate(groups))
        return PatchResult(
            target, "exact", direction, per_pair.mean(0), per_pair, (), clean_m.cpu(),
            corrupt_m.cpu(), names_g, meta,
        )  # fmt: skip
    rows = []
    eye = torch.eye(n_patch, dtype=torch.bool)
    for la in layer_sel:
        chunks = [run_chunk({la: eye[i : i + per_k]}) for i in range(0, n_patch, per_k)]
        rows.append(torch.cat(chunks).T)  # [pair, unit]
    per_pair = torch.stack(rows, 1).contiguous().cpu()  # [pair, layer, unit]
    meta["patches_per_pair"] = len(layer_sel) * n_patch
    return PatchResult(
        target, "exact", direction, per_pair.mean(0), per_pair, layer_sel, clean_m.cpu(),
        corrupt_m.cpu(), (), meta,
    )  # fmt: skip


def passes_per_pair(result: PatchResult) -> float:
    """Forward-pass equivalents per prompt pair, counting a backward pass as one pass."""
    n = result.meta.get("n_pairs") or 1
    return (result.meta.get("forward_rows", 0) + result.meta.get("backward_rows", 0)) / n
