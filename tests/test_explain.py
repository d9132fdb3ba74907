"""Neuron report cards and ``hlens explain`` on the seeded tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch

from hlens.examples import Example
from hlens.explain import (
    NeuronCard,
    ablation_effects,
    activation_stats,
    report_cards,
    top_activating,
    upstream_drivers,
    vocab_projection,
    zero_ablation,
)
from hlens.neurons import NeuronId, NeuronSet

TEXTS = ["Where was Ada Vell born?", "The quick brown fox jumps", "Paris, London, Berlin"]
RIGHT = [
    Example("Where was Ada Vell born?", "Korin.").with_answer("Korin"),
    Example("Who is Ada Vell?", "A baker in Korin.").with_answer("baker"),
    Example("Where is Korin?", "Near Paris.").with_answer("Paris"),
]
WRONG = [
    Example("Where was Ren Vell born?", "Berlin.").with_answer("Berlin"),
    Example("Who is Ren Vell?", "A sailor in Rome.").with_answer("sailor"),
    Example("Where is Vell?", "Near Oslo.").with_answer("Oslo"),
]


@pytest.fixture
def neurons(llama):
    return NeuronSet.from_flat([3, 48 + 35], n_layers=2, d_mlp=48, weights=[0.5, 1.5])


def test_vocab_projection_ranks_tokens(llama, neurons):
    (up, down), _ = vocab_projection(llama, neurons, k=5)
    assert len(up) == 5 and up[0].logit >= up[-1].logit > down[-1].logit >= down[0].logit
    assert up[0].token == llama.tokenizer.decode([up[0].token_id])


def test_top_activating_finds_the_maximum_with_context(llama, neurons):
    tops = top_activating(llama, neurons, TEXTS, k=2, window=2)
    cache = llama.neuron_cache(TEXTS, layers=[1])
    acts = cache.activations[:, :, 0, 35].masked_fill(cache.attention_mask == 0, -torch.inf)
    best = acts.max(1).values
    assert [t.example for t in tops[1]] == best.argsort(descending=True)[:2].tolist()
    t = tops[1][0]
    assert t.activation == pytest.approx(float(best.max()), abs=1e-5)
    assert t.context[t.focus] == t.token and "[[" in t.text and len(t.context) <= 5


def test_activation_stats_effect_size_and_bootstrap(llama, neurons):
    stats = activation_stats(llama, neurons, RIGHT, WRONG, n_boot=200)
    s = stats[1]
    assert s.n_faithful == 3 and s.n_hallucinated == 3
    pooled = ((s.std_faithful**2 + s.std_hallucinated**2) / 2) ** 0.5
    d = (s.mean_hallucinated - s.mean_faithful) / pooled
    assert s.effect_size == pytest.approx(d, rel=1e-6)
    assert s.ci_low <= s.ci_high
    with pytest.raises(ValueError, match="at least 2 examples"):
        activation_stats(llama, neurons, RIGHT[:1], WRONG)


def _mean_logit(model):
    toks = model.tokenize(TEXTS[0]).tokens
    with torch.no_grad():
        return {"logit5": float(model.bridge(toks, return_type="logits")[0, -1, 5])}


def test_ablation_runs_evaluate_with_each_neuron_zeroed(llama, neurons):
    base = _mean_logit(llama)
    effects = ablation_effects(llama, neurons, _mean_logit)
    assert effects[0]["baseline"] == base and set(effects[0]["delta"]) == {"logit5"}
    assert effects[1]["delta"]["logit5"] != 0
    with zero_ablation(llama, NeuronSet((NeuronId(1, 35),), 2, 48)):
        inside = _mean_logit(llama)
    assert inside == effects[1]["ablated"] and _mean_logit(llama) == base  # restored


def test_upstream_drivers_attribute_to_earlier_units(llama):
    drivers = upstream_drivers(llama, NeuronId(1, 35), TEXTS[:2], k=6)
    assert len(drivers) == 6
    assert all((d.kind == "neuron" and d.layer == 0) or d.kind == "head" for d in drivers)
    assert abs(drivers[0].score) >= abs(drivers[-1].score) > 0
    corrupt = ["Where is Ada Vell born?", "The lazy brown dog jumps"]
    patched = upstream_drivers(llama, NeuronId(1, 35), TEXTS[:2], corrupt=corrupt, k=3)
    assert len(patched) == 3


def test_report_cards_round_trip_and_summaries(llama, neurons):
    cards = report_cards(
        llama, neurons, dataset=TEXTS, faithful=RIGHT, hallucinated=WRONG,
        evaluate=_mean_logit, driver_inputs=TEXTS[:2], k=3, n_boot=50,
    )  # fmt: skip
    c = cards[1]
    assert c.weight == 1.5 and c.stats is not None and c.ablation and len(c.drivers) == 3
    back = NeuronCard.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    row = c.records()
    assert row["layer"] == 1 and "stats_effect_size" in row and "ablation_delta_logit5" in row
    assert "neuron L1.35" in c.summary()


def test_explain_cli_writes_cards(llama, checkpoint_dir, tmp_path, neurons):
    from hlens.cli import main

    neurons.save(tmp_path / "h.json")
    exs = tmp_path / "ex.jsonl"
    rows = [e.replace(label="faithful") for e in RIGHT] + [
        e.replace(label="hallucinated") for e in WRONG
    ]
    exs.write_text("\n".join(json.dumps(e.to_dict()) for e in rows))
    out = tmp_path / "explain"
    rc = main([
        "explain", "--model", str(checkpoint_dir("llama")), "--neurons", str(tmp_path / "h.json"),
        "--out", str(out), "--examples", str(exs), "--max-neurons", "1", "--k", "3",
        "--device", "cpu",
    ])  # fmt: skip
    assert rc == 0
    cards = json.loads((out / "cards.json").read_text())
    assert len(cards) == 1 and cards[0]["neuron"] == {"layer": 1, "index": 35}  # top weight
    assert cards[0]["stats"]["n_faithful"] == 3
    assert json.loads((out / "summary.json").read_text())["n_cards"] == 1
