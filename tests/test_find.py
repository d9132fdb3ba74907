"""The identification pipeline end to end on a tiny model, with a controllable question source."""

from __future__ import annotations

import json

import pytest
import torch

import hlens
from hlens.features import CETTConfig, FeatureStore
from hlens.identify import FindConfig, FindResult, find
from hlens.judge import Judgement
from hlens.sampling import SamplingConfig
from hlens.sources import SOURCES, QuestionSource, register_source


def _fake_source(n=48):
    """Questions whose label is fixed by id (even: faithful), so the filter keeps all of them."""
    questions = [
        hlens.Example(
            f"Where was person {i} born?", id=f"q{i}", answers=("Korin",), meta={"g": i // 2}
        )
        for i in range(n)
    ]

    def judge(example, response):
        text = response.strip()
        if not text:
            return Judgement("uncertain", reason="empty")
        label = "faithful" if int(example.id[1:]) % 2 == 0 else "hallucinated"
        return Judgement(label, span=(0, len(text)))

    def factory(**_):
        ood = [hlens.Example(f"Who is nobody {i}?", id=f"o{i}", meta={}) for i in range(8)]
        return QuestionSource(
            "fake",
            questions,
            judge,
            groups={q.id: str(q.meta["g"]) for q in questions},
            strata={q.id: "early" if int(q.id[1:]) < n // 2 else "late" for q in questions},
            ood_questions=ood,
            ood_judge=judge,
            spans="judge",  # the judge's span: the whole response, in both classes
        )

    return factory


@pytest.fixture
def fake_source():
    register_source("fake", _fake_source())
    yield "fake"
    SOURCES.pop("fake")


def _config(checkpoint_dir, **kw):
    return FindConfig(
        model=str(checkpoint_dir("llama")),
        dataset="fake",
        sampling=SamplingConfig(n_samples=2, max_new_tokens=4, temperature=0.0, batch_size=16),
        cett=CETTConfig(batch_size=8, shard_size=16),
        n_random_seeds=2,
        n_boot=50,
        Cs=(1.5, 3.0, 10.0),
        device="cpu",
        degenerate_threshold=None,  # a tiny random model repeats itself; the fake judge decides
        **kw,
    )


def test_find_writes_a_complete_run(checkpoint_dir, fake_source, tmp_path):
    s = find(_config(checkpoint_dir), tmp_path, progress=False)
    for name in [
        "summary.json",
        "h_neurons.json",
        "splits.json",
        "samples.jsonl",
        "consistency_samples.jsonl",
        "probe/probe.json",
        "features/manifest.json",
        "judgements.json",
    ]:
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "summary.json").read_text()) == s.to_dict()
    assert FindResult.load(tmp_path / "summary.json") == s
    assert s.h_neurons.count == len(hlens.NeuronSet.load(tmp_path / "h_neurons.json"))
    assert 0 <= s.h_neurons.fraction <= 1
    for key in ["accuracy", "auroc", "auroc_ci"]:
        assert key in s.metrics["test"]
    assert {"Cs", "n_positive", "auroc"} <= set(s.c_path)
    f = s.funnel
    assert f.n_questions == 48 and f.n_consistent_faithful + f.n_consistent_hallucinated <= 48
    splits = hlens.splits.Splits.load(tmp_path / "splits.json")
    assert not set(splits.train_ids) & set(splits.test_ids)
    # groups (pairs of questions) never straddle train and test
    g = lambda q: int(q[1:]) // 2  # noqa: E731
    assert not {g(q) for q in splits.train_ids} & {g(q) for q in splits.test_ids}
    # the question-type control covers every test example once
    c = s.controls["strata"]
    assert set(c["per_stratum"]) <= {"early", "late"}
    assert sum(v["n"] for v in c["per_stratum"].values()) == f.n_test
    assert 0 <= c["strata_only_auroc"] <= 1


def test_find_rerun_resumes_without_recomputing(checkpoint_dir, fake_source, tmp_path, monkeypatch):
    cfg = _config(checkpoint_dir)
    find(cfg, tmp_path, progress=False)
    before = FeatureStore(tmp_path / "features").load("answer")
    import hlens.features as F
    import hlens.sampling as S

    def boom(*a, **k):
        raise AssertionError("finished work was recomputed")

    monkeypatch.setattr(F, "features_for_batch", boom)
    monkeypatch.setattr(S, "_generate", boom)
    find(cfg, tmp_path, progress=False)
    assert torch.equal(FeatureStore(tmp_path / "features").load("answer"), before)


