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


def test_plugin_actions_resolve_lazily_and_name_what_exists():
    """A plug-in's command reaches it through ``plugin_action`` (no import of the plug-in's
    package in ``hlens/cli``); an unknown action or kind says what is registered."""
    from hlens.organism.evaluate import record_greedy_answers
    from hlens.organism.train import train_organism
    from hlens.registry import plugin_action

    assert plugin_action("organism", "train") is train_organism
    assert plugin_action("organism", "record") is record_greedy_answers
    with pytest.raises(KeyError, match=r"no action 'fly' of kind 'organism'; registered: \['eval"):
        plugin_action("organism", "fly")
    with pytest.raises(KeyError, match=r"of kind 'real'; registered: \[\]"):
        plugin_action("real", "train")


@pytest.mark.organism
def test_organism_command_runs_through_the_plugin_point(tmp_path):
    """``hlens organism record`` end to end on the bundled organism (a few seconds)."""
    import json

    from hlens.cli import main

    assert (
        main(["organism", "record", "--model", "organism", "--out", str(tmp_path / "r.json")]) == 0
    )
    rec = json.loads((tmp_path / "r.json").read_text())
    assert len(rec["answers"]) == 200
