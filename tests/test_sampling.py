"""Tests of hlens.sampling: determinism, batch invariance, greedy correctness, the JSONL store."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hlens.organism.tokenizer import build_tokenizer
from hlens.organism.world import World, WorldConfig
from hlens.sampling import SamplingConfig, read_jsonl, row_seed, sample_responses, sample_to_jsonl


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(World(WorldConfig(people_per_level=4, n_idk=2, n_nonexist=2)))


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharpen the distribution; no special tokens but a rare EOS
        m.lm_head.weight.mul_(8)
        for t in range(len(tok.all_special_ids) + 1):
            m.lm_head.weight[t] = 0.0
        m.lm_head.bias = None
        m.lm_head.weight[tok.eos_token_id] = m.lm_head.weight[100] * 0.9
    return m


PROMPTS = [
    "<s>Where was Ada born?",
    "<s>The birthplace of",
    "<s>Question: x\nAnswer:",
    "<s>a",
    "<s>Which college did Zo Vel attend? Respond with the answer only.",
]
IDS = [f"q{i}" for i in range(len(PROMPTS))]


def test_config_validation_and_roundtrip():
    cfg = SamplingConfig(n_samples=3, temperature=0.7, seed=5)
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (
        {"n_samples": 0},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"max_new_tokens": 0},
        {"batch_size": 0},
    ):
        with pytest.raises(ValueError, match="got"):
            SamplingConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"n_sample": 3})


def test_row_seed_stable():
    assert row_seed(0, "a", 1) == row_seed(0, "a", 1)
    assert (
        len({row_seed(0, "a", 1), row_seed(0, "a", 2), row_seed(1, "a", 1), row_seed(0, "b", 1)})
        == 4
    )


def test_batch_invariance_and_seed(model, tok):
    cfg = SamplingConfig(n_samples=4, temperature=1.0, max_new_tokens=8, seed=3, batch_size=64)
    big = sample_responses(model, tok, PROMPTS, IDS, cfg, progress=False)
    small = sample_responses(
        model,
        tok,
        PROMPTS,
        IDS,
        SamplingConfig.from_dict({**cfg.to_dict(), "batch_size": 3}),
        progress=False,
    )
    assert big == small
    # a question's samples do not depend on which other questions are in the run
    alone = sample_responses(model, tok, PROMPTS[2:3], IDS[2:3], cfg, progress=False)
    assert alone[0] == big[2]
    assert len(big) == len(PROMPTS) and all(len(r) == 4 for r in big)
    other = sample_responses(
        model,
        tok,
        PROMPTS,
        IDS,
        SamplingConfig.from_dict({**cfg.to_dict(), "seed": 4}),
        progress=False,
    )
    assert other != big
    assert len({r for rs in big for r in rs}) > 3  # samples differ from each other


def test_greedy_matches_unbatched_generate(model, tok):
    cfg = SamplingConfig(n_samples=2, temperature=0.0, max_new_tokens=6, batch_size=8)
    out = sample_responses(model, tok, PROMPTS, IDS, cfg, progress=False)
    for prompt, rs in zip(PROMPTS, out):
        assert rs[0] == rs[1]
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = model.generate(
            ids,
            do_sample=False,
            max_new_tokens=6,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :]
        ref = ref.tolist()
        ref = ref[: ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
        want = tok.decode(ref, skip_special_tokens=True).strip()
        assert rs[0] == want


def test_eos_stops_and_truncation_flags(model, tok):
    cfg = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=3)
    _, trunc = sample_responses(
        model, tok, PROMPTS, IDS, cfg, progress=False, return_truncated=True
    )
    assert any(t for ts in trunc for t in ts)

    class AlwaysEos(torch.nn.Module):  # empty responses, never truncated
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids,
            attention_mask=None,
            position_ids=None,
            cache=None,
            use_cache=True,
            logits_to_keep=0,
        ):
            out = self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
            )
            logits = torch.full_like(out.logits, -1e4)
            logits[..., tok.eos_token_id] = 0.0
            out.logits = logits
            return out

    eos_model = AlwaysEos(model)
    out, trunc = sample_responses(
        eos_model,
        tok,
        PROMPTS,
        IDS,
        SamplingConfig(n_samples=2, temperature=1.0),
        progress=False,
        return_truncated=True,
    )
    assert out == [["", ""]] * len(PROMPTS) and trunc == [[False, False]] * len(PROMPTS)


def test_bad_inputs(model, tok):
    with pytest.raises(ValueError, match="ids"):
        sample_responses(model, tok, PROMPTS, IDS[:2], SamplingConfig(), progress=False)
    with pytest.raises(ValueError, match="unique"):
        sample_responses(model, tok, PROMPTS[:2], ["a", "a"], SamplingConfig(), progress=False)


def test_jsonl_resume(model, tok, tmp_path):
    path = tmp_path / "s.jsonl"
    cfg = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=5, batch_size=4)
    first = sample_to_jsonl(path, model, tok, PROMPTS[:2], IDS[:2], cfg, progress=False)
    assert [r["id"] for r in first] == IDS[:2]
    # a torn last line from an interrupted write is dropped and redone
    with path.open("a") as f:
        f.write('{"id": "q2", "respo')
    full = sample_to_jsonl(path, model, tok, PROMPTS, IDS, cfg, progress=False)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [rec["id"] for rec in lines] == IDS  # finished ids were not redone
    assert full[:2] == first
    assert all(len(r["responses"]) == 2 and len(r["truncated"]) == 2 for r in full)
    assert read_jsonl(path)["q3"] == full[3]
    direct = sample_responses(model, tok, PROMPTS, IDS, cfg, progress=False)
    assert [r["responses"] for r in full] == direct
    # rerun is a no-op
    sample_to_jsonl(path, model, tok, PROMPTS, IDS, cfg, progress=False)
    assert len(path.read_text().splitlines()) == len(IDS)
    with pytest.raises(ValueError, match="config"):
        sample_to_jsonl(
            path,
            model,
            tok,
            PROMPTS,
            IDS,
            SamplingConfig.from_dict({**cfg.to_dict(), "seed": 9}),
            progress=False,
        )
