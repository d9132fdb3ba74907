"""Streaming CETT with a shared token prefix: the prefix is run once (its KV cache and its CETT),
each batch runs only the tokens after it, and the features equal those of full sequences."""

from __future__ import annotations

import pytest
import torch

import hlens
from hlens import features as F
from hlens.features import CETTConfig, extract_features

SYSTEM = "Answer about places."


def make_examples(n=7, system=SYSTEM):
    cities = ["Korin", "Paris", "Oslo", "Lisbon", "Rome"]
    out = []
    for i in range(n):
        city = cities[i % len(cities)]
        resp = f"{'Ada ' * (i % 3)}born in {city}."
        q = f"Where was {i} born{'?' * (1 + i % 2)}"
        ex = hlens.Example(q, resp, id=f"q{i}", system=system).with_answer(city)
        out.append(ex)
    return out


def _direct(model, exs, cfg):
    """Features of full sequences, one batch, no prefix."""
    batch = model.tokenize(exs, padding_side="right")
    return F.features_for_batch(model, batch, cfg)


def _normwise(a, b):
    return float((a - b).abs().nan_to_num().max() / b.abs().nan_to_num().max())


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_shared_prefix_equals_full_sequences(tiny_model, tmp_path, aggregation):
    exs = make_examples()
    regions = ("answer", "all_except_answer", "prompt", "response")
    cfg = CETTConfig(regions=regions, aggregation=aggregation, batch_size=3, shard_size=4)
    lengths, ids, patterns = F._prefix_plan(tiny_model, exs, hlens.PromptFormat(), cfg)
    assert len(ids) >= 4 and len(lengths) == len(exs)
    prefix = F._shared_prefix(tiny_model, ids, patterns, cfg)
    assert prefix is not None and prefix.n == len(ids)
    store = extract_features(tiny_model, exs, tmp_path, cfg, progress=False)
    ref = _direct(tiny_model, exs, cfg)
    for r in regions:
        got = store.load(r)
        assert torch.equal(torch.isnan(got), torch.isnan(ref[r]))  # "response" has no prefix part
        assert _normwise(got, ref[r]) < 1e-5, r


def test_prefix_only_tokens_after_it_run(llama, monkeypatch):
    exs = make_examples(5)
    cfg = CETTConfig(regions=("answer", "all_except_answer"), batch_size=5)
    _, ids, patterns = F._prefix_plan(llama, exs, hlens.PromptFormat(), cfg)
    prefix = F._shared_prefix(llama, ids, patterns, cfg)
    batch = llama.tokenize(exs, padding_side="right")
    seen = []
    real = F._forward
    monkeypatch.setattr(F, "_forward", lambda m, t, *a: seen.append(t.shape) or real(m, t, *a))
    feats = F.features_for_batch(llama, batch, cfg, prefix=prefix)
    assert seen == [(5, batch.tokens.shape[1] - prefix.n)]
    ref = F.features_for_batch(llama, batch, cfg)
    for r in cfg.regions:
        assert _normwise(feats[r], ref[r]) < 1e-5


def test_prefix_layers_subset_and_mismatch(llama):
    exs = make_examples(4)
    cfg = CETTConfig(regions=("answer",), layers=(0,), batch_size=4)
    _, ids, patterns = F._prefix_plan(llama, exs, hlens.PromptFormat(), cfg)
    prefix = F._shared_prefix(llama, ids, patterns, cfg)
    batch = llama.tokenize(exs, padding_side="right")
    got = F.features_for_batch(llama, batch, cfg, prefix=prefix)["answer"]
    assert got.shape == (4, 1, llama.d_mlp)
    assert _normwise(got, F.features_for_batch(llama, batch, cfg)["answer"]) < 1e-5
    other = llama.tokenize(
        make_examples(2, system="Something else entirely."), padding_side="right"
    )
    with pytest.raises(ValueError, match="shared prefix"):
        F.features_for_batch(llama, other, cfg, prefix=prefix)


def test_no_prefix_without_shared_tokens(llama):
    exs = [hlens.Example(q, "Paris", id=q).with_answer("Paris") for q in ("Where?", "Who?")]
    cfg = CETTConfig(regions=("answer",))
    fmt = hlens.PromptFormat(template="plain", plain_template="{question}")
    _, ids, patterns = F._prefix_plan(llama, exs, fmt, cfg)
    assert F._shared_prefix(llama, ids, patterns, cfg) is None


def test_shard_writer_writes_save_file_bytes(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    ref = {r: torch.randn(5, 3, 7, generator=g) for r in ("answer", "all_except_answer", "prompt")}
    ref["answer"][2] = torch.nan
    save_file(ref, str(tmp_path / "ref.safetensors"))
    w = F._ShardWriter(tmp_path / "new.safetensors", tuple(ref), (5, 3, 7))
    for rows in ([4, 0], [3], [1, 2]):  # any row order, as batches sorted by length arrive
        w.write(rows, {r: t[rows] for r, t in ref.items()})
    w.close()
    assert (tmp_path / "new.safetensors").read_bytes() == (
        tmp_path / "ref.safetensors"
    ).read_bytes()
