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

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "PLUGINS",
    "KindPlugin",
    "MLPFamily",
    "UnsupportedModelError",
    "bundled_checkpoint",
    "bundled_names",
    "deprecated_alias",
    "family_for_architecture",
    "kind_of",
    "kind_plugin",
    "load_plugins",
    "plugin_action",
    "register_family",
    "register_kind",
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

    def residual_hook(self, layer: int) -> str:
        """Hook name of the residual stream after block ``layer``."""
        return f"blocks.{layer}.hook_out"

    def resid_pre_hook(self, layer: int) -> str:
        """Hook name of the residual stream entering block ``layer``."""
        return f"blocks.{layer}.hook_resid_pre"

    def head_hook(self, layer: int) -> str:
        """Hook name of the attention heads' outputs ``z`` (``[batch, pos, head, d_head]``)."""
        return f"blocks.{layer}.attn.hook_z"

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


# -- plug-ins: kinds of model that are not plain Hugging Face checkpoints -------------------------
#: Modules imported (once) the first time a registry is asked about plug-ins. Each registers what
#: it adds: a :class:`KindPlugin`, question sources, steering suites. This is the one place where
#: core hlens names a plug-in; the bundled model organism is the first.
PLUGINS: list[str] = ["hlens.organism.plugin"]

_LOADED: set[str] = set()


def load_plugins() -> None:
    """Import every module of :data:`PLUGINS` not imported yet (idempotent)."""
    for module in list(PLUGINS):
        if module not in _LOADED:
            _LOADED.add(module)
            importlib.import_module(module)


@dataclass(frozen=True)
class KindPlugin:
    """A kind of model with its own world, judge, suites and report-card inputs.

    Attributes:
        name: the kind (``"organism"``); every other model is ``"real"``.
        bundled: names ``hlens.load`` resolves to checkpoints shipped with the plug-in -> a
            function returning that checkpoint's directory.
        claims: whether a checkpoint directory is of this kind (e.g. a freshly trained one).
        cards: the inputs of ``hlens explain`` for this kind (an object with ``card_inputs``,
            ``evaluator`` and ``agreement``; see :class:`hlens.explain_run.CardProvider`).
        api: public names the plug-in lends to ``hlens`` (deprecated aliases, for one release).
        actions: what the kind's command (``hlens organism``) calls, by name -> ``"module:attr"``,
            imported only when asked (:func:`plugin_action`), so that building ``hlens``'s
            parser does not import the plug-in's training stack.
    """

    name: str
    bundled: dict[str, Callable[[str], Path]] = field(default_factory=dict)
    claims: Callable[[Path], bool] | None = None
    cards: Any = None
    api: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)


_KINDS: dict[str, KindPlugin] = {}


def register_kind(plugin: KindPlugin) -> KindPlugin:
    """Add (or replace) a kind of model."""
    _KINDS[plugin.name] = plugin
    return plugin


def kind_plugin(name: str) -> KindPlugin | None:
    """The registered plug-in of kind ``name``, or ``None`` (``"real"`` has none)."""
    load_plugins()
    return _KINDS.get(name)


def plugin_action(kind: str, action: str) -> Any:
    """The object a plug-in's command calls, e.g. ``plugin_action("organism", "train")``.

    Raises:
        KeyError: no plug-in of that kind, or it has no such action (the message lists them).
    """
    plugin = kind_plugin(kind)
    if plugin is None or action not in plugin.actions:
        have = sorted(plugin.actions) if plugin is not None else []
        raise KeyError(f"no action {action!r} of kind {kind!r}; registered: {have}")
    module, _, attr = plugin.actions[action].partition(":")
    return getattr(importlib.import_module(module), attr)


def bundled_names() -> list[str]:
    """Every model name shipped inside hlens's plug-ins (``"organism"``, ``"organism-base"``).

    Example:
        >>> bundled_names()
        ['organism', 'organism-base']
    """
    load_plugins()
    return [n for k in _KINDS.values() for n in k.bundled]


def bundled_checkpoint(name: str) -> tuple[str, Path] | None:
    """``(kind, checkpoint directory)`` of a bundled model name, else ``None``."""
    load_plugins()
    for kind in _KINDS.values():
        if name in kind.bundled:
            return kind.name, kind.bundled[name](name)
    return None


def kind_of(name: str) -> str:
    """The kind of the model loaded from ``name`` (a bundled name or a checkpoint directory):
    the plug-in that ships or claims it, else ``"real"``. :attr:`hlens.Model.kind` asks this.

    Example:
        >>> kind_of("organism"), kind_of("smollm2-135m-instruct")
        ('organism', 'real')
    """
    load_plugins()
    for plugin in _KINDS.values():
        if name in plugin.bundled:
            return plugin.name
        if plugin.claims is not None and name and plugin.claims(Path(name)):
            return plugin.name
    return "real"


def deprecated_alias(module: str, name: str) -> Any:
    """A public name of ``module`` that moved into a plug-in (``KindPlugin.api``): returned with
    a :class:`DeprecationWarning` naming its new place. Kept for one release.

    Raises:
        AttributeError: no plug-in lends ``name``.
    """
    load_plugins()
    for plugin in _KINDS.values():
        if name in plugin.api:
            obj = plugin.api[name]
            warnings.warn(
                f"{module}.{name} is deprecated; use {obj.__module__}.{name}",
                DeprecationWarning,
                stacklevel=3,
            )
            return obj
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
