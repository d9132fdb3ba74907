"""Typed neuron caches: activations (input of the down projection) and MLP-output norms.

Only the hooks that are needed are attached, the forward pass stops after the last requested
layer, and padded positions are zeroed (and marked by ``attention_mask``), so left- and
right-padded batches give the same numbers on real tokens as unpadded single sequences.

Example:
    >>> cache = model.neuron_cache(["The capital of France is"])  # doctest: +SKIP
    >>> cache.activations.shape  # [batch, pos, layer, d_mlp]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hlens.contribution import cett_from_parts
from hlens.model import Model
from hlens.prompts import PromptFormat, TokenBatch

__all__ = ["NeuronCache", "neuron_cache", "neuron_hooks"]

LayerFn = Callable[[int, Tensor, Tensor], None]


@dataclass
class NeuronCache:
    """Neuron activations and MLP-output norms for a batch.

    Attributes:
        activations: input of each layer's down projection (``z``), zero at padding.
        mlp_out_norm: ``||h||``, the L2 norm of each layer's down-projection output, zero at
            padding.
        tokens: the token ids.
        attention_mask: 1 at real tokens, 0 at padding.
        layers: which model layers the ``layer`` axis holds, in order.
        regions: region masks when the inputs were examples (see :mod:`hlens.prompts`).
    """

    activations: Float[Tensor, "batch pos layer d_mlp"]
    mlp_out_norm: Float[Tensor, "batch pos layer"]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    layers: tuple[int, ...]
    regions: dict[str, Bool[Tensor, "batch pos"]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b, p, n_layer, _ = self.activations.shape
        if self.mlp_out_norm.shape != (b, p, n_layer):
            raise ValueError(
                f"mlp_out_norm has shape {tuple(self.mlp_out_norm.shape)} but should have shape "
                f"{(b, p, n_layer)} to match activations {tuple(self.activations.shape)}"
            )
        if len(self.layers) != n_layer:
            raise ValueError(f"layers lists {len(self.layers)} layers, activations hold {n_layer}")

    def cett(
        self,
        w_out_norms: Float[Tensor, "layer d_mlp"],
        *,
        use_abs: bool = True,
        use_mag: bool = True,
        eps: float = 1e-8,
    ) -> Float[Tensor, "batch pos layer d_mlp"]:
        """CETT scores from this cache (see :func:`hlens.cett`). Norms cover all layers."""
        norms = w_out_norms[list(self.layers)].to(self.activations.device)
        return cett_from_parts(
            self.activations, self.mlp_out_norm, norms, use_abs=use_abs, use_mag=use_mag, eps=eps
        ) * self.attention_mask[:, :, None, None].to(self.activations.dtype)

    def to(self, device: torch.device | str) -> NeuronCache:
        return NeuronCache(
            self.activations.to(device),
            self.mlp_out_norm.to(device),
            self.tokens.to(device),
            self.attention_mask.to(device),
            self.layers,
            {k: v.to(device) for k, v in self.regions.items()},
        )


@contextmanager
def neuron_hooks(model: Model, layers: Sequence[int], fn: LayerFn) -> Iterator[None]:
    """Attach hooks that call ``fn(layer, z, h)`` once per layer during forward passes.

    ``z`` is the neuron activation ``[batch, pos, d_mlp]`` and ``h`` the down-projection output
    ``[batch, pos, d_model]``. The hooks are removed on exit, even if the body raises.
    """
    pending: dict[int, Tensor] = {}

    def act_hook(layer: int) -> Callable:
        def hook(tensor: Tensor, *, hook: Any) -> Tensor:
            pending[layer] = tensor
            return tensor

        return hook

    def out_hook(layer: int) -> Callable:
        def hook(tensor: Tensor, *, hook: Any) -> Tensor:
            fn(layer, pending.pop(layer), tensor)
            return tensor

        return hook

    fwd = []
    for layer in layers:
        fwd.append((model.family.activation_hook(layer), act_hook(layer)))
        fwd.append((model.family.output_hook(layer), out_hook(layer)))
    with model.bridge.hooks(fwd_hooks=fwd):
        yield


def right_align(
    tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
) -> tuple[Tensor, Tensor, Tensor]:
    """Move left padding to the right; returns ``(tokens, mask, index)``.

    ``index[b, p]`` is the position in the right-aligned batch that holds original position
    ``p``, so ``right_aligned.gather(1, index)`` restores the caller's layout. Forward passes run
    right-aligned: with left padding, pad queries attend to nothing, and in float64 Hugging Face's
    eager attention turns those rows into NaN that then leaks into real tokens.
    """
    src, index = _right_align_maps(attention_mask)
    return tokens.gather(1, src), attention_mask.gather(1, src), index


def _right_align_maps(attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(src, index)``: right-aligned position p reads original ``src[p]``; original position p
    lives at ``index[p]``."""
    n_pad = (attention_mask == 0).long().cumprod(dim=1).sum(dim=1, keepdim=True)  # leading pads
    pos = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
    return (pos + n_pad) % attention_mask.shape[1], (pos - n_pad) % attention_mask.shape[1]


