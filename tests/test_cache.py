"""NeuronCache equals the Hugging Face down-projection input captured with plain torch hooks."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import hlens
from hlens.prompts import PromptFormat

EXAMPLES = [
    hlens.Example("Where was Ada Vell born?", "Ada Vell was born in Korin in 1947.", id="a"),
    hlens.Example("Who?", "Paris", id="b"),
    hlens.Example("Zoë Čapek moved where?", "To Zürich, naïve café 東京.", id="c"),
]


def reference_down_proj(path, family, token_lists):
    """Per-sequence (unpadded) inputs and outputs of every down projection, via torch hooks."""
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    out = []
    for ids in token_lists:
        caps = {}
        handles = [
            family.hf_down_proj_module(hf, layer).register_forward_hook(
                lambda m, i, o, layer=layer, caps=caps: caps.__setitem__(layer, (i[0][0], o[0]))
            )
            for layer in range(hf.config.num_hidden_layers)
        ]
        with torch.no_grad():
            hf(input_ids=torch.tensor([ids]))
        for h in handles:
            h.remove()
        out.append(caps)
    return out


@pytest.mark.parametrize("side", ["left", "right"])
def test_activations_match_hf_down_proj_input(tiny_model, checkpoint_dir, family, side):
    batch = tiny_model.tokenize(EXAMPLES, padding_side=side)
    cache = tiny_model.neuron_cache(batch)
    mask = batch.attention_mask.bool()
    token_lists = [batch.tokens[b][mask[b]].tolist() for b in range(len(batch))]
    refs = reference_down_proj(checkpoint_dir(family), tiny_model.family, token_lists)
    for b, caps in enumerate(refs):
        for layer in range(tiny_model.n_layers):
            z_ref, h_ref = caps[layer]
            torch.testing.assert_close(
                cache.activations[b][mask[b], layer], z_ref, atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                cache.mlp_out_norm[b][mask[b], layer], h_ref.norm(dim=-1), atol=1e-5, rtol=1e-5
            )
        # padded positions are excluded: zero, and marked by the attention mask
        assert cache.activations[b][~mask[b]].abs().sum() == 0
    assert mask.sum() < mask.numel()  # the batch really is padded


def test_cache_shapes_layers_and_batching(llama):
    full = llama.neuron_cache(EXAMPLES)
    sub = llama.neuron_cache(EXAMPLES, layers=[1], batch_size=1)
    assert full.activations.shape[2:] == (llama.n_layers, llama.d_mlp)
    assert sub.layers == (1,)
    torch.testing.assert_close(
        sub.activations[:, :, 0], full.activations[:, :, 1], atol=1e-6, rtol=1e-5
    )
    assert set(full.regions) == set(hlens.prompts.REGIONS)


def test_cache_from_text_and_tokens(llama):
    from_text = llama.neuron_cache("Paris is a city")
    from_tokens = llama.neuron_cache(from_text.tokens)
    torch.testing.assert_close(from_text.activations, from_tokens.activations)


def test_cache_rejects_bad_input(llama):
    with pytest.raises(ValueError, match="longer than the model's context of 64"):
        llama.neuron_cache(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        llama.neuron_cache("hi", layers=[7])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        llama.neuron_cache(
            torch.ones(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3, dtype=torch.long)
        )
    with pytest.raises(TypeError, match="integer"):
        llama.neuron_cache(torch.ones(1, 4))


def test_plain_template_without_chat(tiny_model):
    batch = tiny_model.tokenize(EXAMPLES[:1], PromptFormat(template="plain"))
    assert batch.regions["response"].any()
