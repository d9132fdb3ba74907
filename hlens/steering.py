"""Steering vectors in the residual stream: difference of means, addition, directional ablation.

A steering vector (CAA / ActAdd style) is the difference between the mean residual stream of two
labelled sets at the output of one block (``blocks.{layer}.hook_out``, which the bridge also names
``blocks.{layer}.hook_resid_post``). :func:`steer` adds ``coef * vector`` there during forward
passes and generation; :func:`ablate_direction` projects a direction out of the residual stream.

Example:
    >>> v = steering_vector(model, hallucinated, faithful, layer=2)  # doctest: +SKIP
    >>> with steer(model, v, coef=-4.0, layer=2):  # doctest: +SKIP
    ...     responses = sample_responses(model.hf_model, model.tokenizer, prompts, ids, cfg)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hlens._deprecate import UNSET, renamed_kwarg
from hlens.cache import right_align
from hlens.interventions import Positions, position_hook
from hlens.model import Model
from hlens.prompts import REGIONS, PromptFormat, TokenBatch
from hlens.registry import MLPFamily

__all__ = [
    "ablate_direction",
    "residual_hook",
    "residual_mean",
    "steer",
    "steer_residual",
    "steering_vector",
]


def residual_hook(layer: int) -> str:
    """Deprecated: use ``model.family.residual_hook(layer)`` (hook names live in the registry)."""
    warnings.warn(
        "hlens.steering.residual_hook is deprecated; use model.family.residual_hook(layer)",
        DeprecationWarning,
        stacklevel=2,
    )
    return MLPFamily.residual_hook(None, layer)  # type: ignore[arg-type]


def _check_vector(model: Model, vector: Tensor) -> None:
    if vector.shape != (model.d_model,):
        raise ValueError(
            f"the steering vector has shape {tuple(vector.shape)} but should have shape "
            f"({model.d_model},) (d_model); a [batch, pos, d_model] tensor would broadcast "
            "silently, so pass one vector"
        )


@torch.no_grad()
def residual_mean(
    model: Model,
    inputs: Any,
    layer: int,
    *,
    pool: Literal["last", "mean"] | str = "last",
    batch_size: int = 16,
    fmt: PromptFormat | None = None,
    positions: Any = UNSET,
) -> Float[Tensor, " d_model"]:
    """Mean residual stream after block ``layer`` over a set of inputs.

    Args:
        model: an :class:`hlens.Model`.
        inputs: texts, :class:`~hlens.Example` objects, token ids or a TokenBatch.
        layer: the block whose output is read.
        pool: which tokens are averaged: ``"last"`` (the last real token of each sequence),
            ``"mean"`` (every real token), or a region name of :data:`hlens.prompts.REGIONS`
            (examples only, e.g. ``"answer"``: the answer tokens). Not to be confused with the
            ``positions`` of the interventions (:data:`hlens.interventions.Positions`: which
            positions a hook changes).
        batch_size: sequences per forward pass.
        fmt: how examples are rendered.
        positions: the deprecated name of ``pool``, for one release.

    Returns:
        The mean over the selected tokens (each token weighs the same), in the score dtype.
    """
    pool = renamed_kwarg("residual_mean", "positions", "pool", positions, pool, "last")
    model._check_layer(layer)
    batch: TokenBatch = model.as_batch(inputs, None, fmt)
    if pool in ("last", "mean"):
        select = batch.attention_mask.bool()
        if pool == "last":
            last = torch.zeros_like(select)
            ends = select.long().cumsum(1).argmax(1)  # the last real token (either padding side)
            last[torch.arange(len(batch)), ends] = True
            select = last
    elif pool in REGIONS:
        select = batch.region(pool) & batch.attention_mask.bool()
    else:
        raise ValueError(f"pool must be 'last', 'mean' or a region of {REGIONS}; got {pool!r}")
    dtype = model.score_dtype
    total = torch.zeros(model.d_model, dtype=dtype)
    count = 0
    sel = torch.empty(0)

    def grab(resid: Tensor, *, hook: Any) -> Tensor:
        nonlocal total
        total = total + (resid.detach().to(dtype).cpu() * sel[..., None]).sum(dim=(0, 1))
        return resid

    with model.bridge.hooks(fwd_hooks=[(model.family.residual_hook(layer), grab)]):
        for start in range(0, len(batch), batch_size):
            rows = slice(start, start + batch_size)
            tokens, attn, index = right_align(batch.tokens[rows], batch.attention_mask[rows])
            # the selection, moved into the right-aligned layout
            sel = torch.zeros(index.shape, dtype=dtype).scatter_(1, index, select[rows].to(dtype))
            count += int(sel.sum())
            model.bridge(
                tokens.to(model.device), return_type=None, attention_mask=attn.to(model.device)
            )
    if count == 0:
        raise ValueError(f"no tokens selected by pool={pool!r}")
    return total / count


def steering_vector(
    model: Model,
    positive: Any,
    negative: Any,
    layer: int,
    *,
    pool: Literal["last", "mean"] | str = "last",
    batch_size: int = 16,
    fmt: PromptFormat | None = None,
    positions: Any = UNSET,
) -> Float[Tensor, " d_model"]:
    """Difference of means, ``mean(positive) - mean(negative)``, of the residual after ``layer``.

    Args:
        model: an :class:`hlens.Model`.
        positive: inputs of the behaviour to add (texts, examples, tokens or a TokenBatch).
        negative: inputs of the opposite behaviour.
        layer: the block whose output is read (and later steered).
        pool: which tokens are averaged; see :func:`residual_mean`.
        batch_size: sequences per forward pass.
        fmt: how examples are rendered.
        positions: the deprecated name of ``pool``, for one release.

    Example:
        >>> v = steering_vector(model, ["I don't know."], ["Paris."], layer=1)  # doctest: +SKIP
        >>> v.shape  # doctest: +SKIP
        torch.Size([32])
    """
    pool = renamed_kwarg("steering_vector", "positions", "pool", positions, pool, "last")
    kw = dict(pool=pool, batch_size=batch_size, fmt=fmt)
    return residual_mean(model, positive, layer, **kw) - residual_mean(model, negative, layer, **kw)


@contextmanager
def steer_residual(
    model: Model,
    vector: Float[Tensor, " d_model"],
    coef: float,
    layer: int,
    *,
    positions: Positions = "all",
) -> Iterator[None]:
    """Add ``coef * vector`` to the residual stream after block ``layer`` inside the block.

    Args:
        model: an :class:`hlens.Model`.
        vector: a ``[d_model]`` direction (e.g. from :func:`steering_vector`).
        coef: its coefficient (``0`` is an exact no-op).
        layer: the block whose output is changed.
        positions: which positions to change; see :data:`hlens.interventions.Positions`.

    Example:
        >>> with steer_residual(model, v, coef=4.0, layer=1):  # doctest: +SKIP
        ...     out = model.hf_model.generate(ids, max_new_tokens=8)
    """
    model._check_layer(layer)
    _check_vector(model, vector)
    delta = (float(coef) * vector.detach().double()).to(model.dtype)
    cast: dict[tuple, Tensor] = {}

    def add(resid: Tensor) -> Tensor:
        key = (resid.device, resid.dtype)
        if key not in cast:
            cast[key] = delta.to(resid.device, resid.dtype)
        return resid + cast[key]

    hook, stack = position_hook(model, positions, add)
    with stack, model.bridge.hooks(fwd_hooks=[(model.family.residual_hook(layer), hook)]):
        yield


@contextmanager
def ablate_direction(
    model: Model,
    vector: Float[Tensor, " d_model"],
    layers: Sequence[int] | None = None,
    *,
    positions: Positions = "all",
) -> Iterator[None]:
    """Project ``vector``'s direction out of the residual stream after each of ``layers``.

    ``x <- x - (x . u) u`` with ``u = vector / ||vector||``, at ``blocks.{l}.hook_out``. With
    ``layers=None`` every block's output is projected, and the embedding too
    (``blocks.0.hook_in``), so the direction is absent from the whole residual stream.

    Example:
        >>> with ablate_direction(model, v):  # doctest: +SKIP
        ...     logits = model.bridge(tokens)
    """
    _check_vector(model, vector)
    norm = vector.detach().double().norm()
    if norm == 0:
        raise ValueError("cannot ablate the direction of a zero vector")
    unit = vector.detach().double() / norm
    names = [model.family.residual_hook(layer) for layer in model.check_layers(layers)]
    if layers is None:
        names.insert(0, "blocks.0.hook_in")
    cast: dict[tuple, Tensor] = {}

    def project(resid: Tensor) -> Tensor:
        key = (resid.device, resid.dtype)
        if key not in cast:
            cast[key] = unit.to(resid.device, resid.dtype)
        u = cast[key]
        return resid - (resid @ u)[..., None] * u

    with ExitStack() as stack:
        fwd: list[tuple[str, Callable]] = []
        for name in names:
            hook, sub = position_hook(model, positions, project)
            stack.enter_context(sub)
            fwd.append((name, hook))
        stack.enter_context(model.bridge.hooks(fwd_hooks=fwd))
        yield


def steer(
    model: Model,
    vector: Float[Tensor, " d_model"],
    coef: float,
    layer: int,
    *,
    positions: Positions = "all",
) -> AbstractContextManager[None]:
    """Deprecated name of :func:`steer_residual` (``hlens steer`` sweeps neuron scales; this adds
    a residual vector). Kept for one release."""
    warnings.warn(
        "hlens.steer is deprecated; use hlens.steer_residual (the same function)",
        DeprecationWarning,
        stacklevel=2,
    )
    return steer_residual(model, vector, coef, layer, positions=positions)
