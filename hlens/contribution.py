"""CETT: each neuron's contribution to its MLP's output, per token.

For neuron ``j`` of a layer with down-projection input ``z`` and output ``h``::

    CETT_j = |z_j| * ||W_out[j]|| / ||h||

``|z_j| * ||W_out[j]||`` is the norm of the neuron's write into the residual stream, so CETT is the
neuron's share of the MLP output's norm (Gao et al., 2025). Both factors can be switched off
(``use_abs=False`` keeps the sign of ``z``; ``use_mag=False`` drops ``||W_out[j]||``), which the
official scripts' ``store_true`` flags cannot. Weights are always the raw ones (never the centered
weights of TransformerLens's compatibility mode). ``eps`` (1e-8, as in the official script) guards
against a zero output.

Example:
    >>> scores = hlens.cett(model, tokens)  # doctest: +SKIP
    >>> scores.shape  # [batch, pos, layer, d_mlp]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from hlens._deprecate import UNSET, renamed_kwarg
from hlens.model import Model

__all__ = ["aggregate_region", "cett", "cett_from_parts"]


def cett_from_parts(
    activations: Float[Tensor, "*batch d_mlp"],
    mlp_out_norm: Float[Tensor, " *batch"],
    w_out_norms: Float[Tensor, " d_mlp"] | Float[Tensor, "layer d_mlp"],
    *,
    use_abs: bool = True,
    use_mag: bool = True,
    eps: float = 1e-8,
    out: Float[Tensor, "*batch d_mlp"] | None = None,
) -> Float[Tensor, "*batch d_mlp"]:
    """CETT from activations ``z``, output norms ``||h||`` and weight norms ``||W_out[j]||``.

    The one statement of the formula in hlens (streaming extraction calls it too). ``out``: write
    the scores into this tensor (the activations' shape, any floating dtype, e.g. float32 scores
    of bfloat16 activations) instead of new memory, and return it; ``activations`` is never
    changed. The numbers are the same either way.

    Example:
        >>> z = torch.tensor([[-2.0, 1.0]])
        >>> cett_from_parts(z, torch.tensor([4.0]), torch.tensor([1.0, 2.0]))
        tensor([[0.5000, 0.5000]])
    """
    if out is None:
        x = activations.abs() if use_abs else activations
        if use_mag:
            x = x * w_out_norms.to(x.dtype)
        return x / (mlp_out_norm.to(x.dtype).unsqueeze(-1) + eps)
    if out.shape != activations.shape:
        raise ValueError(
            f"out has shape {tuple(out.shape)}, the activations {tuple(activations.shape)}"
        )
    if use_abs and out.dtype == activations.dtype:
        torch.abs(activations, out=out)
    else:
        out.copy_(activations)
        if use_abs:
            out.abs_()
    if use_mag:
        out.mul_(w_out_norms.to(out.dtype))
    return out.div_(mlp_out_norm.to(out.dtype).unsqueeze(-1) + eps)


def cett(
    model: Model,
    tokens: Any,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    use_abs: bool = True,
    use_mag: bool = True,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
    eps: float = 1e-8,
) -> Float[Tensor, "batch pos layer d_mlp"]:
    """Per-token CETT scores of every neuron.

    Args:
        model: an :class:`hlens.Model`.
        tokens: token ids ``[batch, pos]``, text, examples or a TokenBatch.
        attention_mask: with token ids, 1 at real tokens; padded positions score 0.
        use_abs: take ``|z|`` (the paper's definition) rather than signed ``z``.
        use_mag: multiply by ``||W_out[j]||`` (the paper's definition).
        layers: restrict to these layers (the ``layer`` axis then follows this order).
        batch_size: forward-pass chunk size.
        eps: added to ``||h||``.
    """
    cache = model.neuron_cache(
        tokens, attention_mask=attention_mask, layers=layers, batch_size=batch_size
    )
    return cache.cett(model.W_out_norms(), use_abs=use_abs, use_mag=use_mag, eps=eps)


def aggregate_region(
    scores: Float[Tensor, "batch pos *feature"],
    mask: Bool[Tensor, "batch pos"],
    aggregation: Literal["mean", "max"] = "mean",
    *,
    method: Any = UNSET,
) -> Float[Tensor, "batch *feature"]:  # noqa: F821 (jaxtyping dims)
    """Mean or max of per-token scores over the masked positions of each sequence.

    Rows whose mask is empty get NaN, so a missing region is never mistaken for a zero score.
    ``aggregation`` is ``"mean"`` or ``"max"`` (:attr:`hlens.CETTConfig.aggregation`);
    ``method=`` is its deprecated name, for one release.

    Example:
        >>> s = torch.tensor([[[1.0], [3.0], [5.0]]])
        >>> aggregate_region(s, torch.tensor([[True, True, False]]), "mean")
        tensor([[2.]])
    """
    if scores.shape[:2] != mask.shape:
        raise ValueError(
            f"region mask has shape {tuple(mask.shape)} but scores have [batch, pos] = "
            f"{tuple(scores.shape[:2])}"
        )
    m = mask.reshape(*mask.shape, *([1] * (scores.ndim - 2))).to(scores.device)
    count = mask.sum(1).reshape(-1, *([1] * (scores.ndim - 2))).to(scores.dtype)
    aggregation = renamed_kwarg(
        "aggregate_region", "method", "aggregation", method, aggregation, "mean"
    )
    if aggregation == "mean":
        out = torch.where(m, scores, torch.zeros((), dtype=scores.dtype)).sum(1) / count
    elif aggregation == "max":
        out = torch.where(m, scores, torch.full((), -torch.inf, dtype=scores.dtype)).amax(1)
    else:
        raise ValueError(f"aggregation must be 'mean' or 'max', got {aggregation!r}")
    empty = (mask.sum(1) == 0).reshape(-1, *([1] * (scores.ndim - 2)))
    return torch.where(empty.to(out.device), torch.full((), torch.nan, dtype=out.dtype), out)
