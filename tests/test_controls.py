"""Confound controls: golden values, the warning when one number explains the probe, and the
per-example values on a real tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest

import hlens
from hlens.controls import (
    MARGIN,
    ConfoundReport,
    answer_confidence,
    confound_controls,
    control_values,
    length_bin,
    span_is_whole,
)
from hlens.prompts import PromptFormat


def test_golden_oriented_auroc() -> None:
    # training: higher values mean faithful, so the direction is flipped before testing
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    v = np.array([4.0, 3.0, 1.0, 2.0, 5.0, 1.0, 3.0, 4.0])
    rep = confound_controls({"span_tokens": v}, y, slice(0, 4), slice(4, 8), np.zeros(4))
    c = rep.controls[0]
    assert c.flipped and c.train_auroc == 0.0
    # test: faithful 5, 3; hallucinated 1, 4 -> flipped scores -5, -3 vs -1, -4: 3 of 4 pairs
    assert c.auroc == pytest.approx(0.75)
    assert (c.mean_faithful, c.mean_hallucinated) == (4.0, 2.5)
    assert math.isclose(rep.probe_auroc, 0.5)


def test_warning_fires_when_length_alone_explains_the_label() -> None:
    """A synthetic set where answer length decides the label and the probe reads length."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    length = 1 + y + rng.integers(0, 3, n)  # hallucinated answers are longer
    probe = length + 0.3 * rng.normal(size=n)  # a "probe" that learned length
    train, test = slice(0, 300), slice(300, n)
    rep = confound_controls(
        {"span_tokens": length.astype(float), "noise": rng.normal(size=n)},
        y,
        train,
        test,
        probe[test],
    )
    assert rep.probe_auroc > 0.7
    assert rep.flagged == ["span_tokens"]
    assert rep.verdict().startswith("NOT A FINDING")
    # the probe does nothing within answers of one length
    assert rep.length_bins["within_strata_auroc"] < 0.65
    d = rep.to_dict()
    assert "NOT A FINDING" in d["verdict"]
    back = ConfoundReport.from_dict(d)
    assert back.flagged == rep.flagged and back.controls == rep.controls
    with pytest.raises(ValueError, match="unknown"):
        ConfoundReport.from_dict({**d, "extra": 1})


def test_no_warning_when_the_probe_beats_every_control_by_the_margin() -> None:
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    length = rng.integers(1, 6, n).astype(float)  # unrelated to the label
    probe = y * 2.0 + rng.normal(size=n)
    rep = confound_controls({"span_tokens": length}, y, slice(0, 300), slice(300, n), probe[300:])
    assert rep.flagged == []
    assert rep.controls[0].auroc < rep.probe_auroc - MARGIN
    assert rep.length_bins["within_strata_auroc"] > 0.8
    assert "more than 0.05 below" in rep.verdict()


def test_bad_shapes() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="probe_scores"):
        confound_controls({}, y, slice(0, 2), slice(2, 4), np.zeros(3))
    with pytest.raises((ValueError, TypeError)):  # jaxtyping checks the shared dimension
        confound_controls({"x": np.zeros(3)}, y, slice(0, 2), slice(2, 4), np.zeros(2))


def test_length_bins_and_whole_span() -> None:
    assert [length_bin(n) for n in (0, 1, 4, 6)] == ["1", "1", "4-5", "6+"]
    assert span_is_whole(hlens.Example("Q?", "'Paris.'").with_answer("Paris"))
    assert not span_is_whole(hlens.Example("Q?", "It is Paris.").with_answer("Paris"))


def test_control_values_on_a_tiny_model(llama) -> None:
    exs = [
        hlens.Example("Where?", "Paris", id="a").with_answer("Paris"),
        hlens.Example("Where?", "It was in Berlin.", id="b").with_answer("Berlin"),
    ]
    fmt = PromptFormat(template="plain")
    v = control_values(llama, exs, fmt, truncated=[False, True])
    assert v["truncated"].tolist() == [0.0, 1.0]
    assert v["span_is_whole"].tolist() == [1.0, 0.0]
    assert v["span_start"][0] == 0 and v["span_start"][1] > 0
    assert (v["span_tokens"] >= 1).all() and (v["response_tokens"] >= v["span_tokens"]).all()
    lp, ent = answer_confidence(llama, exs, fmt)
    assert (lp < 0).all() and (ent > 0).all()
    # golden: the mean log-probability of the answer tokens from a plain forward pass
    import torch

    from hlens.prompts import tokenize_examples

    b = tokenize_examples(exs[:1], llama.tokenizer, fmt)
    with torch.no_grad():
        logits = llama.hf_model(input_ids=b.tokens).logits.double()
    logp = torch.log_softmax(logits[0], -1)
    pos = b.regions["answer"][0].nonzero()[:, 0]
    ref = logp[pos - 1, b.tokens[0, pos]].mean().item()
    assert lp[0] == pytest.approx(ref, abs=1e-5)  # float32 forward, fewer logits kept
    p = logp[pos[0] - 1].exp()
    assert ent[0] == pytest.approx(float(-(p * logp[pos[0] - 1]).sum()), abs=1e-5)


def test_a_probe_at_chance_has_nothing_to_explain() -> None:
    """The organism's case: the probe is at chance while the model's confidence separates well."""
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 2, n)
    confidence = -3.0 * y + rng.normal(size=n)
    rep = confound_controls(
        {"answer_logprob": confidence, "span_tokens": rng.integers(1, 3, n).astype(float)},
        y,
        slice(0, 300),
        slice(300, n),
        rng.normal(size=100),
    )
    assert rep.flagged == []  # a control at chance explains nothing, a probe at chance neither
    v = rep.verdict()
    assert v.startswith("no finding: the probe does not separate the test set")
    assert "mean log-probability" in v and "does not read" in v
