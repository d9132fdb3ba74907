"""AtP, integrated gradients and DLA: exactness where the estimate must be exact, agreement with
exact patching on the tiny model, and DLA summing to what the model computes."""

from __future__ import annotations

import pytest
import torch

from hlens.attribution import (
    attribution_patching,
    direct_logit_attribution,
    integrated_gradients,
    neuron_vocab_logits,
)
from hlens.neurons import NeuronId, NeuronSet
from hlens.patching import ActivationMetric, exact_patching, logit_diff, neuron_activation

CLEAN = ["Where was Ada Vell born?", "The quick brown fox jumps"]
CORRUPT = ["Where is Ada Vell born?", "The lazy brown dog jumps"]
METRIC = logit_diff(5, 7)


def _linear_metric(model, layer: int) -> ActivationMetric:
    """MLP output of ``layer`` (before any post-norm) at the last token, dotted with a vector:
    linear in that layer's neuron activations."""
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))

    def fn(h, batch):
        last = batch.attention_mask.sum(1) - 1
        return h[torch.arange(h.shape[0]), last] @ v.to(h.dtype)

    return ActivationMetric(model.family.output_hook(layer), layer, fn)


@pytest.mark.parametrize("direction", ["clean_to_corrupt", "corrupt_to_clean"])
def test_atp_is_exact_for_a_metric_linear_in_the_patched_activation(tiny_model, direction):
    metric = _linear_metric(tiny_model, 1)
    ex = exact_patching(tiny_model, CLEAN, CORRUPT, metric, layers=[1], direction=direction)
    atp = attribution_patching(tiny_model, CLEAN, CORRUPT, metric, layers=[1], direction=direction)
    torch.testing.assert_close(atp.per_pair, ex.per_pair, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(atp.clean_metric, ex.clean_metric, atol=1e-5, rtol=1e-5)
    assert ex.per_pair.abs().max() > 1e-2  # not trivially zero


def test_atp_is_exact_when_the_metric_is_the_activation_itself(llama):
    metric = neuron_activation(llama, NeuronId(1, 7))
    ex = exact_patching(llama, CLEAN, CORRUPT, metric, layers=[1])
    atp = attribution_patching(llama, CLEAN, CORRUPT, metric, layers=[1])
    torch.testing.assert_close(atp.per_pair, ex.per_pair, atol=1e-5, rtol=1e-5)
    others = torch.ones(48, dtype=torch.bool)
    others[7] = False
    assert ex.per_pair[:, 0, others].abs().max() == 0  # same-layer neurons cannot move it
    assert ex.per_pair[:, 0, 7].abs().min() > 0


def test_atp_tracks_exact_patching_and_counts_its_passes(llama):
    ex = exact_patching(llama, CLEAN, CORRUPT, METRIC)
    atp = attribution_patching(llama, CLEAN, CORRUPT, METRIC, batch_size=1)
    r = torch.corrcoef(torch.stack([ex.per_pair.flatten(), atp.per_pair.flatten()]))[0, 1]
    assert r > 0.8, f"AtP vs exact Pearson r = {r:.3f} on the tiny Llama (was 0.89)"
    assert atp.meta["forward_rows"] == 4 and atp.meta["backward_rows"] == 2
    torch.testing.assert_close(atp.clean_metric, ex.clean_metric, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(atp.corrupt_metric, ex.corrupt_metric, atol=1e-5, rtol=1e-5)
    self_patch = attribution_patching(llama, CLEAN, CLEAN, METRIC, target="heads")
    assert self_patch.per_pair.abs().max() == 0


def test_integrated_gradients_sums_to_the_patch_it_integrates(llama):
    layer = NeuronSet.from_flat(range(48, 96), n_layers=2, d_mlp=48)
    whole = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="group", neurons=layer)
    ig = integrated_gradients(llama, CLEAN, CORRUPT, METRIC, layers=[1], steps=16)
    torch.testing.assert_close(ig.per_pair.sum((1, 2)), whole.per_pair[:, 0], atol=2e-3, rtol=0)
    small = NeuronSet.from_flat([3, 48 + 35], n_layers=2, d_mlp=48)
    ig_g = integrated_gradients(llama, CLEAN, CORRUPT, METRIC, target="group", neurons=small)
    ex_g = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="group", neurons=small)
    torch.testing.assert_close(ig_g.per_pair, ex_g.per_pair, atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(llama, CLEAN, CORRUPT, METRIC, steps=0)


def _capture(model, prompts, names):
    store = {}

    def grab(name):
        def h(t, *, hook):
            store[name] = t.detach()
            return t

        return h

    batch = model.as_batch(prompts)
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(n, grab(n)) for n in names]):
        logits = model.bridge(batch.tokens, return_type="logits")
    return store, logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "gemma3"])
