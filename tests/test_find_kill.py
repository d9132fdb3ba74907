"""Killing `hlens find` mid-extraction (SIGKILL) and rerunning gives identical features."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import hlens
from hlens.features import FeatureStore
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


@pytest.mark.slow
def test_sigkill_mid_extraction_then_rerun(llama, checkpoint_dir, tmp_path):
    data = _qa_file(llama, tmp_path / "qa.jsonl")
    args = [
        "--model",
        str(checkpoint_dir("llama")),
        "--dataset",
        str(data),
        "--n-samples",
        "2",
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "1",
        "--shard-size",
        "1",
        "--device",
        "cpu",
        "--no-progress",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hlens.cli", "find"]
    full = subprocess.run(
        [*cmd, *args, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True
    )
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "b"
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (out / "features" / "shard-00000.json").exists():
        assert proc.poll() is None and time.time() < deadline, "find ended before extracting"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_total = json.loads((tmp_path / "a" / "features" / "manifest.json").read_text())["n_examples"]
    done = len(list((out / "features").glob("shard-*.json")))
    assert 1 <= done < n_total, f"the kill came too late to test resuming ({done}/{n_total})"
    assert not (out / "features" / "manifest.json").exists()

    rerun = subprocess.run(
        [*cmd, *args, "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    a, b = FeatureStore(tmp_path / "a" / "features"), FeatureStore(out / "features")
    assert a.ids == b.ids
    for region in ("answer", "all_except_answer"):
        assert torch.equal(a.load(region), b.load(region))
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    assert sa["h_neurons"] == sb["h_neurons"] and sa["funnel"] == sb["funnel"]
