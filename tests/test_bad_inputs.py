"""The catalogue of bad inputs (docs/bad_inputs.md): one test per row.

Command-line rows run ``hlens.cli.main`` in this process (a subprocess test checks the real exit
status and stderr once) and assert the contract of :mod:`hlens.errors`: exit status 2, exactly
one stderr line starting ``hlens <command>: error:``, no traceback, and no file written or
changed anywhere under the test's directory. Library rows assert the exception and its message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hlens
from hlens.cli import main
from hlens.errors import HlensInputError

_CACHE: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _fast_organism(monkeypatch):
    """Load the bundled models once: every command here would otherwise load them again."""
    real = hlens.load

    def load(source, **kwargs):
        if isinstance(source, str) and source in ("organism", "organism-base"):
            if source not in _CACHE:
                _CACHE[source] = real(source, device="cpu")
            return _CACHE[source]
        return real(source, **kwargs)

    monkeypatch.setattr(hlens, "load", load)
    load("organism")  # now, so that its loading bar is not part of a test's stderr


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "d"
        for p in sorted(root.rglob("*"))
    }


def fails(capsys, root: Path, command: str, argv: list[str], *needles: str) -> str:
    """Run ``hlens ARGV``; check the one-line user-error contract; return the message."""
    capsys.readouterr()
    before = _snapshot(root)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hlens {command}: error: "), err
    assert "Traceback" not in err
    assert _snapshot(root) == before, "a failed start wrote files"
    for n in needles:
        assert n in lines[0], lines[0]
    if os.environ.get("HLENS_BAD_INPUTS_LOG"):  # to refresh docs/bad_inputs.md
        with open(os.environ["HLENS_BAD_INPUTS_LOG"], "a") as f:
            f.write(json.dumps([os.environ.get("PYTEST_CURRENT_TEST", ""), lines[0]]) + "\n")
    return lines[0]


@pytest.fixture
def organism_neurons(tmp_path):
    path = tmp_path / "h.json"
    hlens.NeuronSet((hlens.NeuronId(0, 1), hlens.NeuronId(3, 7)), 4, 512).save(path)
    return path


@pytest.fixture
def qa(tmp_path):
    def write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


def _ckpt(checkpoint_dir, tmp_path, name="ckpt") -> Path:
    dst = tmp_path / name
    shutil.copytree(checkpoint_dir("llama"), dst)
    return dst


# ----------------------------------------------------------------------------- load: models
def test_find_model_missing_dir(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--model", str(tmp_path / "nope"), "--out",
          str(tmp_path / "X")], "no checkpoint directory", "expected a bundled model")  # fmt: skip
    assert not (tmp_path / "X").exists()


def test_find_model_unknown_hub_id_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails(capsys, tmp_path, "find", ["find", "--model", "not-a-model", "--out",
          str(tmp_path / "X")], "could not load 'not-a-model'")  # fmt: skip


def test_find_model_dir_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    fails(capsys, tmp_path, "find", ["find", "--model", str(tmp_path / "empty"), "--out",
          str(tmp_path / "X")], "has no config.json")  # fmt: skip


def test_find_model_is_a_file(capsys, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"x")
    fails(capsys, tmp_path, "find", ["find", "--model", str(tmp_path / "m.bin"), "--out",
          str(tmp_path / "X")], "is a file")  # fmt: skip


def test_find_model_corrupt_safetensors(capsys, tmp_path, checkpoint_dir):
    ck = _ckpt(checkpoint_dir, tmp_path)
    (ck / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    fails(capsys, tmp_path, "find", ["find", "--model", str(ck), "--out", str(tmp_path / "X")],
          "damaged or truncated")  # fmt: skip


def test_find_model_truncated_safetensors(capsys, tmp_path, checkpoint_dir):
    ck = _ckpt(checkpoint_dir, tmp_path)
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    fails(capsys, tmp_path, "find", ["find", "--model", str(ck), "--out", str(tmp_path / "X")],
          "damaged or truncated")  # fmt: skip


def test_find_model_corrupt_config(capsys, tmp_path, checkpoint_dir):
    ck = _ckpt(checkpoint_dir, tmp_path)
    (ck / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], ')
    fails(capsys, tmp_path, "find", ["find", "--model", str(ck), "--out", str(tmp_path / "X")],
          "config.json is not readable JSON")  # fmt: skip


def test_find_model_unsupported_architecture(capsys, tmp_path, checkpoint_dir):
    ck = _ckpt(checkpoint_dir, tmp_path)
    cfg = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({**cfg, "architectures": ["FooForCausalLM"]}))
    fails(capsys, tmp_path, "find", ["find", "--model", str(ck), "--out", str(tmp_path / "X")],
          "FooForCausalLM")  # fmt: skip


# ------------------------------------------------------------------------------ find: options
def test_find_limit_zero(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--limit", "0", "--out", str(tmp_path / "X")],
          "--limit 0", "[1, inf]")  # fmt: skip


def test_find_negative_temperature(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--temperature", "-1", "--out",
          str(tmp_path / "X")], "--temperature -1")  # fmt: skip


def test_find_batch_size_zero(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--batch-size", "0", "--out", str(tmp_path / "X")],
          "--batch-size 0")  # fmt: skip


def test_find_bad_choice_is_one_line(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--contrast", "2-vs-1", "--out", str(tmp_path / "X")],
          "invalid choice")  # fmt: skip


def test_find_column_option_for_registered_source(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--question-col", "q", "--out",
          str(tmp_path / "X")], "registered source")  # fmt: skip


# ------------------------------------------------------------------------------ find: datasets
def test_find_unknown_dataset(capsys, tmp_path):
    fails(capsys, tmp_path, "find", ["find", "--dataset", "trivia", "--out",
          str(tmp_path / "X")], "unknown dataset 'trivia'")  # fmt: skip


def test_find_empty_dataset(capsys, tmp_path, qa):
    data = qa("empty.jsonl", "")
    fails(capsys, tmp_path, "find", ["find", "--dataset", str(data), "--out",
          str(tmp_path / "X")], "holds no questions")  # fmt: skip


def test_find_dataset_bad_jsonl_line(capsys, tmp_path, qa):
    data = qa("bad.jsonl", '{"question": "Q?", "answers": ["a"]}\n{"question": \n')
    fails(capsys, tmp_path, "find", ["find", "--dataset", str(data), "--out",
          str(tmp_path / "X")], "bad.jsonl:2 is not valid JSON")  # fmt: skip


def test_find_dataset_csv_missing_column(capsys, tmp_path, qa):
    data = qa("qa.csv", "problem,answer\nWho?,Ada\n")
    fails(capsys, tmp_path, "find", ["find", "--dataset", str(data), "--out",
          str(tmp_path / "X")], "no column 'question'", "problem")  # fmt: skip


def test_find_dataset_duplicate_ids(capsys, tmp_path, qa):
    rows = [{"id": "q1", "question": f"Q{i}?", "answers": ["a"]} for i in range(3)]
    data = qa("dup.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    fails(capsys, tmp_path, "find", ["find", "--dataset", str(data), "--out",
          str(tmp_path / "X")], "unique id")  # fmt: skip


def test_find_dataset_missing_strata_column(capsys, tmp_path, qa):
    data = qa("qa.jsonl", json.dumps({"question": "Q?", "answers": ["a"]}) + "\n")
    fails(capsys, tmp_path, "find", ["find", "--dataset", str(data), "--strata-col", "topic",
          "--out", str(tmp_path / "X")], "strata column 'topic'")  # fmt: skip


# ------------------------------------------------------------------------ find: run directories
def test_find_resume_with_other_options(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    from hlens.identify import FindConfig
    from hlens.sources import source_sampling

    cfg = FindConfig(model="organism", sampling=source_sampling("organism"), seed=0)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    fails(capsys, tmp_path, "find", ["find", "--seed", "1", "--out", str(out)],
          "other settings", "seed: 0 there, 1 now")  # fmt: skip


def test_find_run_dir_of_another_model(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    from hlens.identify import FindConfig
    from hlens.sources import source_sampling

    cfg = FindConfig(model="organism-base", sampling=source_sampling("organism"))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    fails(capsys, tmp_path, "find", ["find", "--out", str(out)],
          'model: "organism-base" there, "organism" now')  # fmt: skip


def test_find_run_dir_in_use(capsys, tmp_path):
    from hlens.runlock import acquire

    out = tmp_path / "run"
    with acquire(out):
        fails(capsys, tmp_path, "find", ["find", "--out", str(out)], f"in use by pid {os.getpid()}")


def test_find_damaged_config_json(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{")
    fails(capsys, tmp_path, "find", ["find", "--out", str(out)], "not readable JSON")


# ----------------------------------------------------------------------------------- steer
def test_steer_neurons_not_json(capsys, tmp_path, qa):
    bad = qa("bad.jsonl", '{"a": 1}{"b": 2}\n')
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(bad), "--out",
          str(tmp_path / "X")], "--neurons", "Extra data", "NeuronSet JSON")  # fmt: skip


def test_steer_neurons_missing(capsys, tmp_path):
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(tmp_path / "h.json"), "--out",
          str(tmp_path / "X")], "no NeuronSet file")  # fmt: skip


def test_steer_neurons_of_another_model(capsys, tmp_path):
    h = tmp_path / "h.json"
    hlens.NeuronSet((hlens.NeuronId(7, 1000),), 8, 2048).save(h)
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(h), "--out",
          str(tmp_path / "X")], "--neurons")  # fmt: skip


def test_steer_alpha_out_of_range(capsys, tmp_path, organism_neurons):
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(organism_neurons), "--alphas",
          "0", "5", "--out", str(tmp_path / "X")], "--alphas 5", "[0, 3]")  # fmt: skip


def test_steer_alpha_nan(capsys, tmp_path, organism_neurons):
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(organism_neurons), "--alphas",
          "nan", "--out", str(tmp_path / "X")], "--alphas nan")  # fmt: skip


def test_steer_alpha_not_a_number(capsys, tmp_path, organism_neurons):
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(organism_neurons), "--alphas",
          "x", "--out", str(tmp_path / "X")], "invalid float value")  # fmt: skip


def test_steer_unknown_suite(capsys, tmp_path, organism_neurons):
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(organism_neurons), "--suites",
          "perplexty", "--out", str(tmp_path / "X")], "unknown suite 'perplexty'")  # fmt: skip


def test_steer_resume_with_other_settings(capsys, tmp_path, organism_neurons):
    out = tmp_path / "steer"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"model": "organism", "n_random": 9}))
    (out / "cells.jsonl").write_text("")
    fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(organism_neurons), "--out",
          str(out)], "other settings", "n_random: 9 there, 3 now")  # fmt: skip


def test_steer_run_dir_in_use(capsys, tmp_path, organism_neurons):
    from hlens.runlock import acquire

    out = tmp_path / "steer"
    with acquire(out):
        fails(capsys, tmp_path, "steer", ["steer", "--neurons", str(organism_neurons), "--out",
              str(out)], "in use by pid")  # fmt: skip


# --------------------------------------------------------------------------------- explain
def test_explain_neurons_of_another_model(capsys, tmp_path):
    h = tmp_path / "h.json"
    hlens.NeuronSet((hlens.NeuronId(9, 3),), 12, 512).save(h)
    fails(capsys, tmp_path, "explain", ["explain", "--model", "organism", "--neurons", str(h),
          "--out", str(tmp_path / "X")], "--neurons")  # fmt: skip


def test_explain_examples_not_jsonl(capsys, tmp_path, organism_neurons, qa):
    ex = qa("ex.jsonl", "question,response\n")
    fails(capsys, tmp_path, "explain", ["explain", "--model", "organism", "--neurons",
          str(organism_neurons), "--examples", str(ex), "--out", str(tmp_path / "X")],
          "--examples")  # fmt: skip


def test_explain_k_zero(capsys, tmp_path, organism_neurons):
    fails(capsys, tmp_path, "explain", ["explain", "--model", "organism", "--neurons",
          str(organism_neurons), "--k", "0", "--out", str(tmp_path / "X")], "--k 0")  # fmt: skip


# ---------------------------------------------------------------------------------- origin
def test_origin_run_without_find(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    fails(capsys, tmp_path, "origin", ["origin", "--base", "organism-base", "--tuned",
          "organism", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "X")],
          "has no examples.jsonl", "hlens find")  # fmt: skip


def test_origin_base_missing(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "probe").mkdir(parents=True)
    for name in ("examples.jsonl", "splits.json", "h_neurons.json", "config.json"):
        (run / name).write_text("")
    fails(capsys, tmp_path, "origin", ["origin", "--base", str(tmp_path / "nope"), "--tuned",
          "organism", "--run", str(run), "--out", str(tmp_path / "X")],
          "--base", "no checkpoint directory")  # fmt: skip


# ---------------------------------------------------------------------------------- models
def test_models_unknown_option(capsys, tmp_path):
    fails(capsys, tmp_path, "models", ["models", "--jsn"], "unrecognized arguments: --jsn")


# ---------------------------------------------------------------------------------- report
def test_report_missing_dir(capsys, tmp_path):
    fails(capsys, tmp_path, "report", ["report", str(tmp_path / "nope")], "is not a directory")


def test_report_dir_without_results(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    fails(capsys, tmp_path, "report", ["report", str(tmp_path / "run")], "holds none of")


def test_report_corrupt_summary(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text('{"model": ')
    fails(capsys, tmp_path, "report", ["report", str(tmp_path / "run")], "not valid JSON")


# -------------------------------------------------------------------------------- the CLI
def test_unknown_command(capsys, tmp_path):
    capsys.readouterr()
    assert main(["fnd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hlens: error: argument COMMAND: invalid choice")


def test_debug_flag_keeps_the_traceback(capsys, tmp_path):
    capsys.readouterr()
    assert main(["--debug", "find", "--limit", "0", "--out", str(tmp_path / "X")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("hlens find: error:")


def test_subprocess_exit_status_and_stderr(tmp_path):
    """The real process: exit 2, one stderr line, nothing on stdout, no directory."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run(
        [sys.executable, "-m", "hlens.cli", "find", "--model", "/nonexistent/dir", "--out",
         str(tmp_path / "X")], env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("hlens find: error: ")
    assert not (tmp_path / "X").exists()


