"""Tests of hlens.sampling: determinism, batch invariance, greedy correctness, the JSONL store."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hlens.sampling as S
from hlens.organism.tokenizer import build_tokenizer
from hlens.organism.world import World, WorldConfig
from hlens.sampling import SamplingConfig, read_jsonl, row_seed, sample_responses, sample_to_jsonl
from tests.helpers import reference_choose


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(World(WorldConfig(people_per_level=4, n_idk=2, n_nonexist=2)))


def _tiny_llama(tok, heads: int = 2, attn: str | None = None):
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    if attn is not None:
        cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def _likely_eos(m, tok):
    """Sharpen ``m`` and make its EOS likely, so that rows finish at different steps."""
    with torch.no_grad():
        m.lm_head.weight.mul_(4)
        for t in range(len(tok.all_special_ids) + 1):
            m.lm_head.weight[t] = 0.0
        m.lm_head.weight[tok.eos_token_id] = m.lm_head.weight[100:110].mean(0) * 6
    return m


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = _tiny_llama(tok)
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
        {"noise": "philox"},
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


@pytest.mark.parametrize("noise", S.NOISE)
def test_batch_invariance_and_seed(model, tok, noise):
    cfg = SamplingConfig(
        n_samples=4, temperature=1.0, max_new_tokens=8, seed=3, batch_size=64, noise=noise
    )
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
    ids_in_file = [rec["id"] for rec in lines]
    assert ids_in_file[:2] == IDS[:2] and sorted(ids_in_file) == IDS  # finished ids not redone
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


# -- the sampler before its speed-ups (batching by length, shared prefix, pruning finished rows),
# kept here as the reference its outputs must equal ------------------------------------------------
@torch.no_grad()
def _reference_generate(model, prompt_ids, repeats, seeds, cfg, eos_id, pad_id):
    device = next(model.parameters()).device
    n_prompts, width = len(prompt_ids), max(len(p) for p in prompt_ids)
    input_ids = torch.full((n_prompts, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n_prompts, width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p) :] = 1
    input_ids = input_ids.repeat_interleave(repeats, dim=0)
    attn = attn.repeat_interleave(repeats, dim=0)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=True)
    past, logits = S._cache_of(out), out.logits[:, -1, :].float()
    n = n_prompts * repeats
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    generated, finished = [[] for _ in range(n)], [False] * n
    for step in range(cfg.max_new_tokens):
        tokens = reference_choose(logits, gens, cfg).tolist()
        for i, t in enumerate(tokens):
            if finished[i]:
                continue
            if t == eos_id:
                finished[i] = True
            else:
                generated[i].append(t)
        if all(finished) or step == cfg.max_new_tokens - 1:
            break
        nxt = torch.tensor([eos_id if f else t for f, t in zip(finished, tokens)], device=device)
        attn = torch.cat([attn, attn.new_ones((n, 1))], dim=1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            **{S._forward_kwargs(model)[0]: past},
        )
        past, logits = S._cache_of(out), out.logits[:, -1, :].float()
    return generated, [not f for f in finished]


def _reference(model, tok, prompts, ids, cfg):
    """(token ids, truncated) per question and sample, one question at a time, in order."""
    rows = 1 if cfg.greedy else cfg.n_samples
    out = []
    for p, q in zip(prompts, ids):
        enc = tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else list(p)
        seeds = [row_seed(cfg.seed, q, k) for k in range(rows)]
        gen, trunc = _reference_generate(
            model, [enc], rows, seeds, cfg, tok.eos_token_id, tok.pad_token_id
        )
        out.append(list(zip(map(tuple, gen), trunc)))
    return out


def _ids_of(model, tok, prompts, ids, cfg, monkeypatch):
    """What the package's sampler generates, as token ids, in the order of ``prompts``."""
    seen = {}
    real = S._generate

    def spy(model, prompt_ids, repeats, seeds, *a, **k):
        gen, trunc = real(model, prompt_ids, repeats, seeds, *a, **k)
        for j, p in enumerate(prompt_ids):
            seen[tuple(p)] = list(
                zip(map(tuple, gen[j * repeats : (j + 1) * repeats]), trunc[j * repeats :])
            )
        return gen, trunc

    monkeypatch.setattr(S, "_generate", spy)
    sample_responses(model, tok, prompts, ids, cfg, progress=False)
    monkeypatch.setattr(S, "_generate", real)
    keys = [
        tuple(tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else p)
        for p in prompts
    ]
    return [seen[k] for k in keys]


#: chat-like prompts with a common scaffold (more than ``_MIN_PREFIX`` tokens) and varied lengths
CHAT = [
    "<s><|user|> Question: Where was Ada born? Respond with the answer only.<|assistant|>",
    "<s><|user|> Question: a<|assistant|>",
    "<s><|user|> Question: Which college did Zo Vel attend, and in which year did she leave?"
    "<|assistant|>",
    "<s><|user|> Question: The birthplace of Korin<|assistant|>",
    "<s><|user|> Question: x y z<|assistant|>",
    "<s><|user|> Question: When?<|assistant|>",
    "<s><|user|> Question: Where was Ada Vell born?<|assistant|>",
]
CHAT_IDS = [f"c{i}" for i in range(len(CHAT))]


