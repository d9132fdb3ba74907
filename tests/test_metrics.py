"""Metrics and their bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from hlens.metrics import METRIC_NAMES, ProbeMetrics, auroc, compute_metrics, strata_control


def scored(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.round(rng.standard_normal(n) + 1.2 * y, 1)  # rounding makes ties
    return y, score, (score > 0.6).astype(int)


def test_point_estimates_match_sklearn():
    y, s, p = scored()
    m = compute_metrics(y, s, p, n_boot=0)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, p))
    assert m.precision == pytest.approx(skm.precision_score(y, p))
    assert m.recall == pytest.approx(skm.recall_score(y, p))
    assert m.f1 == pytest.approx(skm.f1_score(y, p))
    assert m.auroc == pytest.approx(skm.roc_auc_score(y, s))
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s))


def test_bootstrap_interval_contains_point_and_is_seeded():
    y, s, p = scored()
    m = compute_metrics(y, s, p, n_boot=500, seed=3)
    for k in METRIC_NAMES:
        lo, hi = m.ci[k]
        assert lo <= getattr(m, k) <= hi, k
        assert hi - lo > 0
    assert compute_metrics(y, s, p, n_boot=500, seed=3) == m
    assert compute_metrics(y, s, p, n_boot=500, seed=4).ci != m.ci


def test_wider_interval_at_higher_confidence():
    y, s, p = scored()
    a = compute_metrics(y, s, p, n_boot=400, confidence=0.8)
    b = compute_metrics(y, s, p, n_boot=400, confidence=0.99)
    assert b.ci["auroc"][1] - b.ci["auroc"][0] > a.ci["auroc"][1] - a.ci["auroc"][0]


def test_round_trip_through_json():
    y, s, p = scored(n=50)
    m = compute_metrics(y, s, p, n_boot=100)
    again = ProbeMetrics.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    with pytest.raises(ValueError, match="not a ProbeMetrics dict"):
        ProbeMetrics.from_dict({"accuracy": 1.0})


def test_zero_division_and_single_class_conventions():
    y = np.array([0, 0, 0])
    m = compute_metrics(y, np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]), n_boot=50)
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0 and m.accuracy == 1.0
    assert np.isnan(m.auroc) and all(np.isnan(m.ci["auroc"]))


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="0/1 labels"):
        compute_metrics(np.array([0, 2]), np.array([0.1, 0.2]), np.array([0, 1]))
    # mismatched lengths: our ValueError, or jaxtyping's TypeError when its import hook is on
    with pytest.raises((ValueError, TypeError), match="one entry per sample|sample"):
        compute_metrics(np.array([0, 1]), np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="confidence"):
        compute_metrics(np.array([0, 1]), np.array([0.1, 0.2]), np.array([0, 1]), confidence=2.0)


def test_strata_control_exposes_a_probe_that_only_knows_the_question_type():
    """Years are hallucinated 80% of the time, cities 20%: a score that is just "is it a year"
    reaches AUROC 0.8 overall, the stratum alone explains all of it, and within types it is 0.5."""
    y = np.array([1] * 8 + [0] * 2 + [1] * 2 + [0] * 8)
    strata = ["year"] * 10 + ["city"] * 10
    type_score = np.array([1.0] * 10 + [0.0] * 10)
    c = strata_control(y, strata, y, type_score, strata)
    assert auroc(y, type_score) == pytest.approx(0.8)
    assert c["strata_only_auroc"] == pytest.approx(0.8)
    assert c["within_strata_auroc"] == pytest.approx(0.5)
    assert c["n_strata"] == 2
    assert c["per_stratum"]["year"] == {"n": 10, "n_positive": 8, "train_rate": 0.8, "auroc": 0.5}

    knows = y + 0.1 * type_score  # a real signal survives inside each type
    c = strata_control(y, strata, y, knows, strata)
    assert c["within_strata_auroc"] == pytest.approx(1.0)


def test_strata_control_golden_weighting_and_unseen_strata():
    # within: stratum a has 1x1 pairs (AUROC 1), stratum b 2x1 pairs (AUROC 0.5): (1 + 2 * 0.5) / 3
    y_te = np.array([1, 0, 1, 1, 0, 1])
    s_te = ["a", "a", "b", "b", "b", "new"]
    score = np.array([0.9, 0.1, 0.9, 0.1, 0.5, 0.3])
    c = strata_control(np.array([1, 0, 0, 0]), ["a", "a", "b", "b"], y_te, score, s_te)
    assert c["within_strata_auroc"] == pytest.approx(2 / 3)
    assert c["per_stratum"]["new"]["train_rate"] is None
    assert np.isnan(c["per_stratum"]["new"]["auroc"])
    # base scores: a -> 0.5, b -> 0.0, new -> overall 0.25
    base = np.array([0.5, 0.5, 0.0, 0.0, 0.0, 0.25])
    assert c["strata_only_auroc"] == pytest.approx(auroc(y_te, base))
    one_class = strata_control(
        np.array([1, 0]), ["a", "b"], np.array([1, 0]), score[:2], ["a", "b"]
    )
    assert np.isnan(one_class["within_strata_auroc"])


def test_strata_control_bad_inputs_raise_clearly():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="one stratum per training label: got 1 strata for 2"):
        strata_control(y, ["a"], y, np.array([0.1, 0.2]), ["a", "b"])
    with pytest.raises(ValueError, match="one entry per test example, got 2, 2 and 3"):
        strata_control(y, ["a", "b"], y, np.array([0.1, 0.2]), ["a", "b", "c"])
    with pytest.raises(ValueError, match="0/1 labels"):
        strata_control(np.array([0, 2]), ["a", "b"], y, np.array([0.1, 0.2]), ["a", "b"])
