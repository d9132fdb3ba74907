"""Neuron interventions: scale, zero- or mean-ablate chosen MLP neurons while the model runs.

A neuron's activation is the input of its layer's down projection (``blocks.{l}.mlp.hook_post``).
:func:`scale_neurons` multiplies the chosen activations by ``alpha`` during every forward pass of
the bridge, of ``model.hf_model`` and of anything that calls it (Hugging Face ``generate``,
:func:`hlens.sampling.sample_responses`). Only layers with chosen neurons get a hook, one hook per
layer, which multiplies by a precomputed per-layer scale vector (ones except at the chosen
neurons), so ``alpha = 1`` is an exact no-op and contexts nest: two scalings multiply.

``implementation="weights"`` instead scales the chosen rows of ``W_out`` in place, what the official
H-Neurons ``intervene_model.py`` does permanently, and restores the exact original rows on exit,
even when the body raises. Both forms give the same outputs (bit-identical for powers of two).

Example:
    >>> with scale_neurons(model, h_neurons, alpha=2.0):  # doctest: +SKIP
    ...     responses = sample_responses(model.hf_model, model.tokenizer, prompts, ids, cfg)
    >>> with ablate_neurons(model, h_neurons, mode="mean", reference=examples):  # doctest: +SKIP
    ...     logits = model.bridge(tokens)
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hlens._deprecate import UNSET, renamed_kwarg
from hlens.cache import right_align
from hlens.model import Model
from hlens.neurons import NeuronSet
from hlens.prompts import PromptFormat, TokenBatch

__all__ = [
    "Positions",
    "ablate_neurons",
    "neuron_means",
    "position_hook",
    "scale_neurons",
]

#: Which positions an intervention touches: ``"all"``, ``"last"`` (the last position of each
#: forward call: with left-padded prompts and a KV cache that is the last prompt token and every
#: generated token), a ``slice`` or list of absolute positions, or a boolean mask ``[pos]`` or
#: ``[batch, pos]`` over absolute positions (positions past the end of a mask are not touched).
#: Absolute positions count padded columns and continue through cached generation steps.
Positions = str | slice | Sequence[int] | Tensor

NeuronsLike = NeuronSet | Mapping[int, Sequence[int]]


def _by_layer(model: Model, neurons: NeuronsLike) -> dict[int, list[int]]:
    if isinstance(neurons, NeuronSet):
        neurons.check_model(model.n_layers, model.d_mlp, what="model")
        groups = neurons.by_layer()
    elif isinstance(neurons, Mapping):
        groups = {int(k): [int(i) for i in v] for k, v in neurons.items()}
        for layer, idx in groups.items():
            model._check_layer(layer)
            bad = [i for i in idx if not 0 <= i < model.d_mlp]
            if bad:
                raise ValueError(
                    f"neuron indices {bad} of layer {layer} are outside [0, {model.d_mlp})"
                )
    else:
        raise TypeError(
            f"neurons must be a NeuronSet or a {{layer: [index, ...]}} mapping, got "
            f"{type(neurons).__name__}"
        )
    return {layer: sorted(set(idx)) for layer, idx in sorted(groups.items()) if idx}


def _check_positions(positions: Positions) -> None:
    if isinstance(positions, str):
        if positions not in ("all", "last"):
            raise ValueError(
                f"positions must be 'all', 'last', a slice, a list of ints or a bool mask; got "
                f"{positions!r}"
            )
    elif isinstance(positions, Tensor):
        if positions.dtype != torch.bool or positions.ndim not in (1, 2):
            raise ValueError(
                f"a positions mask must be a bool tensor [pos] or [batch, pos]; got dtype "
                f"{positions.dtype} with shape {tuple(positions.shape)}"
            )
    elif not isinstance(positions, slice) and not (
        isinstance(positions, Sequence) and all(isinstance(p, int) for p in positions)
    ):
        raise TypeError(
            f"positions must be 'all', 'last', a slice, a list of ints or a bool mask; got "
            f"{type(positions).__name__}"
        )


class _Offset:
    """Tracks the absolute position of the first token of each forward call.

    A forward pre-hook on the Hugging Face model: a call without a KV cache starts at 0; a call
    with a cache starts at the cache's length, or, when the cache does not report one (the
    bridge's attention keeps its own state), where the previous call with the same cache object
    ended.
    """

    def __init__(self) -> None:
        self.value = 0
        self._cache: Any = None  # a weak reference to the last cache seen
        self._end = 0

    def pre_hook(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        n_new = int(ids.shape[1]) if ids is not None and ids.ndim >= 2 else 0
        start = 0
        if cache is not None:
            try:
                start = int(cache.get_seq_length())
            except (AttributeError, TypeError):  # legacy tuple caches
                start = int(cache[0][0].shape[-2]) if len(cache) else 0
            if start == 0 and self._cache is not None and self._cache() is cache:
                start = self._end
        try:
            self._cache = weakref.ref(cache) if cache is not None else None
        except TypeError:  # not weak-referenceable: rely on the cache's reported length
            self._cache = None
        self.value = start
        self._end = start + n_new


def _position_mask(positions: Positions, tensor: Tensor, offset: _Offset | None) -> Tensor | None:
    """``None`` for all positions, else a bool mask broadcastable to ``tensor[..., :1]``."""
    if isinstance(positions, str) and positions == "all":
        return None
    n_pos = tensor.shape[-2]
    if isinstance(positions, str):  # "last"
        mask = torch.zeros(n_pos, dtype=torch.bool, device=tensor.device)
        mask[-1] = True
        return mask[:, None]
    start = offset.value if offset is not None else 0
    total = start + n_pos
    if isinstance(positions, Tensor):
        width = min(positions.shape[-1], total)
        full = torch.zeros((*positions.shape[:-1], total), dtype=torch.bool)
        full[..., :width] = positions[..., :width].cpu()
        return full[..., start:].to(tensor.device)[..., None]
    full = torch.zeros(total, dtype=torch.bool)
    if isinstance(positions, slice):
        full[positions] = True
    else:
        idx = [p for p in positions if -total <= p < total]
        full[idx] = True
    return full[start:].to(tensor.device)[:, None]


def position_hook(
    model: Model, positions: Positions, fn: Callable[[Tensor], Tensor]
) -> tuple[Callable, ExitStack]:
    """Wrap ``fn`` (a map of the whole activation) so that it only changes ``positions``.

    Returns the bridge hook function and an exit stack that removes the helper pre-hook (used for
    absolute positions) when closed. Building block for :func:`scale_neurons` and
    :mod:`hlens.steering`.
    """
    _check_positions(positions)
    stack = ExitStack()
    offset: _Offset | None = None
    if not isinstance(positions, str):
        offset = _Offset()
        handle = model.hf_model.register_forward_pre_hook(offset.pre_hook, with_kwargs=True)
        stack.callback(handle.remove)

    def hook(tensor: Tensor, *, hook: Any) -> Tensor:
        new = fn(tensor)
        mask = _position_mask(positions, tensor, offset)
        return new if mask is None else torch.where(mask, new, tensor)

    return hook, stack


class _LayerEdit:
    """``z * scale + shift`` on one layer's activations, with cached device/dtype copies."""

    def __init__(self, scale: Tensor, shift: Tensor | None) -> None:
        self.scale, self.shift = scale, shift
        self._cast: dict[tuple, tuple[Tensor, Tensor | None]] = {}

    def __call__(self, z: Tensor) -> Tensor:
        key = (z.device, z.dtype)
        if key not in self._cast:
            shift = self.shift.to(z.device, z.dtype) if self.shift is not None else None
            self._cast[key] = (self.scale.to(z.device, z.dtype), shift)
        scale, shift = self._cast[key]
        out = z * scale
        return out if shift is None else out + shift