def test_dla_sums_to_each_layers_direct_effect_and_to_the_logits(checkpoint_dir, family):
    import hlens

    model = hlens.load(checkpoint_dir(family), device="cpu")
    prompts = ["Where was Ada Vell born?", "The quick brown fox jumps"]  # 9 and 15 tokens
    good, bad = torch.tensor([5, 9]), torch.tensor([7, 7])
    dla = direct_logit_attribution(model, prompts, good, bad)
    assert dla.shape == (2, 2, model.d_mlp)
    names = ["ln_final.hook_in"] + [
        f"blocks.{la}.hook_resid_{w}" for la in range(2) for w in ("mid", "post")
    ]
    store, logits = _capture(model, [prompts[0]], names)
    x = store["ln_final.hook_in"][0, -1].double()
    w_u = model.hf_model.get_output_embeddings().weight.detach().double()
    d = w_u[5] - w_u[7]
    norm = model.bridge.ln_final.original_component
    eps = getattr(norm, "variance_epsilon", None) or norm.eps
    if isinstance(norm, torch.nn.LayerNorm):
        std = torch.sqrt(x.var(unbiased=False) + eps)
        w = norm.weight.detach().double()
        x_hat = (x - x.mean()) / std

        def frozen(v):
            return (v - v.mean()) / std * w
    else:
        rms = torch.sqrt(x.pow(2).mean() + eps)
        w = norm(torch.ones(1, model.d_model))[0].detach().double() * (1 + eps) ** 0.5
        x_hat = x / rms

        def frozen(v):
            return v / rms * w

    # The frozen-scale final norm reproduces the model's logit difference (bias cancels here).
    raw = logits[0, -1].double()
    cap = getattr(model.hf_model.config, "final_logit_softcapping", None)
    if cap:
        raw = cap * torch.atanh(raw / cap)
    bias = getattr(model.hf_model.get_output_embeddings(), "bias", None)
    b = 0.0 if bias is None else float(bias[5] - bias[7])
    torch.testing.assert_close((x_hat * w) @ d + b, raw[5] - raw[7], atol=1e-3, rtol=1e-3)
    for la in range(2):
        direct = (
            store[f"blocks.{la}.hook_resid_post"][0, -1]
            - store[f"blocks.{la}.hook_resid_mid"][0, -1]
        )
        direct = direct.double()
        if model.family.name == "gpt2":  # the down projection's bias is no neuron's
            direct = direct - model.down_proj(la).original_component.bias.double()
        torch.testing.assert_close(
            dla[0, la].sum().double(), frozen(direct) @ d, atol=1e-3, rtol=1e-3
        )


def test_vocab_projection_is_w_out_through_the_norm_weight_onto_w_u(llama):
    s = NeuronSet.from_flat([3, 60], n_layers=2, d_mlp=48)
    logits = neuron_vocab_logits(llama, s)
    assert logits.shape == (2, llama.hf_model.get_output_embeddings().weight.shape[0])
    w = llama.bridge.ln_final.original_component.weight.detach()
    w_u = llama.hf_model.get_output_embeddings().weight.detach()
    want = w_u @ (llama.W_out(1)[12].detach() * w)
    torch.testing.assert_close(logits[1], want, atol=1e-4, rtol=1e-4)
