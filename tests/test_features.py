"""Streaming CETT features: equal to per-token CETT aggregated afterwards; resumable; sharded."""

from __future__ import annotations

import json

import pytest
import torch

import hlens
from hlens import features as F
from hlens.features import CETTConfig, FeatureStore, extract_features, merge_manifest

WORDS = ["Korin", "Paris", "Zürich", "Oslo", "Lisbon", "Rome", "Vienna", "Prague"]


def make_examples(n=11):
    out = []
    for i in range(n):
        city = WORDS[i % len(WORDS)]
        resp = f"{'Ada ' * (i % 3)}born in {city}."
        out.append(hlens.Example(f"Where was person {i} born?", resp, id=f"q{i}").with_answer(city))
    return out


def test_features_equal_cett_then_aggregate(tiny_model):
    exs = make_examples(4)
    cfg = CETTConfig(regions=("answer", "all_except_answer", "prompt"), batch_size=3)
    batch = tiny_model.tokenize(exs, padding_side="right")
    scores = hlens.cett(tiny_model, batch)
    feats = F.features_for_batch(tiny_model, batch, cfg)
    for region in cfg.regions:
        ref = hlens.aggregate_region(scores, batch.regions[region], "mean")
        torch.testing.assert_close(feats[region], ref, rtol=1e-5, atol=1e-7)
    mx = F.features_for_batch(tiny_model, batch, CETTConfig(regions=("answer",), aggregation="max"))
    torch.testing.assert_close(
        mx["answer"], hlens.aggregate_region(scores, batch.regions["answer"], "max")
    )


def test_extract_store_and_reload(llama, tmp_path):
    exs = make_examples(11)
    cfg = CETTConfig(batch_size=4, shard_size=5)
    store = extract_features(llama, exs, tmp_path / "f", cfg, progress=False)
    assert store.ids == [e.id for e in exs]
    assert len(store.manifest["shards"]) == 3
    x = store.load("answer")
    assert x.shape == (11, llama.n_layers, llama.d_mlp)
    assert store.load("answer", ids=["q3", "q0"], flat=True).shape == (
        2,
        llama.n_layers * llama.d_mlp,
    )
    torch.testing.assert_close(store.load("answer", ids=["q3"])[0], x[3])
    direct = F.features_for_batch(llama, llama.tokenize(exs[:2], padding_side="right"), cfg)
    torch.testing.assert_close(x[:2], direct["answer"])


def test_interrupted_extraction_resumes_identically(llama, tmp_path, monkeypatch):
    exs = make_examples(11)
    cfg = CETTConfig(batch_size=2, shard_size=4)
    full = extract_features(llama, exs, tmp_path / "full", cfg, progress=False)

    calls = {"n": 0}
    real = F.features_for_batch

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the second shard
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "features_for_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_features(llama, exs, tmp_path / "resumed", cfg, progress=False)
    done = sorted(p.name for p in (tmp_path / "resumed").glob("shard-*.json"))
    assert done == ["shard-00000.json"]  # the unfinished shard left nothing behind
    assert not list((tmp_path / "resumed").glob("*.tmp*"))

    counted = {"n": 0}

    def counting(*args, **kwargs):
        counted["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "features_for_batch", counting)
    resumed = extract_features(llama, exs, tmp_path / "resumed", cfg, progress=False)
    assert counted["n"] == 4  # shards 1 and 2 only: 4 + 3 examples in batches of 2
    for region in cfg.regions:
        assert torch.equal(resumed.load(region), full.load(region))


def test_mismatched_rerun_is_refused(llama, tmp_path):
    exs = make_examples(3)
    extract_features(llama, exs, tmp_path, CETTConfig(), progress=False)
    with pytest.raises(ValueError, match="different config"):
        extract_features(llama, exs, tmp_path, CETTConfig(aggregation="max"), progress=False)
    with pytest.raises(ValueError, match="different n_examples, ids_digest"):
        extract_features(llama, exs[:2], tmp_path, CETTConfig(), progress=False)


def test_ranks_write_disjoint_shards_and_merge_checks(llama, tmp_path):
    exs = make_examples(9)
    cfg = CETTConfig(shard_size=2)
    single = extract_features(llama, exs, tmp_path / "one", cfg, progress=False)
    out = tmp_path / "two"
    assert extract_features(llama, exs, out, cfg, progress=False, rank=1, world_size=2) is None
    with pytest.raises(ValueError, match="missing shard-00000, shard-00002, shard-00004"):
        merge_manifest(out)
    store = extract_features(llama, exs, out, cfg, progress=False, rank=0, world_size=2)
    assert torch.equal(store.load("answer"), single.load("answer"))


def test_bad_inputs(llama, tmp_path):
    with pytest.raises((ValueError, TypeError), match="aggregation"):
        CETTConfig(aggregation="median")
    with pytest.raises(ValueError, match="subset"):
        CETTConfig(regions=("answers",))
    with pytest.raises(ValueError, match="need an id|needs an id"):
        extract_features(llama, [hlens.Example("q", "a", answer_span=(0, 1))], tmp_path)
    with pytest.raises(ValueError, match="unique"):
        ex = make_examples(1)[0]
        extract_features(llama, [ex, ex], tmp_path)
    with pytest.raises(ValueError, match="no answer span"):
        extract_features(llama, [hlens.Example("q", "a", id="x")], tmp_path / "n", progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        FeatureStore(tmp_path / "nothing")
    meta = json.loads((tmp_path / "n" / "extraction.json").read_text())
    assert meta["config"]["regions"] == ["answer", "all_except_answer"]