def test_a_bug_keeps_its_traceback_and_exits_1(tmp_path):
    code = (
        "import sys, hlens.cli.find\n"
        "def boom(args): raise RuntimeError('a bug')\n"
        "sys.modules['hlens.cli.find'].run = boom\n"
        "from hlens.cli import main\n"
        "sys.exit(main(['find', '--out', 'x']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert r.returncode == 1 and "Traceback" in r.stderr and "RuntimeError: a bug" in r.stderr


# ------------------------------------------------------------------ readers: official formats
def test_formats_consistency_line_not_json(tmp_path):
    from hlens.formats import read_consistency_samples

    (tmp_path / "c.jsonl").write_text('{"q1": {"question": "Q"\n')
    with pytest.raises(ValueError, match=r"c.jsonl:1 is not valid JSON"):
        read_consistency_samples(tmp_path / "c.jsonl")


def test_formats_consistency_record_lacks_keys(tmp_path):
    from hlens.formats import read_consistency_samples

    (tmp_path / "c.jsonl").write_text(json.dumps({"q1": {"question": "Q"}}) + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl:1: record 'q1' lacks \['responses', 'judges'\]"):
        read_consistency_samples(tmp_path / "c.jsonl")


def test_formats_consistency_responses_not_a_list(tmp_path):
    from hlens.formats import read_consistency_samples

    row = {"q1": {"question": "Q", "responses": 5, "judges": ["true"]}}
    (tmp_path / "c.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"c.jsonl:1: record 'q1': 'responses' must be a list"):
        read_consistency_samples(tmp_path / "c.jsonl")


def test_formats_answer_tokens_two_records_per_line(tmp_path):
    from hlens.formats import read_answer_tokens

    (tmp_path / "a.jsonl").write_text(json.dumps({"q1": {}, "q2": {}}) + "\n")
    with pytest.raises(ValueError, match=r"a.jsonl:1: each answer_tokens line must be one"):
        read_answer_tokens(tmp_path / "a.jsonl")


def test_formats_qids_not_json(tmp_path):
    from hlens.formats import read_qids

    (tmp_path / "qids.json").write_text('{"t": [1, 2],')
    with pytest.raises(ValueError, match=r"qids.json is not valid JSON"):
        read_qids(tmp_path / "qids.json")


def test_formats_qids_wrong_keys(tmp_path):
    from hlens.formats import read_qids

    (tmp_path / "qids.json").write_text(json.dumps({"true": [], "false": []}))
    with pytest.raises(ValueError, match=r"keys \['f', 't'\]"):
        read_qids(tmp_path / "qids.json")


def test_formats_qids_in_both_classes():
    from hlens.formats import qids_to_labels

    with pytest.raises(ValueError, match="both faithful and hallucinated"):
        qids_to_labels({"t": ["a", "b"], "f": ["b"]})


# --------------------------------------------------------------------- readers: CSV / JSONL
def test_datasets_unknown_extension(tmp_path):
    from hlens.datasets import load_qa_file

    (tmp_path / "qa.txt").write_text("Q?\n")
    with pytest.raises(ValueError, match=r"unknown extension '.txt'"):
        load_qa_file(tmp_path / "qa.txt")


def test_datasets_json_not_json(tmp_path):
    from hlens.datasets import load_qa_file

    (tmp_path / "qa.json").write_text('[{"question": "Q?"')
    with pytest.raises(ValueError, match=r"qa.json is not valid JSON"):
        load_qa_file(tmp_path / "qa.json")


def test_datasets_jsonl_row_not_an_object(tmp_path):
    from hlens.datasets import load_qa_file

    (tmp_path / "qa.jsonl").write_text('{"question": "Q?", "answers": ["a"]}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"qa.jsonl:2 is a list, not an object"):
        load_qa_file(tmp_path / "qa.jsonl")


def test_datasets_csv_empty_question(tmp_path):
    from hlens.datasets import load_qa_file

    (tmp_path / "qa.csv").write_text("question,answers\n,Ada\n")
    with pytest.raises(ValueError, match=r"row 0 has an empty 'question'"):
        load_qa_file(tmp_path / "qa.csv")


def test_datasets_not_utf8(tmp_path):
    from hlens.datasets import load_qa_file

    (tmp_path / "qa.csv").write_bytes(b"question,answers\n\xff\xfe,Ada\n")
    with pytest.raises(ValueError, match=r"qa.csv is not UTF-8"):
        load_qa_file(tmp_path / "qa.csv")


# ------------------------------------------------------------------------ library: probes
def _saved_probe(tmp_path):
    from hlens.probe import NeuronProbe

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2 * 4)).astype(np.float32)
    y = np.array([0, 1] * 20)
    NeuronProbe(C=1.0, n_layers=2, d_mlp=4, solver="liblinear").fit(X, y).save(tmp_path / "p")
    return tmp_path / "p"


def test_probe_from_another_format_version(tmp_path):
    from hlens.probe import NeuronProbe

    p = _saved_probe(tmp_path)
    info = json.loads((p / "probe.json").read_text())
    (p / "probe.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version=99"):
        NeuronProbe.load(p)


def test_probe_with_unknown_field(tmp_path):
    from hlens.probe import NeuronProbe

    p = _saved_probe(tmp_path)
    info = json.loads((p / "probe.json").read_text())
    info["params"]["gamma"] = 2
    (p / "probe.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"unknown params \['gamma'\]"):
        NeuronProbe.load(p)


def test_probe_of_another_model(tmp_path):
    from hlens.probe import NeuronProbe

    with pytest.raises(ValueError, match=r"n_layers=2, d_mlp=4"):
        NeuronProbe.load(_saved_probe(tmp_path), expected_shape=(4, 512))


def test_probe_fit_one_class():
    from hlens.probe import NeuronProbe

    with pytest.raises(ValueError, match="both classes"):
        NeuronProbe(n_layers=1, d_mlp=4).fit(np.ones((6, 4), np.float32), np.zeros(6, int))


def test_probe_fit_nan_features():
    from hlens.probe import NeuronProbe

    X = np.ones((6, 4), np.float32)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        NeuronProbe(n_layers=1, d_mlp=4).fit(X, np.array([0, 1] * 3))


def test_probe_negative_C():
    from hlens.probe import NeuronProbe

    with pytest.raises(ValueError, match="C"):
        NeuronProbe(C=-1.0, n_layers=1, d_mlp=4).fit(np.eye(4, dtype=np.float32), [0, 1, 0, 1])


def test_find_config_C_multiples_not_above_one():
    from hlens.identify import FindConfig

    with pytest.raises(ValueError, match="must all be > 1"):
        FindConfig(Cs=(0.5, 2.0))


# ----------------------------------------------------------------------- library: neurons
def test_neuron_negative_layer():
    with pytest.raises(ValueError, match="non-negative layer"):
        hlens.NeuronId(-1, 3)


def test_neuron_set_layer_out_of_range():
    with pytest.raises(ValueError, match="layer"):
        hlens.NeuronSet((hlens.NeuronId(4, 0),), 4, 512)


def test_scale_neurons_of_another_model(llama):
    from hlens.interventions import scale_neurons

    big = hlens.NeuronSet((hlens.NeuronId(5, 100),), 8, 4096)
    with pytest.raises(ValueError, match="layer|d_mlp|n_layers"), scale_neurons(llama, big, 0.0):
        pass


def test_prompt_longer_than_context(llama):
    n_ctx = llama.bridge.cfg.n_ctx
    long = hlens.Example("word " * (4 * n_ctx), "Korin.").with_answer("Korin")
    with pytest.raises(ValueError, match="context|n_ctx|longer"):
        llama.neuron_cache([long])


# ---------------------------------------------------------------------------- errors module
def test_validating_maps_input_errors_only():
    from hlens.errors import validating

    with (
        pytest.raises(HlensInputError, match=r"--x '3': bad; expected y"),
        validating("--x", "y", value=3),
    ):
        raise ValueError("bad")
    with pytest.raises(RuntimeError), validating("--x"):
        raise RuntimeError("a bug")
    with pytest.raises(HlensInputError, match="pip install nosuchpkg"), validating():
        raise ModuleNotFoundError("No module named 'nosuchpkg'", name="nosuchpkg")


def test_messages_are_one_line():
    from hlens.errors import one_line

    assert one_line(ValueError("a\n  b\tc")) == "a b c"