@pytest.fixture(scope="module")
def eos_model(tok):
    """The fixture model with a likelier EOS, so that rows finish at different steps."""
    torch.manual_seed(1)
    return _likely_eos(_tiny_llama(tok), tok)


def _equal_to_reference(model, tok, temperature, batch_size, monkeypatch):
    """hlens's token ids on the chat and plain prompts equal the reference decoder's."""
    prompts, ids = CHAT + PROMPTS, CHAT_IDS + IDS
    cfg = SamplingConfig(
        n_samples=3, temperature=temperature, max_new_tokens=12, seed=2, batch_size=batch_size
    )
    want = _reference(model, tok, prompts, ids, cfg)
    assert _ids_of(model, tok, prompts, ids, cfg, monkeypatch) == want
    return want


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("batch_size", [2, 64])
def test_token_ids_equal_the_reference_decoder(
    eos_model, tok, monkeypatch, temperature, batch_size
):
    want = _equal_to_reference(eos_model, tok, temperature, batch_size, monkeypatch)
    lengths = {len(g) for rows in want for g, _ in rows}
    assert len(lengths) > 3  # rows finished at different steps: pruning was exercised
    assert any(t for rows in want for _, t in rows) and not all(t for rows in want for _, t in rows)


def test_prefix_reuse_equals_no_reuse(eos_model, tok, monkeypatch):
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in CHAT]
    prefix = S._Prefix(eos_model, enc, {})
    assert len(prefix.ids) >= S._MIN_PREFIX and prefix.cache is not None
    for temperature in (0.0, 1.0):
        cfg = SamplingConfig(n_samples=3, temperature=temperature, max_new_tokens=10, seed=1)
        shared = sample_responses(eos_model, tok, CHAT, CHAT_IDS, cfg, progress=False)
        monkeypatch.setattr(S, "_MIN_PREFIX", 10**9)
        assert S._Prefix(eos_model, enc, {}).cache is None
        alone = sample_responses(eos_model, tok, CHAT, CHAT_IDS, cfg, progress=False)
        monkeypatch.undo()
        assert shared == alone


def test_token_id_prompts(model, tok):
    cfg = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=6, seed=0)
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    as_text = sample_responses(model, tok, PROMPTS, IDS, cfg, progress=False)
    as_ids = sample_responses(model, tok, enc, IDS, cfg, progress=False)
    mixed = [torch.tensor(enc[0]), *PROMPTS[1:3], tuple(enc[3]), enc[4]]
    assert as_ids == as_text == sample_responses(model, tok, mixed, IDS, cfg, progress=False)
    # ids are used as they are: an extra leading token changes the prompt
    other = sample_responses(model, tok, [[5, *e] for e in enc], IDS, cfg, progress=False)
    assert other != as_text
    with pytest.raises(ValueError, match="empty"):
        sample_responses(model, tok, [[], enc[0]], IDS[:2], cfg, progress=False)


class _Scripted(torch.nn.Module):
    """A model that writes ``script`` (token ids) whatever the prompt; EOS after it."""

    def __init__(self, inner, script, eos):
        super().__init__()
        self.inner, self.script, self.eos, self.calls = inner, script, eos, 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
        out = self.inner(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kw
        )
        step = attention_mask.shape[1] - self.width if input_ids.shape[1] == 1 else 0
        if input_ids.shape[1] > 1:
            self.width = attention_mask.shape[1]
        t = self.script[step] if step < len(self.script) else self.eos
        logits = torch.full_like(out.logits, -1e4)
        logits[..., t] = 0.0
        out.logits = logits
        return out


def test_stop_at_newline():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import build_tokenizer

    btok = build_tokenizer()
    nl = btok("\n", add_special_tokens=False)["input_ids"]
    assert len(nl) == 1 and "\n" in btok.decode(nl)
    script = btok(" Paris", add_special_tokens=False)["input_ids"] + nl
    script += btok("Q: next", add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    inner = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(btok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=128,
        )
    ).eval()
    m = _Scripted(inner, script, btok.eos_token_id)
    prompts = ["Q: Where was Ada born?\nA:", "Q: a\nA:"]
    base = dict(n_samples=1, temperature=0.0, max_new_tokens=20)
    out, trunc = sample_responses(
        m,
        btok,
        prompts,
        ["a", "b"],
        SamplingConfig(**base, stop_at_newline=True),
        progress=False,
        return_truncated=True,
    )
    assert out == [["Paris"], ["Paris"]] and trunc == [[False], [False]]
    full = sample_responses(m, btok, prompts, ["a", "b"], SamplingConfig(**base), progress=False)
    assert full[0][0].startswith("Paris\nQ") and full[0][0] != "Paris"
    # the newline ends the row even on the last allowed token (finished, not truncated)
    short = dict(base, max_new_tokens=len(script) - 4 + 1)
    _, trunc = sample_responses(
        m,
        btok,
        prompts,
        ["a", "b"],
        SamplingConfig(**short, stop_at_newline=True),
        progress=False,
        return_truncated=True,
    )
    assert trunc == [[False], [False]]
    _, trunc = sample_responses(
        m,
        btok,
        prompts,
        ["a", "b"],
        SamplingConfig(**dict(short, max_new_tokens=2), stop_at_newline=True),
        progress=False,
        return_truncated=True,
    )
    assert trunc == [[True], [True]]


