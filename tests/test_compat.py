"""Cached decoding through the bridge equals full recomputation (guards hlens/_compat.py)."""

from __future__ import annotations

import torch


def test_kv_cache_decoding_matches_full_forward(tiny_model):
    ids = torch.tensor([[1, 50, 60, 70, 80, 90, 100]])
    with torch.no_grad():
        full = tiny_model.hf_model(input_ids=ids).logits[0, -3:]
        out = tiny_model.hf_model(input_ids=ids[:, :-2], use_cache=True)
        cache = out.past_key_values
        steps = [out.logits[0, -1]]
        for t in (-2, -1):
            out = tiny_model.hf_model(
                input_ids=ids[:, t:][:, :1], past_key_values=cache, use_cache=True
            )
            cache = out.past_key_values
            steps.append(out.logits[0, -1])
    torch.testing.assert_close(torch.stack(steps), full, atol=1e-4, rtol=1e-4)


def test_bridge_generate_greedy_matches_uncached(llama):
    ids = torch.tensor([[1, 50, 60, 70]])
    kw = dict(max_new_tokens=6, do_sample=False, verbose=False, stop_at_eos=False)
    cached = llama.bridge.generate(ids, use_past_kv_cache=True, **kw)
    uncached = llama.bridge.generate(ids, use_past_kv_cache=False, **kw)
    assert torch.equal(cached, uncached)
