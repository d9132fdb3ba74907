"""CETT equals the official script's computation; golden values pin it on a seeded model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import hlens
from hlens.contribution import aggregate_region, cett_from_parts

EXAMPLES = [
    hlens.Example("Where was Ada Vell born?", "Ada Vell was born in Korin.", id="a"),
    hlens.Example("Who?", "Paris", id="b"),
    hlens.Example("Zoë?", "Zürich, naïve café 東京.", id="c"),
]


def official_cett(path, family, ids, *, use_abs=True, use_mag=True, dtype=torch.float32):
    """The official approach: HF model, hooks on every down projection, batch size 1."""
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=dtype)
    hf.eval()
    acts, norms = [], []
    mods = [family.hf_down_proj_module(hf, i) for i in range(hf.config.num_hidden_layers)]

    def hook(module, inputs, output):
        acts.append(inputs[0][0])
        norms.append(output[0].norm(dim=-1, keepdim=True))

    handles = [m.register_forward_hook(hook) for m in mods]
    weight_norms = torch.stack([family.w_out(m).norm(dim=-1) for m in mods])  # [layer, d_mlp]
    with torch.no_grad():
        hf(input_ids=torch.tensor([ids]))
    for h in handles:
        h.remove()
    a = torch.stack(acts, 1)  # [pos, layer, d_mlp]
    n = torch.stack(norms, 1)  # [pos, layer, 1]
    if use_abs:
        a = a.abs()
    if use_mag:
        a = a * weight_norms
    return a / (n + 1e-8)


def assert_cett_close(got, ref):
    """1e-5 relative: elementwise rtol 1e-5, with an absolute floor of 1e-5 x the mean score.

    The floor is needed because a near-zero activation has no meaningful relative error: both
    forward passes run attention softmax in float32 (as Hugging Face's eager attention does), so
    ~1e-8 absolute noise is expected even in a float64 model.
    """
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().mean()))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("flags", [(True, True), (False, True), (True, False)])
def test_cett_matches_official_reference(tiny_model, checkpoint_dir, family, side, flags):
    """Padded batches on both sides against one-example-at-a-time runs, as the official script."""
    use_abs, use_mag = flags
    batch = tiny_model.tokenize(EXAMPLES, padding_side=side)
    scores = hlens.cett(tiny_model, batch, use_abs=use_abs, use_mag=use_mag)
    mask = batch.attention_mask.bool()
    for b in range(len(batch)):
        ids = batch.tokens[b][mask[b]].tolist()
        ref = official_cett(
            checkpoint_dir(family), tiny_model.family, ids, use_abs=use_abs, use_mag=use_mag
        )
        assert_cett_close(scores[b][mask[b]], ref)
        assert scores[b][~mask[b]].abs().sum() == 0
    assert not mask.all()
    if not use_abs:
        assert (scores < 0).any()


def test_cett_float64_left_padding(checkpoint_dir):
    """float64 + left padding: Hugging Face's eager attention yields NaN on all-pad query rows,
    which leaks into real tokens; hlens runs right-aligned and stays finite and exact."""
    model = hlens.load(checkpoint_dir("llama"), device="cpu", dtype=torch.float64)
    batch = model.tokenize(EXAMPLES, padding_side="left")
    scores = hlens.cett(model, batch)
    assert scores.dtype == torch.float64 and not scores.isnan().any()
    mask = batch.attention_mask.bool()
    for b in range(len(batch)):
        ids = batch.tokens[b][mask[b]].tolist()
        ref = official_cett(checkpoint_dir("llama"), model.family, ids, dtype=torch.float64)
        assert_cett_close(scores[b][mask[b]], ref)


def test_cett_golden_values(llama):
    """Pinned on the seeded tiny Llama (tests/helpers.py, seed 0); a change here is a change in
    what hlens computes and must be explained."""
    tokens = torch.tensor([[1, 40, 50, 60, 70]])
    s = hlens.cett(llama, tokens)
    got = [round(float(x), 5) for x in (s[0, 1, 0, 0], s[0, 4, 1, 7], s.sum())]
    assert got == pytest.approx(GOLDEN, rel=1e-4, abs=2e-5)


GOLDEN = [0.07156, 0.50217, 39.95061]


def test_cett_parts_and_aggregation():
    z = torch.tensor([[[-2.0, 1.0]], [[0.5, 0.5]]])  # [pos=2, layer=1, d_mlp=2]
    s = cett_from_parts(z, torch.tensor([[4.0], [1.0]]), torch.tensor([[1.0, 2.0]]), eps=0.0)
    assert s.tolist() == [[[0.5, 0.5]], [[0.5, 1.0]]]
    scores = s.unsqueeze(0)  # [batch=1, pos=2, layer, d_mlp]
    mean = aggregate_region(scores, torch.tensor([[True, True]]))
    mx = aggregate_region(scores, torch.tensor([[True, True]]), "max")
    assert mean.tolist() == [[[0.5, 0.75]]] and mx.tolist() == [[[0.5, 1.0]]]
    empty = aggregate_region(scores, torch.tensor([[False, False]]))
    assert torch.isnan(empty).all()
    with pytest.raises((ValueError, TypeError)):
        aggregate_region(scores, torch.tensor([[True]]))
