"""``hlens.load`` and ``hlens.Model``: a TransformerBridge with a neuron-level view.

``Model`` wraps a TransformerLens 4 ``TransformerBridge`` booted with raw Hugging Face numerics (not
compatibility mode, which centers writing weights and so changes ``W_out`` norms: CETT is defined on
raw weights). Family differences come from :mod:`hlens.registry`.

Example:
    >>> import hlens
    >>> model = hlens.load("organism")  # doctest: +SKIP
    >>> model.n_layers, model.d_mlp  # doctest: +SKIP
    (4, 512)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hlens import zoo
from hlens._compat import patch_bridge_kv_cache
from hlens.examples import Example
from hlens.gguf import DTYPES, gguf_checkpoint
from hlens.prompts import PromptFormat, TokenBatch, tokenize_examples
from hlens.registry import (
    MLPFamily,
    UnsupportedModelError,
    bundled_checkpoint,
    bundled_names,
    family_for_architecture,
    kind_of,
    supported_architectures,
)
from hlens.zoo import ModelNotInstalledError, get_known, install_command, known_models

__all__ = ["Model", "load"]


def _bridge_class() -> type:
    from transformer_lens.model_bridge import TransformerBridge

    patch_bridge_kv_cache()
    return TransformerBridge


def _known() -> set[str]:
    return set(supported_architectures())


def _resolve_local(source: str) -> Path | None:
    """A bundled name, a checkpoint directory, a ``.gguf`` file or a directory holding exactly one
    ``.gguf`` (returned as the file); ``None`` for what may be a hub id."""
    bundled = bundled_checkpoint(source)
    if bundled is not None:
        return bundled[1]
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            if path.suffix.lower() == ".gguf":
                return path
            raise ValueError(
                f"{source!r} is a file; expected a Hugging Face checkpoint directory or a .gguf "
                "file"
            )
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(ggufs) == 1:
            return ggufs[0]
        if len(ggufs) > 1:
            raise ValueError(
                f"{str(path.resolve())!r} holds {len(ggufs)} .gguf files "
                f"({', '.join(p.name for p in ggufs)}) and no config.json; pass the path of the "
                "one to load"
            )
        raise FileNotFoundError(
            f"{str(path.resolve())!r} has no config.json; expected a Hugging Face checkpoint "
            "directory (config.json, weights, tokenizer) or a directory with one .gguf file"
        )
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
        raise FileNotFoundError(
            f"no checkpoint directory at {str(path.resolve())!r} (tried it as a local path; it "
            f"does not look like a hub id either). Bundled models: {', '.join(bundled_names())}; "
            f"known models: {', '.join(_known_names())}"
        )
    return None


def _known_names() -> list[str]:
    return [m.name for m in known_models()]


def _gguf_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a GGUF is converted to: the requested one if a checkpoint can hold it, else
    float32 (the bridge then casts, e.g. to float64)."""
    return dtype if dtype in DTYPES.values() else torch.float32


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_family_from_config(path: Path) -> None:
    archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    if not archs:
        raise UnsupportedModelError(f"{path}/config.json names no architectures")
    family_for_architecture(archs[0])