@contextmanager
def _edit_neurons(
    model: Model, edits: dict[int, _LayerEdit], positions: Positions
) -> Iterator[None]:
    with ExitStack() as stack:
        fwd = []
        for layer, edit in edits.items():
            hook, sub = position_hook(model, positions, edit)
            stack.enter_context(sub)
            fwd.append((model.family.activation_hook(layer), hook))
        stack.enter_context(model.bridge.hooks(fwd_hooks=fwd))
        yield


@contextmanager
def _scale_weights(model: Model, groups: dict[int, list[int]], alpha: float) -> Iterator[None]:
    saved: list[tuple[Tensor, Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for layer, idx in groups.items():
                w = model.W_out(layer)  # [d_mlp, d_model] view of the raw weight
                rows = torch.tensor(idx, dtype=torch.long, device=w.device)
                saved.append((w, rows, w[rows].clone()))
                w[rows] = w[rows] * alpha
        yield
    finally:
        with torch.no_grad():
            for w, rows, original in reversed(saved):
                w[rows] = original


@contextmanager
def scale_neurons(
    model: Model,
    neurons: NeuronsLike,
    alpha: float,
    *,
    positions: Positions = "all",
    implementation: Literal["hooks", "weights"] = "hooks",
    method: Any = UNSET,
) -> Iterator[None]:
    """Multiply the chosen neurons' activations by ``alpha`` inside the ``with`` block.

    Args:
        model: an :class:`hlens.Model`.
        neurons: a :class:`~hlens.NeuronSet` or ``{layer: [index, ...]}``.
        alpha: the factor (``0`` silences, ``1`` changes nothing, ``> 1`` amplifies).
        positions: which positions to change; see :data:`Positions`.
        implementation: how the scaling is done, with the same outputs: ``"hooks"`` (a hook per
            affected layer) or ``"weights"`` (scale the rows of ``W_out`` in place and restore
            them exactly on exit; ``positions`` must be ``"all"``).
        method: the deprecated name of ``implementation``, for one release (``method`` names
            the estimator elsewhere: exact patching, AtP, integrated gradients).

    Raises:
        ValueError: a set made for another model, an unknown ``implementation`` or
            ``positions``.

    Example:
        >>> with scale_neurons(model, {3: [17, 42]}, alpha=0.0):  # doctest: +SKIP
        ...     logits = model.bridge(tokens)
    """
    implementation = renamed_kwarg(
        "scale_neurons", "method", "implementation", method, implementation, "hooks", stacklevel=5
    )  # 5: the body runs in contextlib's __enter__, called by the `with` statement
    groups = _by_layer(model, neurons)
    alpha = float(alpha)
    _check_positions(positions)
    if implementation == "weights":
        if not (isinstance(positions, str) and positions == "all"):
            raise ValueError(
                f"implementation='weights' scales every position; got positions={positions!r}. "
                "Use implementation='hooks' to restrict positions."
            )
        with _scale_weights(model, groups, alpha):
            yield
        return
    if implementation != "hooks":
        raise ValueError(f"implementation must be 'hooks' or 'weights', got {implementation!r}")
    edits = {}
    for layer, idx in groups.items():
        scale = torch.ones(model.d_mlp)
        scale[idx] = alpha
        edits[layer] = _LayerEdit(scale, None)
    with _edit_neurons(model, edits, positions):
        yield


@torch.no_grad()
def neuron_means(
    model: Model,
    neurons: NeuronsLike,
    reference: Any,
    *,
    batch_size: int = 16,
    fmt: PromptFormat | None = None,
) -> dict[int, Float[Tensor, " d_mlp"]]:
    """Mean activation of the chosen neurons over every real token of ``reference``.

    Args:
        model: an :class:`hlens.Model`.
        neurons: a :class:`~hlens.NeuronSet` or ``{layer: [index, ...]}``.
        reference: texts, :class:`~hlens.Example` objects, token ids or a TokenBatch.
        batch_size: sequences per forward pass.
        fmt: how examples are rendered.

    Returns:
        ``{layer: means}`` with a ``[d_mlp]`` vector per layer (zero outside the chosen neurons),
        in the model's score dtype.
    """
    groups = _by_layer(model, neurons)
    batch: TokenBatch = model.as_batch(reference, None, fmt)
    dtype = model.score_dtype
    sums = {layer: torch.zeros(model.d_mlp, dtype=dtype) for layer in groups}
    index = {layer: torch.tensor(idx, dtype=torch.long) for layer, idx in groups.items()}
    count = 0
    mask = torch.empty(0)

    def grab(layer: int) -> Callable:
        def hook(z: Tensor, *, hook: Any) -> Tensor:
            sel = z.detach()[..., index[layer].to(z.device)].to(dtype).cpu()
            sums[layer][index[layer]] += (sel * mask[..., None]).sum(dim=(0, 1))
            return z

        return hook

    fwd = [(model.family.activation_hook(layer), grab(layer)) for layer in groups]
    with model.bridge.hooks(fwd_hooks=fwd):
        for start in range(0, len(batch), batch_size):
            rows = slice(start, start + batch_size)
            tokens, attn, _ = right_align(batch.tokens[rows], batch.attention_mask[rows])
            mask = attn.to(dtype)
            count += int(attn.sum())
            model.bridge(
                tokens.to(model.device), return_type=None, attention_mask=attn.to(model.device)
            )
    if count == 0:
        raise ValueError("the reference set has no real tokens to average over")
    return {layer: s / count for layer, s in sums.items()}


@contextmanager
def ablate_neurons(
    model: Model,
    neurons: NeuronsLike,
    mode: Literal["zero", "mean"] = "zero",
    *,
    reference: Any = None,
    positions: Positions = "all",
    batch_size: int = 16,
) -> Iterator[None]:
    """Replace the chosen neurons' activations by zero or by their mean over a reference set.

    Args:
        model: an :class:`hlens.Model`.
        neurons: a :class:`~hlens.NeuronSet` or ``{layer: [index, ...]}``.
        mode: ``"zero"`` or ``"mean"``.
        reference: for ``"mean"``: texts, examples, token ids or a TokenBatch whose real tokens
            give the mean (see :func:`neuron_means`), or precomputed ``{layer: [d_mlp] means}``.
        positions: which positions to change; see :data:`Positions`.
        batch_size: sequences per forward pass when computing means.

    Example:
        >>> with ablate_neurons(model, h_neurons, "mean", reference=texts):  # doctest: +SKIP
        ...     logits = model.bridge(tokens)
    """
    groups = _by_layer(model, neurons)
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    means: Mapping[int, Tensor] = {}
    if mode == "mean":
        if reference is None:
            raise ValueError("mode='mean' needs a reference set (texts, examples or tokens)")
        if isinstance(reference, Mapping):
            means = reference
            missing = sorted(set(groups) - set(means))
            if missing:
                raise ValueError(f"reference means lack layers {missing}")
        else:
            means = neuron_means(model, groups, reference, batch_size=batch_size)
    edits = {}
    for layer, idx in groups.items():
        scale = torch.ones(model.d_mlp)
        scale[idx] = 0.0
        shift = None
        if mode == "mean":
            shift = torch.zeros(model.d_mlp, dtype=means[layer].dtype)
            shift[idx] = means[layer][idx].cpu()
        edits[layer] = _LayerEdit(scale, shift)
    with _edit_neurons(model, edits, positions):
        yield
