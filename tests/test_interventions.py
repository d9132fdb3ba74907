"""Neuron interventions: scaling, ablation and the weight-edit form on tiny random checkpoints."""

from __future__ import annotations

import pytest
import torch

import hlens
from hlens.interventions import ablate_neurons, neuron_means, scale_neurons
from hlens.sampling import SamplingConfig, sample_responses

TEXTS = ["Where was Ada Vell born?", "The quick brown fox jumps over the lazy dog."]


def _neurons(model) -> hlens.NeuronSet:
    return hlens.NeuronSet.from_flat(
        [1, 7, 20, model.d_mlp + 3, model.d_mlp + 30], n_layers=model.n_layers, d_mlp=model.d_mlp
    )


def _logits(model, batch):
    with torch.no_grad():
        return model.bridge(batch.tokens, attention_mask=batch.attention_mask)


def _hook_state(model) -> tuple:
    """Every hook registered on the bridge's hook points and the HF modules (ids of handles)."""
    points = tuple(
        (n, len(hp.fwd_hooks), len(hp._forward_hooks)) for n, hp in model.bridge.hook_dict.items()
    )
    modules = tuple(
        (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for m in model.hf_model.modules()
    )
    return points, modules


_CLEAN: dict[int, tuple] = {}


def _no_hooks(model) -> bool:
    """No hook point has a hook and the HF modules have only the hooks they had at load."""
    points, _ = _hook_state(model)
    if any(a or b for _, a, b in points):
        return False
    if id(model) not in _CLEAN:  # the bridge adds its own HF hooks on its first forward pass
        _logits(model, model.tokenize(TEXTS))
        _CLEAN[id(model)] = _hook_state(model)[1]
    return _CLEAN[id(model)] == _hook_state(model)[1]


def test_alpha_one_is_bit_identical(tiny_model):
    assert _no_hooks(tiny_model)
    batch = tiny_model.tokenize(TEXTS)
    base = _logits(tiny_model, batch)
    with scale_neurons(tiny_model, _neurons(tiny_model), 1.0):
        assert torch.equal(_logits(tiny_model, batch), base)
    assert _no_hooks(tiny_model)


def test_hook_and_weight_forms_agree(tiny_model):
    batch = tiny_model.tokenize(TEXTS)
    base = _logits(tiny_model, batch)
    ns = _neurons(tiny_model)
    for alpha, exact in ((2.0, True), (0.0, True), (1.7, False)):
        with scale_neurons(tiny_model, ns, alpha):
            hooked = _logits(tiny_model, batch)
        with scale_neurons(tiny_model, ns, alpha, implementation="weights"):
            weighted = _logits(tiny_model, batch)
        assert not torch.equal(hooked, base)
        if exact:  # powers of two and zero scale without rounding
            assert torch.equal(hooked, weighted)
        else:
            torch.testing.assert_close(hooked, weighted, rtol=1e-5, atol=1e-5)
    assert torch.equal(_logits(tiny_model, batch), base)


def test_only_affected_layers_get_hooks(llama):
    only_l1 = {1: [0, 5]}
    with scale_neurons(llama, only_l1, 3.0):
        hooked = [n for n, hp in llama.bridge.hook_dict.items() if hp.fwd_hooks]
    assert hooked == ["blocks.1.mlp.hook_post"] or set(hooked) <= {
        "blocks.1.mlp.hook_post",
        "blocks.1.mlp.out.hook_in",
    }
    assert len({id(llama.bridge.hook_dict[n]) for n in hooked}) == 1


def test_alpha_zero_equals_zero_ablation(llama):
    batch = llama.tokenize(TEXTS)
    ns = _neurons(llama)
    with scale_neurons(llama, ns, 0.0):
        scaled = _logits(llama, batch)
    with ablate_neurons(llama, ns, "zero"):
        ablated = _logits(llama, batch)
    assert torch.equal(scaled, ablated)


def test_nested_contexts_compose(llama):
    batch = llama.tokenize(TEXTS)
    ns = _neurons(llama)
    with scale_neurons(llama, ns, 2.0), scale_neurons(llama, ns, 1.5):
        nested = _logits(llama, batch)
    with scale_neurons(llama, ns, 3.0):
        once = _logits(llama, batch)
    torch.testing.assert_close(nested, once, rtol=1e-6, atol=1e-6)
    with scale_neurons(llama, ns, 2.0), scale_neurons(llama, ns, 1.5, implementation="weights"):
        mixed = _logits(llama, batch)
    torch.testing.assert_close(mixed, once, rtol=1e-5, atol=1e-5)
    assert _no_hooks(llama)


def test_mean_ablation_uses_reference_mean(llama):
    ns = _neurons(llama)
    reference = llama.tokenize(["Paris, London, Berlin.", "I don't know."])
    means = neuron_means(llama, ns, reference)
    cache = llama.neuron_cache(reference)
    mask = reference.attention_mask.bool()
    for layer, idx in ns.by_layer().items():
        expected = cache.activations[:, :, layer][mask].mean(0)[idx]
        torch.testing.assert_close(means[layer][idx], expected, rtol=1e-5, atol=1e-6)
    seen = {}

    def grab(z, *, hook):
        seen[hook.name] = z.detach().clone()

    batch = llama.tokenize(TEXTS)
    with ablate_neurons(llama, ns, "mean", reference=reference):
        hook_names = [llama.family.activation_hook(layer) for layer in (0, 1)]
        with llama.bridge.hooks(fwd_hooks=[(n, grab) for n in hook_names]):
            _logits(llama, batch)
    for layer, idx in ns.by_layer().items():
        z = next(v for k, v in seen.items() if k.startswith(f"blocks.{layer}."))
        want = means[layer][idx].to(z.dtype).expand_as(z[..., idx])
        torch.testing.assert_close(z[..., idx], want)


def test_hooks_removed_and_weights_restored_after_exception(llama):
    ns = _neurons(llama)
    before = [llama.W_out(layer).clone() for layer in range(llama.n_layers)]
    for kwargs in ({}, {"implementation": "weights"}, {"positions": [0, 2]}):
        with pytest.raises(RuntimeError, match="boom"), scale_neurons(llama, ns, 2.5, **kwargs):
            _logits(llama, llama.tokenize(TEXTS))
            raise RuntimeError("boom")
        assert _no_hooks(llama)
    for layer in range(llama.n_layers):
        assert torch.equal(llama.W_out(layer), before[layer])
    with pytest.raises(RuntimeError), ablate_neurons(llama, ns, "mean", reference=TEXTS):
        raise RuntimeError("boom")
    assert _no_hooks(llama)


def test_positions(llama):
    batch = llama.tokenize(["Where was Ada Vell born in 1947?"])
    base = _logits(llama, batch)
    n = batch.tokens.shape[1]
    ns = _neurons(llama)
    with scale_neurons(llama, ns, 4.0, positions="last"):
        last = _logits(llama, batch)
    assert torch.equal(last[:, :-1], base[:, :-1]) and not torch.equal(last[:, -1], base[:, -1])
    mask = torch.zeros(n, dtype=torch.bool)
    mask[3:] = True
    with scale_neurons(llama, ns, 4.0, positions=slice(3, None)):
        sliced = _logits(llama, batch)
    with scale_neurons(llama, ns, 4.0, positions=mask):
        masked = _logits(llama, batch)
    with scale_neurons(llama, ns, 4.0, positions=list(range(3, n))):
        listed = _logits(llama, batch)
    assert torch.equal(sliced[:, :3], base[:, :3]) and not torch.equal(sliced, base)
    assert torch.equal(sliced, masked) and torch.equal(sliced, listed)
    with pytest.raises(ValueError, match="positions"), scale_neurons(llama, ns, 2.0, positions="x"):
        pass
    weights_last = scale_neurons(llama, ns, 2.0, implementation="weights", positions="last")
    with pytest.raises(ValueError, match="weights"), weights_last:
        pass


def test_generation_alpha_one_and_absolute_positions(llama):
    cfg = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=6, seed=0, batch_size=8)
    prompts = [llama.tokenizer.bos_token + t for t in TEXTS]
    ids = ["a", "b"]
    base = sample_responses(llama.hf_model, llama.tokenizer, prompts, ids, cfg, progress=False)
    ns = _neurons(llama)
    with scale_neurons(llama, ns, 1.0):
        same = sample_responses(llama.hf_model, llama.tokenizer, prompts, ids, cfg, progress=False)
    assert same == base
    with scale_neurons(llama, ns, 8.0):
        changed = sample_responses(
            llama.hf_model, llama.tokenizer, prompts, ids, cfg, progress=False
        )
    assert changed != base
    # HF generate: scaling only positions past the prompt leaves the first step's logits alone
    ids_t = llama.tokenizer(prompts[:1], return_tensors="pt", add_special_tokens=False)["input_ids"]
    n = ids_t.shape[1]
    kw = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    plain = llama.hf_model.generate(ids_t, **kw)
    with scale_neurons(llama, ns, 8.0, positions=slice(n, None)):
        late = llama.hf_model.generate(ids_t, **kw)
    assert torch.equal(late.logits[0], plain.logits[0])
    assert not all(torch.equal(a, b) for a, b in zip(late.logits[1:], plain.logits[1:]))
    assert _no_hooks(llama)


def test_bad_neurons(llama):
    other = hlens.NeuronSet.from_flat([0], n_layers=llama.n_layers + 1, d_mlp=llama.d_mlp)
    with pytest.raises(ValueError, match="n_layers"), scale_neurons(llama, other, 2.0):
        pass
    with pytest.raises(ValueError, match="outside"), scale_neurons(llama, {0: [10_000]}, 2.0):
        pass
