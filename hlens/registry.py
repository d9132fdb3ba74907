"""The one place where model families differ: which hooks and weights make up an MLP neuron.

Every family entry says, for a Hugging Face architecture, where a neuron's activation lives (the
input of the down projection), where the MLP's output lives (the output of the down projection,
*before* any post-feed-forward norm such as Gemma 2/3's), and how the raw down-projection weight is
laid out. Nothing else in hlens branches on model names: it asks this registry.

Example:
    >>> fam = family_for_architecture("LlamaForCausalLM")
    >>> fam.name, fam.gated
    ('llama', True)
    >>> fam.activation_hook(3)
    'blocks.3.mlp.hook_post'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = [
    "MLPFamily",
    "UnsupportedModelError",
    "family_for_architecture",
    "register_family",
    "supported_architectures",
]


class UnsupportedModelError(ValueError):
    """The model's MLP family is not in the registry."""


@dataclass(frozen=True)
class MLPFamily:
    """How one family of MLPs exposes its neurons.

    Attributes:
        name: short family name (``"llama"``, ``"gpt2"``, ...).
        architectures: Hugging Face ``config.architectures`` class names in this family.
        gated: whether the MLP is gated (``act(gate(x)) * up(x)``) rather than ``act(in(x))``.
        hf_layers: dotted path from the Hugging Face ``*ForCausalLM`` module to its decoder layers.
        hf_down_proj: dotted path from one decoder layer to its down projection module.
        hf_up_proj: dotted path from one decoder layer to its up (input) projection.
        hf_gate_proj: dotted path to the gate projection of a gated MLP, else ``None``.
        linear_layout: ``"out_in"`` when the MLP's linear maps are ``nn.Linear`` (weight is
            ``[out, in]``), ``"in_out"`` for GPT-2's ``Conv1D`` (weight is ``[in, out]``).
        post_ffn_norm: whether a norm follows the MLP inside the block (Gemma 2/3); the bridge's
            ``hook_mlp_out`` is then *after* that norm, so hlens reads ``mlp.hook_out`` instead.
    """

    name: str
    architectures: tuple[str, ...]
    gated: bool
    hf_layers: str
    hf_down_proj: str
    hf_up_proj: str = "mlp.up_proj"
    hf_gate_proj: str | None = "mlp.gate_proj"
    linear_layout: Literal["out_in", "in_out"] = "out_in"
    post_ffn_norm: bool = False

    def activation_hook(self, layer: int) -> str:
        """TransformerLens hook name of the neuron activations (input of the down projection)."""
        return f"blocks.{layer}.mlp.hook_post"

    def output_hook(self, layer: int) -> str:
        """Hook name of the MLP output (output of the down projection, before any norm)."""
        return f"blocks.{layer}.mlp.hook_out"

    def w_out(self, down_proj: nn.Module) -> torch.Tensor:
        """The raw ``[d_mlp, d_model]`` output weights of one layer's down projection."""
        weight = _weight(down_proj)
        return weight.T if self.linear_layout == "out_in" else weight

    def w_in(self, in_proj: nn.Module) -> torch.Tensor:
        """The raw ``[d_mlp, d_model]`` input weights (rows are neurons) of an up or gate map."""
        weight = _weight(in_proj)
        return weight if self.linear_layout == "out_in" else weight.T

    def hf_layer_modules(self, hf_model: nn.Module) -> list[nn.Module]:
        """The decoder layers of a Hugging Face model of this family."""
        return list(_get_path(hf_model, self.hf_layers))

    def hf_down_proj_module(self, hf_model: nn.Module, layer: int) -> nn.Module:
        """The down projection of ``layer`` in a (bridge-free or bridged) Hugging Face model."""
        return _get_path(self.hf_layer_modules(hf_model)[layer], self.hf_down_proj)

    def hf_module(self, hf_model: nn.Module, layer: int, path: str) -> nn.Module:
        """The module at ``path`` inside decoder layer ``layer``."""
        return _get_path(self.hf_layer_modules(hf_model)[layer], path)


def _weight(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if weight is None:
        weight = module.original_component.weight  # a bridge component around the module
    return weight


def _get_path(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part)
    return module


_FAMILIES: dict[str, MLPFamily] = {}


def register_family(family: MLPFamily) -> MLPFamily:
    """Add a family to the registry (users can register their own architectures)."""
    for arch in family.architectures:
        _FAMILIES[arch] = family
    return family


_LLAMA_LIKE = dict(gated=True, hf_layers="model.layers", hf_down_proj="mlp.down_proj")

register_family(
    MLPFamily(
        "gpt2",
        ("GPT2LMHeadModel",),
        gated=False,
        hf_layers="transformer.h",
        hf_down_proj="mlp.c_proj",
        hf_up_proj="mlp.c_fc",
        hf_gate_proj=None,
        linear_layout="in_out",
    )
)
register_family(MLPFamily("llama", ("LlamaForCausalLM",), **_LLAMA_LIKE))
register_family(MLPFamily("mistral", ("MistralForCausalLM",), **_LLAMA_LIKE))
register_family(MLPFamily("qwen2", ("Qwen2ForCausalLM",), **_LLAMA_LIKE))
register_family(MLPFamily("qwen3", ("Qwen3ForCausalLM",), **_LLAMA_LIKE))
register_family(MLPFamily("gemma", ("GemmaForCausalLM",), **_LLAMA_LIKE))
register_family(MLPFamily("gemma2", ("Gemma2ForCausalLM",), post_ffn_norm=True, **_LLAMA_LIKE))
register_family(MLPFamily("gemma3", ("Gemma3ForCausalLM",), post_ffn_norm=True, **_LLAMA_LIKE))


def supported_architectures() -> list[str]:
    """The Hugging Face architecture class names hlens knows."""
    return sorted(_FAMILIES)


def family_for_architecture(architecture: str) -> MLPFamily:
    """Look up the family of a Hugging Face architecture class name.

    Raises:
        UnsupportedModelError: listing the supported architectures.
    """
    try:
        return _FAMILIES[architecture]
    except KeyError:
        raise UnsupportedModelError(
            f"hlens does not support the MLP family of {architecture!r}; supported architectures: "
            f"{', '.join(supported_architectures())}. Add one with hlens.register_family(...)."
        ) from None