def load(
    source: Any,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    **boot_kwargs: Any,
) -> Model:
    """Load a model for neuron-level analysis.

    Args:
        source: a bundled name (``"organism"``, ``"organism-base"``), a known real model
            (``"smollm2-135m-instruct"``, ``"gemma-3-270m"``: from its installed GGUF package,
            else its hub id; see :mod:`hlens.zoo`), a local Hugging Face checkpoint directory, a
            ``.gguf`` file or a directory with exactly one (converted once into hlens's cache,
            see :func:`hlens.gguf.gguf_checkpoint`), a Hugging Face hub id (needs network), or an
            already-booted ``TransformerBridge``.
        device: torch device (default: CUDA if available, else CPU). Mutually exclusive with
            ``device_map`` / ``n_devices`` in ``boot_kwargs``.
        dtype: parameter dtype (default float32; a GGUF is converted to float32, bfloat16 or
            float16 as asked, else to float32 and then cast).
        trust_remote_code: passed to Hugging Face; off unless you turn it on.
        **boot_kwargs: passed to ``TransformerBridge.boot_transformers`` (``device_map``,
            ``n_devices``, ``max_memory``, ``revision``, ``n_ctx``, ...).

    Raises:
        FileNotFoundError: a local path that does not exist or is not a checkpoint.
        UnsupportedModelError: the MLP family is not in the registry (lists supported ones).
        ValueError: a hub id that could not be loaded (says what was tried); a directory with
            several ``.gguf`` files (lists them); a corrupt or truncated ``.gguf``
            (:class:`hlens.gguf.GGUFError`); a known model that is neither installed nor reachable
            on the hub (:class:`hlens.zoo.ModelNotInstalledError`, gives the pip command).

    Example:
        >>> model = hlens.load("smollm2-135m-instruct")  # doctest: +SKIP
        >>> model.known.kind, model.n_layers, model.d_mlp  # doctest: +SKIP
        ('instruct', 30, 1536)
    """
    Bridge = _bridge_class()
    if isinstance(source, Bridge):
        return Model(source, name=getattr(source.cfg, "model_name", "bridge"))
    if isinstance(source, Path):
        source = str(source)
    if not isinstance(source, str):
        raise TypeError(
            f"hlens.load expects a model name, a checkpoint directory or a TransformerBridge, got "
            f"{type(source).__name__}"
        )

    known = get_known(source) if source not in bundled_names() else None
    if known is not None:
        local = zoo.locate_gguf(known)  # looked up at call time (tests replace the locator)
    else:
        local = _resolve_local(source)
    if local is not None and local.is_file():  # a .gguf: convert once, then boot from the cache
        local = gguf_checkpoint(local, dtype=_gguf_dtype(dtype))
    if local is not None:
        _check_family_from_config(local)
    if device is None and "device_map" not in boot_kwargs and "n_devices" not in boot_kwargs:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs: dict[str, Any] = dict(boot_kwargs, trust_remote_code=trust_remote_code)
    if device is not None:
        kwargs["device"] = device
    if dtype is not None:
        kwargs["dtype"] = dtype
    if local is not None:
        target = str(local)
    elif known is not None:
        target = known.hub_id
    else:
        target = source
    try:
        bridge = Bridge.boot_transformers(target, **kwargs)
    except Exception as e:  # hub errors come in many types
        if local is not None:
            raise
        if known is not None:
            raise ModelNotInstalledError(
                f"could not load {source!r}: its packages are not installed and loading its hub "
                f"id {known.hub_id!r} failed (offline, or not in the Hugging Face cache: "
                f"{type(e).__name__}: {_short(e)}). Install it to run offline: "
                f"{install_command(known)}"
            ) from e
        if isinstance(e, (UnsupportedModelError, FileNotFoundError)):
            raise
        raise ValueError(
            f"could not load {source!r}: it is not a bundled model "
            f"({', '.join(bundled_names())}) or a known one ({', '.join(_known_names())}), "
            f"not a local directory or .gguf file (checked {str(Path(source).resolve())!r}), "
            f"and loading it as a Hugging Face hub id failed: {type(e).__name__}: {_short(e)}"
        ) from e
    return Model(bridge, name=source, known=known)


