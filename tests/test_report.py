"""``hlens report`` on fake run directories (no organism needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from hlens.examples import Example
from hlens.explain_run import ExplainResult
from hlens.identify import FindConfig, FindResult
from hlens.neurons import NeuronSet
from hlens.origin import OriginResult
from hlens.report import build_report, write_report
from hlens.sweep import SteerResult

N_LAYERS, D_MLP = 4, 32


def _cell(rate: float) -> dict:
    return {"rate": rate, "ci": [rate - 0.05, rate + 0.05], "n": 40, "statistic": "rate"}


def make_run(
    root: Path,
    *,
    find: bool = True,
    steer: bool = True,
    explain: bool = True,
    origin: bool = True,
) -> Path:
    """A small run directory with the files find / steer / explain / origin write."""
    root.mkdir(parents=True, exist_ok=True)
    h = NeuronSet.from_flat(
        [3, 40, 41, 100], n_layers=N_LAYERS, d_mlp=D_MLP, weights=[0.9, 0.5, 0.2, 0.1]
    )
    if find:
        h.save(root / "h_neurons.json")
        summary = {
            "hlens_version": "0.0.test",
            "model": "tiny-model-zq",
            "dataset": "organism",
            "n_layers": N_LAYERS,
            "d_mlp": D_MLP,
            "h_neurons": {"count": 4, "fraction": 4 / 128, "per_layer": h.layer_counts()},
            "metrics": {
                "test": {
                    "accuracy": 0.8125,
                    "auroc": 0.8771,
                    "auroc_ci": [0.8012, 0.9391],
                    "accuracy_ci": [0.74, 0.88],
                    "n": 64,
                },
                "ood": {"accuracy": 0.7, "auroc": 0.75},
            },
            "baselines": {
                "random_neurons": {"accuracy": 0.55, "auroc": 0.5432, "ci": {"auroc": [0.5, 0.6]}}
            },
            "controls": {"strata": {"strata_only_auroc": 0.6123, "within_strata_auroc": 0.8456}},
            "probe": {
                "C": 0.05,
                "c_min": 0.01,
                "c_rule": "auroc_1se",
                "contrast": "3-vs-1",
                "penalty": "l1",
                "solver": "torch",
                "n_nonzero": 6,
            },
            "c_path": {
                "Cs": [0.01, 0.05, 0.2],
                "n_positive": [1, 4, 20],
                "n_nonzero": [1, 6, 30],
                "accuracy": [0.6, 0.8, 0.8],
                "auroc": [0.7, 0.87, 0.86],
                "auroc_se": [0.03, 0.03, 0.03],
            },
            "funnel": {
                "n_questions": 500,
                "n_consistent_faithful": 121,
                "n_consistent_hallucinated": 200,
                "n_mixed": 150,
                "n_with_uncertain": 29,
                "n_train": 96,
                "n_test": 32,
            },
        }
        FindResult.from_dict(summary).save(root / "summary.json")  # as hlens find writes it
    if steer:
        (root / "steer").mkdir(exist_ok=True)
        results = {
            "false_premise": {
                "h_neurons": {"0": _cell(0.2), "1": _cell(0.4), "2": _cell(0.7)},
                "random_seed0": {"0": _cell(0.4), "1": _cell(0.4), "2": _cell(0.41)},
            }
        }
        slopes = {
            "false_premise": {
                "h_neurons": {"slope": 0.25, "ci": [0.18, 0.31]},
                "random_seed0": {"slope": 0.005, "ci": [-0.03, 0.04]},
            }
        }
        steer_summary = {"results": results, "slopes": slopes, "suites": {"false_premise": "x"}}
        SteerResult.from_dict(steer_summary).save(root / "steer" / "summary.json")
    if explain:
        (root / "explain").mkdir(exist_ok=True)
        card = {
            "neuron": {"layer": 0, "index": 3},
            "weight": 0.9,
            "promoted": [{"token": " maybe", "token_id": 5, "logit": 1.0}],
            "suppressed": [],
            "top_examples": [
                {
                    "example": 0,
                    "example_id": "q1",
                    "position": 2,
                    "activation": 3.5,
                    "token": " Korin",
                    "context": ["Ada", " was", " born", " in", " Quuxville"],
                    "focus": 4,
                }
            ],
            "stats": {
                "region": "answer",
                "n_faithful": 10,
                "n_hallucinated": 10,
                "mean_faithful": 0.1,
                "std_faithful": 0.1,
                "mean_hallucinated": 0.3,
                "std_hallucinated": 0.1,
                "effect_size": 1.9,
                "ci_low": 1.2,
                "ci_high": 2.6,
                "n_boot": 100,
            },
            "ablation": {"baseline": {"acc": 0.5}, "ablated": {"acc": 0.4}, "delta": {"acc": -0.1}},
            "drivers": [{"kind": "head", "layer": 0, "index": 1, "score": 0.3}],
            "meta": {},
        }
        (root / "explain" / "cards.json").write_text(json.dumps([card]))
    if origin:
        (root / "origin").mkdir(exist_ok=True)
        ranks = np.linspace(0, 1, N_LAYERS * D_MLP).tolist()
        origin_summary = {
            "base": "organism-base",
            "tuned": "organism",
            "run": str(root),
            "transfer": {"auroc": 0.8111, "ci": [0.75, 0.86]},
            "inertia": {
                "mean_rank": 0.2222,
                "p_value": 0.0123,
                "ranks": ranks,
                "per_neuron": [{"layer": 0, "index": 3, "rank": 0.1}],
            },
        }
        OriginResult.from_dict(origin_summary).save(root / "origin" / "summary.json")
    return root


def _external_urls(text: str) -> list[str]:
    """URLs the page would fetch: src/href attributes, CSS url(), @import."""
    pats = [
        r"""(?:src|href)\s*=\s*["']?\s*(https?:)?//""",
        r"""url\(\s*["']?\s*(https?:)?//""",
        r"@import",
    ]
    return [m.group(0) for p in pats for m in re.finditer(p, text, flags=re.I)]