def test_find_config_validation_and_round_trip():
    cfg = FindConfig(limit=10)
    assert FindConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="multiples of C_min"):
        FindConfig(Cs=(0.5, 2.0))
    with pytest.raises(ValueError, match="test_fraction"):
        FindConfig(test_fraction=1.5)


def test_unknown_dataset_lists_sources():
    from hlens.sources import get_source

    with pytest.raises(ValueError, match="organism, samples, triviaqa"):
        get_source("nope")


def test_strata_must_cover_every_question():
    qs = [hlens.Example("Where?", id="a"), hlens.Example("When?", id="b")]
    with pytest.raises(ValueError, match="1 ids have none, e.g. \\['b'\\]"):
        QuestionSource("s", qs, lambda e, r: Judgement("uncertain"), strata={"a": "place"})
    assert QuestionSource("s", qs, lambda e, r: None, strata={"a": "x", "b": "y"}).strata


@pytest.mark.organism
def test_organism_questions_are_stratified_by_attribute():
    from hlens.sources import get_source

    src = get_source("organism", limit=40)
    assert all(src.strata[q.id] == q.meta["attribute"] for q in src.questions)


def test_sampling_defaults_come_from_the_source():
    from hlens.sources import source_sampling

    paper = source_sampling("triviaqa")
    assert (paper.n_samples, paper.temperature, paper.top_p, paper.top_k, paper.max_new_tokens) == (
        10,
        1.0,
        0.9,
        50,
        50,
    )
    organism = source_sampling("organism", n_samples=4)
    assert organism.max_new_tokens == 16 and organism.n_samples == 4
    assert FindConfig().sampling is None  # resolved against the source inside find()


def _planted_checkpoint(src, dst, layer=0, neuron=5, scale=8.0, seed=0):
    """A copy of a tiny Llama with a known H-neuron: odd token ids share an extra embedding
    direction ``e``, and ``neuron`` of ``layer`` reads ``e`` through its gate and up rows, so it
    fires on odd tokens and stays silent on even ones."""
    import shutil

    from transformers import AutoModelForCausalLM

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        e = torch.randn(emb.shape[1], generator=g)
        e = e / e.norm()
        emb[1::2] += scale * emb.norm(dim=1).mean() * e
        mlp = model.model.layers[layer].mlp
        mlp.gate_proj.weight[neuron] = 4.0 * e
        mlp.up_proj.weight[neuron] = 4.0 * e
    model.save_pretrained(dst)
    return layer, neuron


def _parity_source(tokenizer, n=160):
    """Labels from the model's own first answer token: odd id -> hallucinated, even -> faithful.

    The answer span is that first token, so a neuron that fires on odd tokens predicts the label.
    """

    def judge(example, response):
        enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        spans = [(a, b) for a, b in enc["offset_mapping"] if b > a]
        if not spans:
            return Judgement("uncertain", reason="empty")
        first = enc["input_ids"][enc["offset_mapping"].index(spans[0])]
        return Judgement("hallucinated" if first % 2 else "faithful", span=spans[0])

    questions = [hlens.Example(f"Tell me fact {i}.", id=f"q{i}", meta={}) for i in range(n)]

    def factory(**_):
        strata = {q.id: f"kind{int(q.id[1:]) % 3}" for q in questions}
        return QuestionSource("parity", questions, judge, strata=strata, spans="judge")

    return factory