def test_store_written_before_stop_at_newline_resumes(model, tok, tmp_path):
    path = tmp_path / "s.jsonl"
    cfg = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=4)
    sample_to_jsonl(path, model, tok, PROMPTS[:2], IDS[:2], cfg, progress=False)
    cfg_path = tmp_path / "s.jsonl.config.json"
    old = json.loads(cfg_path.read_text())
    del old["stop_at_newline"]  # what an older hlens wrote
    cfg_path.write_text(json.dumps(old))
    assert SamplingConfig.from_dict(old) == cfg
    recs = sample_to_jsonl(path, model, tok, PROMPTS, IDS, cfg, progress=False)
    assert [r["id"] for r in recs] == IDS
    with pytest.raises(ValueError, match="config"):
        sample_to_jsonl(
            path,
            model,
            tok,
            PROMPTS,
            IDS,
            SamplingConfig(**{**cfg.to_dict(), "stop_at_newline": True}),
            progress=False,
        )
    with pytest.raises((TypeError, ValueError), match="stop_at_newline"):
        SamplingConfig(stop_at_newline=1)


# -- the fast path: a plain copy of the model, preallocated KV cache, grouped-query attention ------
@pytest.fixture(scope="module")
def gqa_model(tok):
    """An eager tiny Llama with grouped-query attention (4 query heads, 2 key/value heads) and
    a likely EOS: the model the fast path's preallocated cache and attention are built for."""
    torch.manual_seed(3)
    return _likely_eos(_tiny_llama(tok, heads=4, attn="eager"), tok)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("batch_size", [3, 64])
def test_fast_path_equals_the_reference_decoder(
    gqa_model, tok, monkeypatch, temperature, batch_size
):
    fast = S._fast_model(gqa_model)
    assert fast is not gqa_model and fast._hlens_kv_heads == (2, 2, 8)
    assert gqa_model.model.layers[0].self_attn.config._attn_implementation == "eager"
    want = _equal_to_reference(gqa_model, tok, temperature, batch_size, monkeypatch)
    assert len({len(g) for rows in want for g, _ in rows}) > 3  # rows finished at different steps


def test_length_groups_cover_every_prompt_once():
    lengths = [5, 30, 31, 6, 29, 5, 60]
    groups = S._length_groups(lengths, overhead=4)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [[lengths[i] for i in g] for g in groups] == [[5, 5, 6], [29, 30, 31], [60]]
    assert S._length_groups([7] * 5) == [[0, 1, 2, 3, 4]]


def test_hooks_take_the_hooked_path_and_apply(llama, monkeypatch):
    """Sampling through a bridge: the plain copy only while no hook is registered; scaled
    neurons (hooks on ``blocks.{l}.mlp.hook_post``) give the slow path's tokens, and equal the
    same scaling written into the weights (no hooks, so the fast path)."""
    from hlens.interventions import scale_neurons

    hf, btok = llama.hf_model, llama.tokenizer
    prompts = ["Where was Ada born?", "The capital of", "Question: who wrote it? Answer:"]
    ids = ["a", "b", "c"]
    cfg = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=8, seed=4)
    greedy = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=8)
    neurons = {0: [0, 1, 2, 5], 1: [3, 7]}
    assert S._fast_model(hf) is not hf

    def slow(c):
        with monkeypatch.context() as mp:
            mp.setattr(S, "_fast_model", lambda m: m)
            return sample_responses(hf, btok, prompts, ids, c, progress=False)

    for c in (cfg, greedy):
        plain = sample_responses(hf, btok, prompts, ids, c, progress=False)
        assert plain == slow(c)
        with scale_neurons(llama, neurons, alpha=4.0):
            assert S._fast_model(hf) is hf  # hooks registered: no copy
            hooked = sample_responses(hf, btok, prompts, ids, c, progress=False)
            assert hooked == slow(c)
        with scale_neurons(llama, neurons, alpha=4.0, implementation="weights"):
            assert S._fast_model(hf) is not hf
            assert sample_responses(hf, btok, prompts, ids, c, progress=False) == hooked
        assert hooked != plain  # the scaling changed the samples