def test_full_report_has_every_section(tmp_path):
    run = make_run(tmp_path / "run")
    text = build_report(run, views=False)
    for anchor in ("find", "steer", "explain", "origin"):
        assert f"<section id='{anchor}'>" in text
    # headline numbers with their intervals
    for number in ("0.877", "0.801", "0.939", "0.543", "0.811", "0.222", "0.0123", "+0.250"):
        assert number in text, number
    assert "n consistent" in text and "321" in text  # funnel
    assert "question type alone" in text and "0.612" in text and "0.846" in text
    assert text.count("How to read this") >= 4
    assert text.count("data:image/png;base64,") >= 4  # per layer, C path, steer, inertia
    assert "L0.3" in text  # strongest neurons / cards
    assert "Quuxville" in text and "CircuitsVis.render" in text  # the cards' top-k view
    assert text.count("var CircuitsVis=") == 1  # the bundle is inlined once
    assert not _external_urls(text)
    assert "Content-Security-Policy" in text


@pytest.mark.parametrize("missing", ["steer", "explain", "origin"])
def test_sections_only_when_results_exist(tmp_path, missing):
    run = make_run(tmp_path / "run", **{missing: False})
    text = build_report(run, views=False)
    assert f"<section id='{missing}'>" not in text
    assert "<section id='find'>" in text


def test_report_without_find_and_without_js(tmp_path):
    run = make_run(tmp_path / "run", find=False, explain=False)
    text = build_report(run)
    assert "<section id='find'>" not in text and "<section id='steer'>" in text
    assert "CircuitsVis" not in text  # no view needs it: the bundle is left out


