"""The benchmark runner's quick mode runs end to end (a smoke test: no thresholds here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmarks_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "results_quick.json").read_text())
    assert res["machine"]["cpu_count"] >= 1
    cett = res["benchmarks"]["cett"]
    assert cett["features_equal_1e-5"] is True
    assert cett["throughput_ratio"] > 0 and cett["peak_memory_ratio"] > 0
    assert (tmp_path / "results_quick.md").read_text().startswith("# hlens benchmarks")
    sampling = res["benchmarks"]["sampling"]["tiny_llama"]
    assert sampling["equal_outputs"] is True  # hlens's greedy outputs are generate's
    assert sampling["speedup"] > 0 and sampling["fraction_of_gemm_mlp"] >= 0
    sampled = res["benchmarks"]["sampling"]["tiny_llama_sampled"]
    assert sampled["equal_to_whole_vocabulary"] is True  # top-k-only filtering: same samples
    assert sampled["speedup_vs_generate"] > 0
    probe = res["benchmarks"]["probe"]["cases"]
    assert all(c["torch"]["converged"] for c in probe if c["name"].startswith("correlated"))