@pytest.mark.slow
def test_find_recovers_a_planted_h_neuron(checkpoint_dir, tmp_path):
    """End to end (sampling, judging, spans, CETT, probe): a neuron built to predict the label is
    found, the held-out AUROC clears the organism criterion (0.75) and beats random neurons."""
    from transformers import AutoTokenizer

    ckpt = tmp_path / "planted"
    layer, neuron = _planted_checkpoint(checkpoint_dir("llama"), ckpt)
    register_source("parity", _parity_source(AutoTokenizer.from_pretrained(ckpt)))
    try:
        cfg = FindConfig(
            model=str(ckpt),
            dataset="parity",
            sampling=SamplingConfig(n_samples=1, max_new_tokens=3, temperature=1.0, batch_size=32),
            cett=CETTConfig(batch_size=16, shard_size=64),
            n_random_seeds=3,
            n_boot=100,
            device="cpu",
        )
        s = find(cfg, tmp_path / "run", progress=False)
    finally:
        SOURCES.pop("parity")
    f = s.funnel
    assert min(f.n_consistent_faithful, f.n_consistent_hallucinated) >= 40, f
    found = hlens.NeuronSet.load(tmp_path / "run" / "h_neurons.json")
    assert (layer, neuron) in {(n.layer, n.index) for n in found}
    assert s.metrics["test"]["auroc"] >= 0.9
    assert s.metrics["test"]["auroc_ci"][0] >= 0.75
    assert s.metrics["test"]["accuracy"] >= s.baselines["random_neurons"]["accuracy"] + 0.1
    # the question "kind" says nothing about the label; the signal holds within each kind
    strata = s.controls["strata"]
    assert strata["within_strata_auroc"] >= 0.9
    assert strata["strata_only_auroc"] < strata["within_strata_auroc"]


def test_file_dataset_with_its_own_columns_and_a_question_type(tmp_path):
    from hlens.sources import get_source

    path = tmp_path / "qa.csv"
    path.write_text(
        "id,problem,answer,topic\n"
        "a1,Where was Ada born?,Korin|Korin City,Geography\n"
        "a2,Who wrote Zeta?,Mira Vell,Art\n"
    )
    src = get_source(str(path), question_col="problem", answers_col="answer", strata_col="topic")
    assert [q.id for q in src.questions] == ["a1", "a2"]
    assert src.questions[0].answers == ("Korin", "Korin City")
    assert src.strata == {"a1": "Geography", "a2": "Art"}
    assert get_source(str(path), question_col="problem", answers_col="answer").strata is None
    with pytest.raises(ValueError, match=r"strata column 'kind' is missing .*\['topic'\]"):
        get_source(str(path), question_col="problem", answers_col="answer", strata_col="kind")
    with pytest.raises(ValueError, match="no column 'question'"):
        get_source(str(path))


def test_column_options_are_refused_for_registered_sources(tmp_path):
    # refused before the model is loaded (this model does not exist)
    cfg = FindConfig(model=str(tmp_path / "no-model"), dataset="organism", strata_col="topic")
    with pytest.raises(ValueError, match="strata_col apply to JSONL/CSV datasets"):
        find(cfg, tmp_path / "run", progress=False)


def test_cli_passes_the_column_options(monkeypatch, tmp_path):
    import argparse
    import importlib

    find_mod = importlib.import_module("hlens.cli.find")

    seen = {}

    def fake_find(cfg, out, progress=True):
        seen["cfg"] = cfg
        raise KeyboardInterrupt  # stop before printing a summary

    p = argparse.ArgumentParser()
    find_mod.add_arguments(p)
    argv = "--dataset qa.csv --question-col problem --answers-col answer --strata-col topic"
    args = p.parse_args([*argv.split(), "--out", str(tmp_path)])
    monkeypatch.setattr(find_mod, "find", fake_find)
    with pytest.raises(KeyboardInterrupt):
        find_mod.run(args)
    cfg = seen["cfg"]
    assert (cfg.question_col, cfg.answers_col, cfg.strata_col) == ("problem", "answer", "topic")
    assert FindConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.sampling.noise == "mt19937"
    args = p.parse_args([*argv.split(), "--out", str(tmp_path), "--noise", "counter"])
    with pytest.raises(KeyboardInterrupt):
        find_mod.run(args)
    assert seen["cfg"].sampling.noise == "counter"