def right_align_batch(batch: TokenBatch) -> TokenBatch:
    """``batch`` with left padding moved to the right, region masks included."""
    src, _ = _right_align_maps(batch.attention_mask)
    regions = {k: v.gather(1, src) for k, v in batch.regions.items()}
    return TokenBatch(
        batch.tokens.gather(1, src),
        batch.attention_mask.gather(1, src),
        regions,
        batch.examples,
        "right",
    )


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed has been seen."""


def run_forward(model: Model, batch: TokenBatch, *, stop_after_layer: int | None = None) -> None:
    """One forward pass over ``batch``, computing no logits.

    With ``stop_after_layer``, the pass ends as soon as that layer's MLP output exists: later
    attention, MLPs, the final norm and the unembedding (a large matmul for big vocabularies) are
    skipped.
    """
    tokens = batch.tokens.to(model.device)
    mask = batch.attention_mask.to(model.device)
    if stop_after_layer is None:
        model.bridge(tokens, return_type=None, attention_mask=mask)
        return

    def stop(tensor: Tensor, *, hook: Any) -> Tensor:
        raise _StopForward

    hooks = [(model.family.output_hook(stop_after_layer), stop)]
    with model.bridge.hooks(fwd_hooks=hooks), contextlib.suppress(_StopForward):
        model.bridge(tokens, return_type=None, attention_mask=mask)


def neuron_cache(
    model: Model,
    inputs: Any,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    fmt: PromptFormat | None = None,
) -> NeuronCache:
    """Cache neuron activations and MLP-output norms.

    Args:
        model: an :class:`hlens.Model`.
        inputs: text, a list of texts, :class:`~hlens.Example` objects, token ids or a TokenBatch.
        attention_mask: with token ids, 1 at real tokens (default: all ones).
        layers: which layers to cache (default: all).
        batch_size: run the forward passes in chunks of this many sequences.
        fmt: how examples are rendered.
    """
    batch = model.as_batch(inputs, attention_mask, fmt)
    layers = model.check_layers(layers)
    n = len(batch)
    step = batch_size or n
    if step <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    b, p = batch.tokens.shape
    dtype = model.score_dtype
    acts = torch.zeros(b, p, len(layers), model.d_mlp, dtype=dtype)
    norms = torch.zeros(b, p, len(layers), dtype=dtype)
    slot = {layer: i for i, layer in enumerate(layers)}
    rows = slice(0, 0)

    index = torch.empty(0)

    def store(layer: int, z: Tensor, h: Tensor) -> None:
        z = z.detach().to(dtype).cpu().gather(1, index[:, :, None].expand(-1, -1, z.shape[-1]))
        h = h.detach().to(dtype).norm(dim=-1).cpu().gather(1, index)
        acts[rows, :, slot[layer]] = z
        norms[rows, :, slot[layer]] = h

    with torch.no_grad(), neuron_hooks(model, layers, store):
        for start in range(0, n, step):
            rows = slice(start, min(start + step, n))
            tokens, mask, index = right_align(batch.tokens[rows], batch.attention_mask[rows])
            run_forward(model, TokenBatch(tokens, mask), stop_after_layer=max(layers))
    mask = batch.attention_mask.bool()
    acts[~mask] = 0.0
    norms[~mask] = 0.0
    return NeuronCache(acts, norms, batch.tokens, batch.attention_mask, layers, batch.regions)
