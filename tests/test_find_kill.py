"""Kill-anywhere resumption: SIGKILL `hlens find` or `hlens steer` at a stage, rerun, compare.

After each kill the rerun must give what an uninterrupted run gives: byte-identical JSONL stores
and feature shards, and the same summary.json but for its timing field. The kills land during
sampling (once the first record is in samples.jsonl), during extraction (once the first shard
is written), exactly between the probe and the baselines (``HLENS_TEST_KILL_AT=baselines``, see
:func:`hlens.runlock.kill_point`) and, for steer, once its first cell is written.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hlens
from hlens.prompts import PAPER_INSTRUCTION, PromptFormat, render
from hlens.sampling import SamplingConfig, sample_responses


def _qa_file(model, path, n=60):
    """Questions whose gold answer is (even ids) or is not (odd ids) the model's greedy answer."""
    questions = [hlens.Example(f"Q{i}?", id=f"q{i}") for i in range(3 * n)]
    fmt = PromptFormat(instruction=PAPER_INSTRUCTION)
    prompts = [render(q, model.tokenizer, fmt).text for q in questions]
    cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=6, batch_size=64)
    responses = sample_responses(
        model.hf_model, model.tokenizer, prompts, [q.id for q in questions], cfg, progress=False
    )
    rows = []
    for q, (resp,) in zip(questions, responses):
        word = next(iter(re.findall(r"[A-Za-z]{3,}", resp)), None)
        if word is None or word.lower() in {"the", "don", "know", "not"}:
            continue
        answer = word if len(rows) % 2 == 0 else "Zyxwvut"
        rows.append({"id": q.id, "question": q.question, "answers": [answer]})
        if len(rows) == n:
            break
    if len(rows) < 24:
        pytest.skip("the tiny model gave too few usable greedy answers")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- every stage, against one uninterrupted run ---------------------------------------------------
STORES = (
    "samples.jsonl",
    "consistency_samples.jsonl",
    "judgements.json",
    "examples.jsonl",
    "splits.json",
    "h_neurons.json",
    "config.json",
)


@pytest.fixture(scope="module")
def find_run(llama, checkpoint_dir, tmp_path_factory):
    """The command, its environment, and an uninterrupted run to compare with."""
    root = tmp_path_factory.mktemp("kill")
    data = _qa_file(llama, root / "qa.jsonl", n=30)
    args = [
        *("--model", str(checkpoint_dir("llama")), "--dataset", str(data)),
        *("--n-samples", "2", "--temperature", "0", "--max-new-tokens", "6"),
        *("--sample-batch-size", "1", "--batch-size", "2", "--shard-size", "2"),
        *("--device", "cpu", "--no-progress"),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hlens.cli", "find", *args]
    ref = root / "reference"
    _rerun(cmd, env, ref)
    return cmd, env, ref


def _kill_when(cmd: list[str], env: dict[str, str], ready, what: str) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ready():
        assert proc.poll() is None and time.time() < deadline, f"ended before {what}"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _untimed(obj):
    """A summary without its timing fields (``seconds``, ``wall_s``, ``c_path.fit_seconds``)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if "seconds" not in k and k != "wall_s"}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _assert_same_find(ref: Path, out: Path) -> None:
    for name in STORES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    shards = sorted(p.name for p in (ref / "features").iterdir())
    assert shards == sorted(p.name for p in (out / "features").iterdir())
    for name in shards:
        assert (out / "features" / name).read_bytes() == (ref / "features" / name).read_bytes()
    sa, sb = (_untimed(json.loads((d / "summary.json").read_text())) for d in (ref, out))
    assert sa == sb


def _rerun(cmd, env, out: Path) -> None:
    """Run ``cmd`` to completion in this process (no start-up cost), on one thread like ``env``."""
    from hlens.cli import main

    assert cmd[1:3] == ["-m", "hlens.cli"] and env["OMP_NUM_THREADS"] == "1"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*cmd[3:], "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_sigkill_during_sampling(find_run, tmp_path):
    cmd, env, ref = find_run
    out = tmp_path / "run"
    _kill_when(
        [*cmd, "--out", str(out)], env, lambda: _lines(out / "samples.jsonl") >= 2, "sampling"
    )
    assert _lines(out / "samples.jsonl") < _lines(ref / "samples.jsonl"), "killed too late"
    assert not (out / "features").exists()
    _rerun(cmd, env, out)
    _assert_same_find(ref, out)


@pytest.mark.slow
def test_sigkill_during_extraction(find_run, tmp_path):
    cmd, env, ref = find_run
    out = tmp_path / "run"
    first = out / "features" / "shard-00000.json"
    _kill_when([*cmd, "--out", str(out)], env, first.exists, "extraction")
    assert not (out / "features" / "manifest.json").exists(), "killed too late"
    _rerun(cmd, env, out)
    _assert_same_find(ref, out)


@pytest.mark.slow
def test_sigkill_between_probe_and_baselines(find_run, tmp_path):
    cmd, env, ref = find_run
    out = tmp_path / "run"
    killed = subprocess.run(
        [*cmd, "--out", str(out)],
        env=dict(env, HLENS_TEST_KILL_AT="baselines"),
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    assert (out / "h_neurons.json").exists() and not (out / "summary.json").exists()
    _rerun(cmd, env, out)
    _assert_same_find(ref, out)


@pytest.mark.slow
def test_sigkill_steer_during_cells(tmp_path):
    h = tmp_path / "h.json"
    hlens.NeuronSet(
        (hlens.NeuronId(0, 1), hlens.NeuronId(2, 9), hlens.NeuronId(3, 7)), 4, 512
    ).save(h)
    args = [
        *("--model", "organism", "--neurons", str(h), "--alphas", "0", "1", "2"),
        *("--n-random", "1", "--suites", "known_accuracy", "perplexity"),
        *("--n-questions", "6", "--n-biographies", "3", "--n-boot", "20", "--batch-size", "2"),
        *("--device", "cpu", "--no-progress"),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hlens.cli", "steer", *args]
    ref, out = tmp_path / "reference", tmp_path / "run"
    _rerun(cmd, env, ref)
    _kill_when([*cmd, "--out", str(out)], env, lambda: _lines(out / "cells.jsonl") >= 1, "a cell")
    assert _lines(out / "cells.jsonl") < _lines(ref / "cells.jsonl"), "killed too late"
    _rerun(cmd, env, out)
    assert (out / "cells.jsonl").read_bytes() == (ref / "cells.jsonl").read_bytes()
    sa, sb = (_untimed(json.loads((d / "summary.json").read_text())) for d in (ref, out))
    assert sa == sb