def test_a_run_made_before_the_noise_option_resumes(tmp_path):
    """config.json written before ``SamplingConfig.noise`` existed reads as ``mt19937`` (how it
    was sampled), so the run resumes with the defaults and not with ``--noise counter``."""
    from hlens.errors import HlensInputError
    from hlens.runlock import check_settings

    cfg = FindConfig(sampling=SamplingConfig(n_samples=2))
    old = cfg.to_dict()
    del old["sampling"]["noise"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    check_settings(path, cfg.to_dict(), command="hlens find", upgrade=FindConfig.upgrade_dict)
    assert FindConfig.from_dict(old) == cfg
    counter = FindConfig(sampling=SamplingConfig(n_samples=2, noise="counter"))
    with pytest.raises(HlensInputError, match="sampling.noise"):
        check_settings(
            path, counter.to_dict(), command="hlens find", upgrade=FindConfig.upgrade_dict
        )


# ----------------------------------------------------------------------------- the span artefact


TOWNS = ("Paris", "London", "Madrid", "Lisbon", "Vienna", "Prague")


def _sentence_source(n=96):
    """Questions judged by the rule judge; responses are written by the test (see below)."""
    from hlens.judge import RuleJudge

    questions = [
        hlens.Example(f"Where was person {i} born?", id=f"q{i}", answers=(TOWNS[i % 6],))
        for i in range(n)
    ]
    return lambda **_: QuestionSource("sentences", questions, RuleJudge())


def _sentences(path, model, tokenizer, prompts, ids, config, progress=True):
    """Answers in sentences, as SmolLM2 gives them: even ids right, odd ids wrong, both drawn
    from the same towns (so right and wrong answers have the same lengths)."""
    out = []
    for qid in ids:
        i = int(qid[1:])
        town = TOWNS[i % 6] if i % 2 == 0 else TOWNS[(i + 1) % 6]
        r = f"Person {i} was born in {town}, in the north."
        out.append({"id": qid, "responses": [r] * config.n_samples,
                    "truncated": [False] * config.n_samples})  # fmt: skip
    return out


@pytest.mark.parametrize("spans", ["alias", "rules"])
def test_the_span_artefact_is_caught_and_label_blind_spans_remove_it(
    checkpoint_dir, tmp_path, monkeypatch, spans
):
    """With alias spans (faithful: the alias; hallucinated: the whole response) the span length
    alone separates the classes and hlens says the probe's result is not a finding; with the
    label-blind rules the spans mean the same in both classes and span length explains nothing."""
    import importlib

    from hlens.identify import confound_lines

    F = importlib.import_module("hlens.identify.stages")  # where _sample looks it up
    monkeypatch.setattr(F, "sample_to_jsonl", _sentences)
    register_source("sentences", _sentence_source())
    try:
        cfg = _config(checkpoint_dir, spans=spans)
        cfg = FindConfig.from_dict({**cfg.to_dict(), "dataset": "sentences"})
        s = find(cfg, tmp_path, progress=False)
    finally:
        SOURCES.pop("sentences")
    conf = s.controls["confounds"]
    gap = s.spans["whole_response_share_gap"]
    span_auroc = conf["controls"]["span_tokens"]["auroc"]
    if spans == "alias":
        assert not s.spans["label_blind"]
        assert gap == 1.0 and span_auroc == 1.0
        assert "span_tokens" in conf["flagged"]
        assert any(line.startswith("WARNING: NOT A FINDING") for line in confound_lines(s))
    else:
        assert s.spans["label_blind"] and gap == 0.0
        assert s.spans["by_class"]["faithful"]["steps"]["new_phrase"] > 0
        assert span_auroc <= 0.65
    assert set(conf["controls"]) >= {"span_tokens", "response_tokens", "truncated", "span_start",
                                     "answer_logprob", "answer_entropy"}  # fmt: skip
    assert "within_strata_auroc" in conf["length_bins"]


def test_degenerate_outputs_stop_the_run_before_the_probe(checkpoint_dir, fake_source, tmp_path):
    """A tiny random model decoding greedily repeats one string: flagged, and no probe is fit."""
    cfg = FindConfig.from_dict({**_config(checkpoint_dir).to_dict(), "degenerate_threshold": 0.5})
    with pytest.raises(ValueError, match="degenerate"):
        find(cfg, tmp_path, progress=False)
    judged = json.loads((tmp_path / "judgements.json").read_text())
    assert judged["degenerate"]["degenerate"] is True
    assert not (tmp_path / "probe").exists() and not (tmp_path / "summary.json").exists()


def test_find_starts_from_responses_sampled_elsewhere(checkpoint_dir, tmp_path, monkeypatch):
    """--samples: an official consistency_samples.jsonl (here a slice of a Gemma-3-4B
    reproduction's, sampled with vLLM) replaces sampling; questions and gold answers come from
    the file, hlens judges the responses and scores neurons on the given model."""
    import importlib
    from pathlib import Path

    S = importlib.import_module("hlens.sampling")

    def boom(*a, **k):
        raise AssertionError("sampling ran although --samples was given")

    monkeypatch.setattr(S, "_generate", boom)
    rows = (Path(__file__).parent / "fixtures" / "gemma3_consistency_slice.jsonl").read_text()
    short = [  # the tiny model's context is 64 tokens
        line
        for line in rows.splitlines()
        if all(
            len(v["question"]) < 96 and max(map(len, v["responses"])) < 20
            for v in json.loads(line).values()
        )
    ]
    path = tmp_path / "consistency_samples_in.jsonl"
    path.write_text("\n".join(short) + "\n")
    tmp_path = tmp_path / "run"
    cfg = FindConfig.from_dict(
        {
            **_config(checkpoint_dir).to_dict(),
            "dataset": None,
            "samples": str(path),
            "instruction": "",
        }
    )
    assert cfg.dataset == "samples"
    s = find(cfg, tmp_path, progress=False)
    f = s.funnel
    assert f.n_questions == len(short) == 24
    assert f.n_samples_total == 240  # 10 responses each
    assert min(f.n_consistent_faithful, f.n_consistent_hallucinated) >= 4
    first = json.loads(path.read_text().splitlines()[0])
    ((qid, rec),) = first.items()
    store = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "samples.jsonl").open()}
    assert store[qid]["responses"] == rec["responses"]
    # the paper's instruction is not part of the question hlens renders
    ex = next(json.loads(x) for x in (tmp_path / "examples.jsonl").open())
    assert not ex["question"].endswith("without any explanation.")


