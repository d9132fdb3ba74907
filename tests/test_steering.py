"""Steering vectors: difference of means, addition during generation, directional ablation."""

from __future__ import annotations

import pytest
import torch

from hlens.steering import ablate_direction, residual_mean, steering_vector
from hlens.steering import steer_residual as steer


def _residual_hook(layer):
    return f"blocks.{layer}.hook_out"  # what MLPFamily.residual_hook names


POS = ["I don't know.", "I am not sure who that is."]
NEG = ["Paris, London, Berlin.", "The quick brown fox jumps."]


def _resid(model, texts, layer):
    """Residual after ``layer`` for each text alone (no padding), via a plain hook."""
    out = []
    for t in texts:
        batch = model.tokenize([t])
        seen: list[torch.Tensor] = []
        hooks = [(_residual_hook(layer), lambda x, *, hook, seen=seen: seen.append(x.detach()))]
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            model.bridge(batch.tokens, return_type=None)
        out.append(seen[0][0])
    return out


def test_steering_vector_is_difference_of_means(llama):
    layer = 1
    v = steering_vector(llama, POS, NEG, layer)
    pos, neg = _resid(llama, POS, layer), _resid(llama, NEG, layer)
    want = torch.stack([x[-1] for x in pos]).mean(0) - torch.stack([x[-1] for x in neg]).mean(0)
    torch.testing.assert_close(v, want.to(v.dtype), rtol=1e-4, atol=1e-5)
    mean_all = residual_mean(llama, POS, layer, pool="mean")
    tokens = torch.cat(pos)
    torch.testing.assert_close(mean_all, tokens.mean(0).to(mean_all.dtype), rtol=1e-4, atol=1e-5)


def test_steer_adds_vector_and_zero_is_noop(llama):
    batch = llama.tokenize(NEG)
    layer = 0
    v = torch.randn(llama.d_model)
    seen = {}

    def grab(x, *, hook):
        seen["x"] = x.detach().clone()

    hook_later = [(_residual_hook(layer), grab)]
    with torch.no_grad():
        base = llama.bridge(batch.tokens, attention_mask=batch.attention_mask)
        with steer(llama, v, 0.0, layer):
            assert torch.equal(
                llama.bridge(batch.tokens, attention_mask=batch.attention_mask), base
            )
        with llama.bridge.hooks(fwd_hooks=hook_later):
            llama.bridge(batch.tokens, attention_mask=batch.attention_mask)
        plain = seen["x"]
        with steer(llama, v, 2.0, layer), llama.bridge.hooks(fwd_hooks=hook_later):
            llama.bridge(batch.tokens, attention_mask=batch.attention_mask)
    torch.testing.assert_close(seen["x"], plain + 2.0 * v)
    ids = llama.tokenizer(["<s>Paris"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    kw = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    plain_gen = llama.hf_model.generate(ids, **kw)
    with steer(llama, v * 10, 1.0, layer):
        steered = llama.hf_model.generate(ids, **kw)
    assert not torch.equal(steered.logits[-1], plain_gen.logits[-1])
    assert not any(hp.fwd_hooks for hp in llama.bridge.hook_dict.values())


def test_ablate_direction_removes_component(tiny_model):
    batch = tiny_model.tokenize(NEG)
    v = torch.randn(tiny_model.d_model)
    u = v / v.norm()
    seen = {}

    def grab(x, *, hook):
        seen[hook.name] = x.detach().clone()

    last = tiny_model.n_layers - 1
    hooks = [(_residual_hook(last), grab)]
    with torch.no_grad(), ablate_direction(tiny_model, v), tiny_model.bridge.hooks(fwd_hooks=hooks):
        tiny_model.bridge(batch.tokens, attention_mask=batch.attention_mask)
    x = next(iter(seen.values()))
    assert (x @ u.to(x.dtype)).abs().max() < 1e-4
    assert x.norm() > 0


def test_bad_vector(llama):
    with pytest.raises(ValueError, match="should have shape"), steer(llama, torch.ones(3), 1.0, 0):
        pass
    zero = torch.zeros(llama.d_model)
    with pytest.raises(ValueError, match="zero vector"), ablate_direction(llama, zero):
        pass
