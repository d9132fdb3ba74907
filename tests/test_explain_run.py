"""Report-card inputs from a find run, and AtP against exact patching (hlens.explain_run)."""

from __future__ import annotations

import json

import pytest
import torch

from hlens.errors import HlensInputError
from hlens.examples import Example
from hlens.explain_run import (
    _logits_at,
    answer_evaluator,
    answer_pairs,
    atp_agreement,
    ids_batch,
    run_controls,
    run_examples,
    run_format,
)
from hlens.interventions import ablate_neurons as zero_ablation
from hlens.neurons import NeuronSet
from hlens.prompts import PromptFormat

PLAIN = PromptFormat(template="plain")
# names of three tokens and places of one under the tiny tokenizer: equal-length prompts
NAMES = ["Ren", "Mo", "Ivo", "Pax", "Odo", "Cy", "Ann", "Eve", "Leo", "Zoe", "Amy", "Ted"]
PLACES = ["Korin", "Oslo", "Rome", "Lima", "Bern"]


def _examples() -> list[Example]:
    """Two classes of one-template examples, so many pairs share a token length."""
    out = []
    for i, name in enumerate(NAMES):
        place = PLACES[i % len(PLACES)]
        label = "faithful" if i % 2 == 0 else "hallucinated"
        ex = Example(f"Where was {name} Vell born?", f"In {place}.", id=f"q{i}", label=label)
        out.append(ex.with_answer(place))
    return out


def test_logits_at_equal_the_bridge_logits_on_every_family(tiny_model):
    batch = tiny_model.as_batch(_examples()[:4], fmt=PLAIN)
    where = batch.regions["answer"][:, 1:]
    with torch.no_grad():
        full = tiny_model.bridge(batch.tokens, return_type="logits",
                                 attention_mask=batch.attention_mask)  # fmt: skip
        got = _logits_at(tiny_model, batch, where)
    torch.testing.assert_close(got, full[:, :-1][where], atol=1e-4, rtol=1e-4)


