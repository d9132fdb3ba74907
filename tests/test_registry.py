from __future__ import annotations

import pytest

import hlens
from hlens.registry import family_for_architecture


def test_registry_knows_the_paper_families():
    for arch in [
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "GPT2LMHeadModel",
    ]:
        assert arch in hlens.supported_architectures()
    assert family_for_architecture("Gemma2ForCausalLM").post_ffn_norm
    assert not family_for_architecture("GPT2LMHeadModel").gated


def test_unknown_architecture_lists_supported():
    with pytest.raises(
        hlens.UnsupportedModelError, match="supported architectures: .*LlamaForCausalLM"
    ):
        family_for_architecture("MambaForCausalLM")


def test_register_family():
    fam = hlens.MLPFamily(
        "mine",
        ("MineForCausalLM",),
        gated=True,
        hf_layers="model.layers",
        hf_down_proj="mlp.down_proj",
    )
    hlens.register_family(fam)
    assert family_for_architecture("MineForCausalLM") is fam
