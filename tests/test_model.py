"""Loading: sources, errors, pad tokens, raw weights."""

from __future__ import annotations

import json

import pytest
import torch

import hlens
from tests.helpers import build_checkpoint, build_tokenizer


def test_loads_every_family_with_its_registry_entry(tiny_model, family):
    assert tiny_model.family.name == family
    assert tiny_model.n_layers == 2 and tiny_model.d_mlp == 48
    assert tiny_model.W_out(0).shape == (48, 32)
    assert tiny_model.W_out_norms().shape == (2, 48)


def test_w_out_is_the_raw_down_projection(tiny_model, checkpoint_dir, family):
    from safetensors.torch import load_file

    state = load_file(str(checkpoint_dir(family) / "model.safetensors"))
    key = next(
        k for k in state if k.endswith(tiny_model.family.hf_down_proj + ".weight") and ".0." in k
    )
    raw = state[key]
    expected = raw.T if tiny_model.family.linear_layout == "out_in" else raw
    torch.testing.assert_close(tiny_model.W_out(0), expected)


def test_load_from_bridge(llama):
    again = hlens.load(llama.bridge)
    assert again.bridge is llama.bridge


def test_missing_directory_says_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory at"):
        hlens.load(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        hlens.load(str(tmp_path))


def test_unknown_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="not a bundled model.*Hugging Face hub id failed"):
        hlens.load("no-such-org/no-such-model-xyz")


def test_unsupported_family_lists_supported(tmp_path, checkpoint_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(checkpoint_dir("llama"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FancyForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hlens.UnsupportedModelError, match="LlamaForCausalLM"):
        hlens.load(str(d))


def test_tokenizer_without_pad_token_is_handled(tmp_path):
    tok = build_tokenizer(pad_token=False)
    d = build_checkpoint("llama", tmp_path / "nopad", tokenizer=tok)
    model = hlens.load(str(d), device="cpu")
    assert model.tokenizer.pad_token is not None
    batch = model.tokenize(["a b", "a b c d e f"])
    assert batch.attention_mask.sum() < batch.attention_mask.numel()
    model.neuron_cache(batch)


def test_compatibility_mode_is_refused(tmp_path, checkpoint_dir):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(checkpoint_dir("llama")), device="cpu")
    bridge.enable_compatibility_mode()
    with pytest.raises(ValueError, match="compatibility mode"):
        hlens.load(bridge)


def test_input_weights_are_the_raw_up_and_gate_projections(tiny_model, checkpoint_dir, family):
    from safetensors.torch import load_file

    state = load_file(str(checkpoint_dir(family) / "model.safetensors"))
    fam = tiny_model.family

    def raw(path):
        key = next(k for k in state if k.endswith(f".1.{path}.weight"))
        return state[key] if fam.linear_layout == "out_in" else state[key].T

    torch.testing.assert_close(tiny_model.W_in(1), raw(fam.hf_up_proj))
    assert tiny_model.W_in(1).shape == (tiny_model.d_mlp, tiny_model.d_model)
    if fam.gated:
        torch.testing.assert_close(tiny_model.W_gate(1), raw(fam.hf_gate_proj))
    else:
        assert tiny_model.W_gate(1) is None