class Model:
    """A ``TransformerBridge`` with the neuron-level view hlens needs.

    Attributes:
        bridge: the TransformerLens 4 ``TransformerBridge`` (raw Hugging Face numerics).
        tokenizer: its tokenizer (a pad token is set if it had none).
        family: the registry entry for this model's MLPs.
        name: where it was loaded from.
        known: the :class:`hlens.zoo.KnownModel` it was loaded as, or ``None``.
    """

    def __init__(self, bridge: Any, *, name: str = "model", known: Any = None) -> None:
        self.bridge = bridge
        self.name = name
        #: the :class:`hlens.zoo.KnownModel` this was loaded as (``hlens.load(name)``), else None
        self.known = known
        hf = bridge.original_model
        arch = type(hf).__name__
        if arch not in _known():
            arch = (getattr(hf.config, "architectures", None) or [arch])[0]
        self.family: MLPFamily = family_for_architecture(arch)
        if getattr(bridge, "compatibility_mode", False) or getattr(
            bridge.cfg, "compatibility_mode", False
        ):
            raise ValueError(
                "this bridge is in compatibility mode, which centers W_out; hlens needs raw "
                "weights. Boot a fresh bridge without enable_compatibility_mode()."
            )
        tok = bridge.tokenizer
        if tok.pad_token_id is None:
            for candidate in ("eos_token", "unk_token", "bos_token"):
                if getattr(tok, candidate, None) is not None:
                    tok.pad_token = getattr(tok, candidate)
                    break
        self.tokenizer = tok
        self._w_out_norms: Tensor | None = None

    @property
    def kind(self) -> str:
        """``"real"``, or the plug-in kind this model belongs to (``"organism"``); see
        :func:`hlens.registry.kind_of`."""
        return kind_of(self.name)

    # -- shape ----------------------------------------------------------------------------------
    @property
    def cfg(self) -> Any:
        return self.bridge.cfg

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model inside the bridge (its modules carry the bridge's hooks)."""
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def d_mlp(self) -> int:
        return int(self.cfg.d_mlp)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def n_ctx(self) -> int:
        return int(self.cfg.n_ctx)

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_mlp

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def score_dtype(self) -> torch.dtype:
        """dtype of cached activations and scores: float64 for a float64 model, else float32."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def __repr__(self) -> str:
        return (
            f"hlens.Model({self.name!r}, family={self.family.name}, n_layers={self.n_layers}, "
            f"d_mlp={self.d_mlp}, d_model={self.d_model})"
        )

    # -- weights --------------------------------------------------------------------------------
    def down_proj(self, layer: int) -> torch.nn.Module:
        """The down-projection module of ``layer`` (a bridge component around the HF module)."""
        self._check_layer(layer)
        return self.family.hf_down_proj_module(self.hf_model, layer)

    def W_out(self, layer: int) -> Float[Tensor, "d_mlp d_model"]:
        """Raw output weights of ``layer``'s neurons (rows are neurons)."""
        return self.family.w_out(self.down_proj(layer))

    def W_in(self, layer: int) -> Float[Tensor, "d_mlp d_model"]:
        """Raw input (up-projection) weights of ``layer``'s neurons (rows are neurons)."""
        self._check_layer(layer)
        fam = self.family
        return fam.w_in(fam.hf_module(self.hf_model, layer, fam.hf_up_proj))

    def W_gate(self, layer: int) -> Float[Tensor, "d_mlp d_model"] | None:
        """Raw gate weights of ``layer``'s neurons for a gated MLP, else ``None``."""
        self._check_layer(layer)
        fam = self.family
        if fam.hf_gate_proj is None:
            return None
        return fam.w_in(fam.hf_module(self.hf_model, layer, fam.hf_gate_proj))

    def W_out_norms(self) -> Float[Tensor, "layer d_mlp"]:
        """``||W_out[layer, j]||`` for every neuron, on raw weights (cached)."""
        if self._w_out_norms is None:
            with torch.no_grad():
                self._w_out_norms = torch.stack(
                    [
                        self.W_out(layer).to(self.score_dtype).norm(dim=-1)
                        for layer in range(self.n_layers)
                    ]
                )
        return self._w_out_norms

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range for a model with {self.n_layers} layers"
            )

    def check_layers(self, layers: Sequence[int] | None) -> tuple[int, ...]:
        """Validate a layer selection (``None`` means all layers)."""
        if layers is None:
            return tuple(range(self.n_layers))
        layers = tuple(int(x) for x in layers)
        for layer in layers:
            self._check_layer(layer)
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers has duplicates: {layers}")
        return layers

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(
        self,
        inputs: str | Sequence[str] | Sequence[Example] | Example,
        fmt: PromptFormat | None = None,
        *,
        padding_side: str | None = None,
    ) -> TokenBatch:
        """Tokenize text or examples into a :class:`~hlens.prompts.TokenBatch`.

        Strings are tokenized as they are (with the tokenizer's special tokens); examples are
        rendered with ``fmt`` and get region masks.
        """
        if isinstance(inputs, (str, Example)):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            raise ValueError("nothing to tokenize: got an empty list")
        if all(isinstance(x, Example) for x in inputs):
            batch = tokenize_examples(
                inputs, self.tokenizer, fmt, padding_side=padding_side, max_length=self.n_ctx
            )
        elif all(isinstance(x, str) for x in inputs):
            side = padding_side or self.tokenizer.padding_side
            old = self.tokenizer.padding_side
            self.tokenizer.padding_side = side
            try:
                enc = self.tokenizer(inputs, padding=True, return_tensors="pt")
            finally:
                self.tokenizer.padding_side = old
            batch = TokenBatch(enc["input_ids"], enc["attention_mask"], {}, [], side)
            self.check_length(batch.tokens)
        else:
            raise TypeError("tokenize expects strings or hlens.Example objects, not a mixture")
        return batch

    def check_length(self, tokens: Int[Tensor, "batch pos"]) -> None:
        """Raise if a sequence is longer than the model's context."""
        if tokens.shape[-1] > self.n_ctx:
            raise ValueError(
                f"sequence of {tokens.shape[-1]} tokens is longer than the model's context of "
                f"{self.n_ctx} tokens"
            )

    def as_batch(
        self,
        inputs: Any,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        fmt: PromptFormat | None = None,
    ) -> TokenBatch:
        """Coerce text, examples, a token tensor or a TokenBatch to a TokenBatch, on the CPU.

        Batches live on the CPU (the caches and masks built from them do too); each forward pass
        moves its tokens to the model's device.
        """
        if isinstance(inputs, TokenBatch):
            return inputs if inputs.tokens.device.type == "cpu" else inputs.to("cpu")
        if isinstance(inputs, Tensor):
            inputs = inputs.cpu()
            if attention_mask is not None:
                attention_mask = attention_mask.cpu()
            tokens = inputs if inputs.ndim == 2 else inputs.unsqueeze(0)
            if tokens.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
                raise TypeError(f"token ids must be an integer tensor, got {tokens.dtype}")
            self.check_length(tokens)
            if attention_mask is None:
                attention_mask = torch.ones_like(tokens)
            elif attention_mask.shape != tokens.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but tokens have "
                    f"shape {tuple(tokens.shape)}"
                )
            return TokenBatch(tokens.long(), attention_mask.long(), {}, [], "right")
        return self.tokenize(inputs, fmt)

    # -- activations ----------------------------------------------------------------------------
    def neuron_cache(
        self,
        inputs: Any,
        *,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        layers: Sequence[int] | None = None,
        batch_size: int | None = None,
        fmt: PromptFormat | None = None,
    ) -> Any:
        """Neuron activations and MLP-output norms for ``inputs``; see :class:`NeuronCache`."""
        from hlens.cache import neuron_cache  # here: cache -> cett -> model imports this module

        return neuron_cache(
            self,
            inputs,
            attention_mask=attention_mask,
            layers=layers,
            batch_size=batch_size,
            fmt=fmt,
        )


def __getattr__(name: str) -> Any:
    if name == "BUNDLED_MODELS":  # deprecated: the bundled names come from the plug-ins
        import warnings

        warnings.warn(
            "hlens.model.BUNDLED_MODELS is deprecated; use hlens.registry.bundled_names()",
            DeprecationWarning,
            stacklevel=2,
        )
        return tuple(bundled_names())
    raise AttributeError(f"module 'hlens.model' has no attribute {name!r}")