def test_broken_section_shows_error_not_crash(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "steer" / "summary.json").write_text(json.dumps({"results": {"s": "not a dict"}}))
    text = build_report(run, views=False)
    assert "<section id='steer'>" in text and "could not be rendered" in text
    assert "<section id='origin'>" in text
    assert "section" in capsys.readouterr().err


def test_empty_or_missing_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run directory"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="hlens find"):
        build_report(tmp_path / "empty")


def test_cli_writes_report_html(tmp_path, capsys):
    from hlens.cli import main

    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--no-views"]) == 0
    assert (run / "report.html").is_file()
    assert "report.html" in capsys.readouterr().out
    out = write_report(run, tmp_path / "elsewhere" / "r.html", views=False)
    assert out.read_text().startswith("<!DOCTYPE html>")


def make_model_run(root: Path, model, model_dir: Path) -> Path:
    """A run directory with examples, features, splits and a probe of a tiny real model."""
    from hlens.features import CETTConfig, extract_features, write_examples
    from hlens.probe import NeuronProbe
    from hlens.prompts import PromptFormat

    run = make_run(root, steer=False, explain=False, origin=False)
    names = [
        "Ada Vell",
        "Bo Lind",
        "Cy Moor",
        "Di Park",
        "Ed Quill",
        "Fa Rune",
        "Gus Tam",
        "Hal Ux",
    ]
    exs = []
    for i, name in enumerate(names):
        resp = f"{name} was born in Korin."
        start = resp.index("Korin")
        exs.append(
            Example(
                f"Where was {name} born?",
                resp,
                (start, start + 5),
                id=f"q{i}",
                label="hallucinated" if i % 2 else "faithful",
            )
        )
    write_examples(exs, run / "examples.jsonl")
    fmt = PromptFormat(instruction="")  # as hlens find renders them
    cfg = CETTConfig()
    (run / "config.json").write_text(
        json.dumps(FindConfig(model=str(model_dir), cett=cfg).to_dict())
    )
    store = extract_features(model, exs, run / "features", cfg, fmt=fmt, progress=False)
    X = store.load("answer", [e.id for e in exs], flat=True)
    y = np.array([1 if e.label == "hallucinated" else 0 for e in exs])
    probe = NeuronProbe(C=1.0, solver="liblinear", n_layers=model.n_layers, d_mlp=model.d_mlp)
    probe.fit(X.numpy(), y).save(run / "probe")
    ids = [e.id for e in exs]
    splits = {
        "train": {"t": ids[0:4:2], "f": ids[1:4:2]},
        "test": {"t": ids[4::2], "f": ids[5::2]},
        "seed": 0,
        "test_fraction": 0.5,
    }
    (run / "splits.json").write_text(json.dumps(splits))
    h = probe.h_neurons_
    if not len(h):  # make sure there is something to show
        h = NeuronSet.from_flat([0, 1], n_layers=model.n_layers, d_mlp=model.d_mlp)
    h.save(run / "h_neurons.json")
    return run


def test_report_with_model_views(tmp_path, llama, checkpoint_dir, monkeypatch):
    import hlens

    monkeypatch.setattr(hlens, "load", lambda *a, **k: llama)  # reuse the session model
    run = make_model_run(tmp_path / "run", llama, checkpoint_dir("llama"))
    text = build_report(run, n_examples=4)
    assert "<section id='views'>" in text, text[-3000:]
    assert "could not be rendered" not in text
    for comp in ("ColoredTokens", "TextNeuronActivations", "TopkSamples"):
        assert f"CircuitsVis.{comp}" in text
    assert "Where was Ed Quill born?" in text  # a test question is shown
    assert text.count("data:image/png;base64,") >= 3  # per layer, C path, ROC


