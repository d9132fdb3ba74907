"""``hlens steer``: the sweep's outputs and resuming from finished cells."""

from __future__ import annotations

import json

import pytest

import hlens
from hlens.cli import main
from hlens.suites import PerplexitySuite, Suite


@pytest.fixture
def sweep(tmp_path, checkpoint_dir, llama):
    neurons = hlens.NeuronSet.random(4, n_layers=llama.n_layers, d_mlp=llama.d_mlp, seed=1)
    path = tmp_path / "h_neurons.json"
    neurons.save(path)
    out = tmp_path / "steer"
    argv = ["steer", "--model", str(checkpoint_dir("llama")), "--neurons", str(path),
            "--out", str(out), "--alphas", "0", "1", "2", "--n-random", "3",
            "--suites", "fictional_compliance", "perplexity", "--n-questions", "2",
            "--n-biographies", "2", "--max-new-tokens", "2", "--n-boot", "50",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    return argv, out


def _count_runs(monkeypatch) -> list[str]:
    calls: list[str] = []
    for cls in (Suite, PerplexitySuite):
        original = cls.run

        def run(self, *a, _original=original, **k):
            calls.append(self.name)
            return _original(self, *a, **k)

        monkeypatch.setattr(cls, "run", run)
    return calls


def test_sweep_outputs_and_resume(sweep, monkeypatch):
    argv, out = sweep
    calls = _count_runs(monkeypatch)
    assert main(argv) == 0
    # 4 sets x 3 alphas x 2 suites, with alpha = 1 computed once and shared
    assert len(calls) == 2 * (4 * 2 + 1)
    summary = json.loads((out / "summary.json").read_text())
    sets = ["h_neurons", "random_seed0", "random_seed1", "random_seed2"]
    for suite in ("fictional_compliance", "perplexity"):
        assert list(summary["results"][suite]) == sets
        for set_name in sets:
            cell = summary["results"][suite][set_name]["2"]
            assert set(cell) >= {"rate", "ci", "truncated_share", "unparsed_share"}
            slope = summary["slopes"][suite][set_name]
            assert len(slope["ci"]) == 2
        base = summary["results"][suite]
        assert len({json.dumps(base[s]["1"]) for s in sets}) == 1  # alpha = 1 is shared
    assert (out / "steer.png").stat().st_size > 0
    n_cells = len((out / "cells.jsonl").read_text().splitlines())
    assert n_cells == 2 * 4 * 3

    calls.clear()
    assert main(argv) == 0
    assert calls == []  # every cell finished: nothing reruns

    lines = (out / "cells.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    (out / "cells.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # torn write
    assert main(argv) == 0
    assert calls == [last["suite"]]


def test_settings_mismatch_refuses_to_mix(sweep, capsys):
    argv, _ = sweep
    argv = [*argv, "--alphas", "1", "--suites", "perplexity"]  # one cell: quick
    assert main(argv) == 0
    i = argv.index("--n-questions")
    capsys.readouterr()
    assert main([*argv[: i + 1], "3", *argv[i + 2 :]]) == 2  # a user error: one line, status 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hlens steer: error:") and "n_questions" in err[0]