def test_answer_evaluator_is_teacher_forced_and_sees_ablations(llama):
    exs = [e for e in _examples() if e.label == "faithful"]
    ev = answer_evaluator(llama, exs, PLAIN, n_answers=4, n_sentences=3)
    base = ev(llama)
    assert set(base) == {"perplexity", "answer_logprob", "answer_kept"}
    assert 0.0 <= base["answer_kept"] <= 1.0 and base["perplexity"] > 1.0
    # the mean answer log-prob, computed by hand from the full logits
    batch = llama.as_batch(exs[:4], fmt=PLAIN)
    with torch.no_grad():
        logp = llama.bridge(batch.tokens, return_type="logits",
                            attention_mask=batch.attention_mask).log_softmax(-1)  # fmt: skip
    region = batch.regions["answer"][:, 1:]
    lp = logp[:, :-1].gather(-1, batch.tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    want = ((lp * region).sum(1) / region.sum(1)).mean()
    assert base["answer_logprob"] == pytest.approx(float(want), abs=1e-4)
    with zero_ablation(llama, NeuronSet.from_flat(list(range(48)), n_layers=2, d_mlp=48)):
        ablated = ev(llama)
    assert ablated["answer_logprob"] != pytest.approx(base["answer_logprob"], abs=1e-6)


def test_answer_pairs_have_equal_lengths_and_different_answers(llama):
    clean, corrupt, metric = answer_pairs(llama, _examples(), PLAIN, n_pairs=3)
    assert len(clean) == len(corrupt) == 3
    assert clean.attention_mask.sum(1).tolist() == corrupt.attention_mask.sum(1).tolist()
    with torch.no_grad():
        logits = llama.bridge(clean.tokens, return_type="logits",
                              attention_mask=clean.attention_mask)  # fmt: skip
    assert metric(logits, clean).shape == (3,)
    with pytest.raises(HlensInputError, match="--agreement-pairs 50: only"):
        answer_pairs(llama, _examples(), PLAIN, n_pairs=50)


def test_atp_agreement_covers_the_random_sample_and_every_h_neuron(llama):
    clean, corrupt, metric = answer_pairs(llama, _examples(), PLAIN, n_pairs=3)
    h = NeuronSet.from_flat([3, 48 + 35], n_layers=2, d_mlp=48)
    res = atp_agreement(llama, h, clean, corrupt, metric, n_random=40, top=10)
    assert res["n_neurons"] == res["n"] == 42 and res["n_h_neurons"] == 2
    assert res["h_neurons"]["n"] == 2 and res["patch_at"] == "last"
    # single-neuron patches on a tiny model are small: the first-order estimate tracks them
    assert res["pearson"] > 0.9 and res["spearman"] > 0.8
    assert res["exact_passes_per_pair"] > res["atp_passes_per_pair"]


def test_run_files_are_read_and_aligned(tmp_path, llama):
    exs = _examples()
    (tmp_path / "examples.jsonl").write_text("\n".join(json.dumps(e.to_dict()) for e in exs))
    (tmp_path / "summary.json").write_text(json.dumps({"prompt": {"format": PLAIN.to_dict()}}))
    ids = [e.id for e in exs][::-1]  # stored in another order
    values = {"span_tokens": list(range(len(ids))), "answer_logprob": [-1.0] * len(ids)}
    (tmp_path / "control_values.json").write_text(json.dumps({"ids": ids, "values": values}))
    assert [e.id for e in run_examples(tmp_path)] == [e.id for e in exs]
    assert run_format(tmp_path) == PLAIN
    got = run_controls(tmp_path, exs[:3])
    assert got["span_tokens"] == [11.0, 10.0, 9.0] and set(got) == {"span_tokens", "answer_logprob"}
    assert run_controls(tmp_path, [exs[0].replace(id="other")]) is None
    assert run_examples(tmp_path / "nowhere") is None
    (tmp_path / "examples.jsonl").write_text("not json\n")
    with pytest.raises(HlensInputError, match="examples.jsonl written by hlens find"):
        run_examples(tmp_path)
    b = ids_batch(llama, [[1, 2, 3], [4]])
    assert b.tokens.shape == (2, 3) and b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_explain_cli_on_a_find_run_writes_correlations_and_the_agreement(
    llama, checkpoint_dir, tmp_path
):
    from hlens.cli import main

    exs = _examples()
    (tmp_path / "examples.jsonl").write_text("\n".join(json.dumps(e.to_dict()) for e in exs))
    (tmp_path / "summary.json").write_text(json.dumps({"prompt": {"format": PLAIN.to_dict()}}))
    NeuronSet.from_flat([3, 48 + 35], n_layers=2, d_mlp=48, weights=[0.5, 1.5]).save(
        tmp_path / "h_neurons.json"
    )
    out = tmp_path / "explain"
    rc = main([
        "explain", "--model", str(checkpoint_dir("llama")), "--neurons",
        str(tmp_path / "h_neurons.json"), "--out", str(out), "--k", "3",
        "--agreement-pairs", "3", "--agreement-neurons", "20", "--device", "cpu",
    ])  # fmt: skip
    assert rc == 0
    cards = json.loads((out / "cards.json").read_text())
    assert {"hallucinated", "span_tokens", "answer_logprob"} <= set(cards[0]["correlations"])
    assert all(t["label"] in ("faithful", "hallucinated") for t in cards[0]["top_examples"])
    assert set(cards[0]["ablation"]["delta"]) == {"perplexity", "answer_logprob", "answer_kept"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["atp_vs_exact"]["n_neurons"] == 22
    assert summary["ablation_all"]["n_neurons"] == 2
    # asked for more pairs than exist: one clear error, nothing written
    out2 = tmp_path / "explain2"
    assert main([
        "explain", "--model", str(checkpoint_dir("llama")), "--neurons",
        str(tmp_path / "h_neurons.json"), "--out", str(out2), "--agreement-pairs", "99",
    ]) == 2  # fmt: skip
    assert not out2.exists()