def test_steer_fluency_verdict_and_explain_agreement_are_shown(tmp_path):
    run = make_run(tmp_path / "run", find=False, origin=False)
    s = json.loads((run / "steer" / "summary.json").read_text())
    s["fluency"] = {
        "h_neurons": {"0": {"perplexity": 183.2, "fluent_share": 0.61, "known_accuracy": 0.42}},
        "random_seed0": {"0": {"perplexity": 131.5, "fluent_share": 0.88, "known_accuracy": 0.97}},
    }
    s["verdict"] = "In 1 of 1 compliance suites (false_premise) the slope lies outside."
    s["verdicts"] = {"false_premise": "false_premise: lies above the random sets' interval."}
    s["licences"] = {"false_premise": "MIT; shipped"}
    (run / "steer" / "summary.json").write_text(json.dumps(s))
    cards = json.loads((run / "explain" / "cards.json").read_text())
    cards[0]["correlations"] = {"hallucinated": 0.31, "span_tokens": -0.07, "answer_logprob": 0.12}
    (run / "explain" / "cards.json").write_text(json.dumps(cards))
    agree = {
        "pearson": 0.9936, "spearman": 0.9925, "top_overlap": 0.96, "top": 50, "n": 2034,
        "n_pairs": 8, "n_neurons": 2034, "n_random": 2000, "n_h_neurons": 34,
        "of_neurons": 46080, "exact_seconds": 25.1, "atp_seconds": 2.9,
        "h_neurons": {"pearson": 0.9735, "spearman": 0.9465, "top_overlap": 1.0, "top": 34,
                      "n": 34},
    }  # fmt: skip
    together = {
        "n_neurons": 34,
        "baseline": {"perplexity": 127.7},
        "ablated": {"perplexity": 197.4},
        "delta": {"perplexity": 69.7},
    }
    ExplainResult(
        model="organism", neurons="h.json", n_cards=1, atp_vs_exact=agree, ablation_all=together
    ).save(run / "explain" / "summary.json")
    text = build_report(run, views=False)
    for part in ("183.2 (131.5)", "0.42 (0.97)", "In 1 of 1 compliance suites", "MIT; shipped",
                 "label +0.31", "length -0.07", "conf. +0.12", "0.994", "0.947", "2000 neurons",
                 "all 34 H-neurons at once", "+69.700", "truncated / unparsed"):  # fmt: skip
        assert part in text, part


def test_every_file_the_report_reads_round_trips_and_refuses_unknown_fields(tmp_path):
    """summary.json, steer/summary.json, origin/summary.json, explain/summary.json and cards.json,
    h_neurons.json and splits.json: each is read back as its typed result, equal, and a copy with
    one unknown field is refused with a message naming it."""
    from hlens.explain import read_cards
    from hlens.splits import Splits

    run = make_run(tmp_path / "run")
    ExplainResult(model="m", neurons="h.json", n_cards=1).save(run / "explain" / "summary.json")
    Splits(("a",), ("b",), ("c",), ("d",), seed=0, test_fraction=0.5).save(run / "splits.json")
    readers = {
        "summary.json": FindResult.load,
        "steer/summary.json": SteerResult.load,
        "origin/summary.json": OriginResult.load,
        "explain/summary.json": ExplainResult.load,
        "h_neurons.json": NeuronSet.load,
        "splits.json": Splits.load,
    }
    for name, load in readers.items():
        obj = load(run / name)
        assert obj.to_dict() == load(run / name).to_dict(), name
        d = json.loads((run / name).read_text())
        (run / name).write_text(json.dumps({**d, "surprise": 1}))
        with pytest.raises(ValueError, match="unknown field 'surprise'"):
            load(run / name)
    assert read_cards(run / "explain")[0].neuron.index == 3
    cards = json.loads((run / "explain" / "cards.json").read_text())
    (run / "explain" / "cards.json").write_text(json.dumps([{**cards[0], "surprise": 1}]))
    with pytest.raises(ValueError, match="unknown field 'surprise'"):
        read_cards(run / "explain")
    text = build_report(run, views=False)  # a refused file is a section error, not a crash
    assert "could not be rendered" in text and "surprise" in text