def test_probe_fit_is_the_run_s_probe_and_its_sets(
    checkpoint_dir, fake_source, tmp_path, monkeypatch
):
    """ProbeFit (what _fit_probe returns) refits the run's probe, its sets are those of
    probe_training_set and the answer region, and h_neurons() is the run's h_neurons.json."""
    import importlib

    import numpy as np

    from hlens.splits import Splits

    F = importlib.import_module("hlens.identify.fit")
    cfg = _config(checkpoint_dir)
    s = find(cfg, tmp_path, progress=False)
    store = FeatureStore(tmp_path / "features")
    splits = Splits.load(tmp_path / "splits.json")
    groups = {q: str(int(q[1:]) // 2) for q in splits.train_ids}
    fit = F._fit_probe(store, splits, groups, cfg, {})
    assert isinstance(fit, F.ProbeFit) and fit.contrast == "3-vs-1"
    assert fit.C == s.probe.C and fit.c_min == s.probe.c_min
    assert fit.path.to_dict()["Cs"] == s.c_path["Cs"]
    f, h = list(splits.train_faithful), list(splits.train_hallucinated)
    X, y = fit.training_set(f, h)
    X_ref, y_ref = F.probe_training_set(store, f, h, "3-vs-1")
    assert torch.equal(X, X_ref) and np.array_equal(y, y_ref)
    X, y = fit.answer_set(splits.test_faithful, splits.test_hallucinated)
    want = store.load("answer", [*splits.test_faithful, *splits.test_hallucinated], flat=True)
    assert torch.equal(X, want) and y.tolist() == [0] * len(splits.test_faithful) + [1] * len(
        splits.test_hallucinated
    )
    saved = hlens.NeuronSet.load(tmp_path / "h_neurons.json")
    mine = fit.h_neurons(cfg.model, "fake")
    assert mine.neurons == saved.neurons and mine.weights == saved.weights
    assert {k: mine.meta[k] for k in ("model", "dataset", "C")} == {
        k: saved.meta[k] for k in ("model", "dataset", "C")
    }
    # the real-probe benchmark refits a finished run through ProbeFit too (it once read the dict)
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    monkeypatch.setenv("HLENS_BENCH_RUN", str(tmp_path))
    from benchmarks import bench_probe_real

    res = bench_probe_real.run(quick=True)
    assert "skipped" not in res and "error" not in res, res
    assert res["final_fit"]["converged"] is True and res["objective_within_1e-4"] is True
