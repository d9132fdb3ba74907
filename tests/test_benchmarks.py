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


def test_gpu_stage_splits_and_joins_files_piece_by_piece(tmp_path):
    """benchmarks/gpu_stage.py: files cut into pieces of at most the given size (a file in
    ``fresh`` starts a piece), received in order, are joined byte for byte once complete, with
    the pieces still missing listed; a corrupted part is refused, nothing joined."""
    from benchmarks import gpu_stage as G

    src = tmp_path / "src"
    src.mkdir()
    sizes = {"a.whl": 2500, "b.whl": 10, "c.whl": 0, "d.whl": 1800}
    files = []
    for i, (name, n) in enumerate(sizes.items()):
        (src / name).write_bytes(bytes((i * 7 + j) % 251 for j in range(n)))
        files.append(src / name)
    manifest = G.plan(files, 1000, frozenset({"d.whl"}))
    stage = tmp_path / "stage"
    G.write_pieces(files, manifest, stage)
    pieces = manifest["pieces"]
    assert pieces == ["00", "01", "02", "03", "04"]  # a: 1000+1000+500, b, c; d from a new piece
    for p in pieces:
        assert sum(f.stat().st_size for f in (stage / p).iterdir()) <= 1000
    assert {x["piece"] for x in manifest["files"][3]["parts"]} == {"03", "04"}
    got = tmp_path / "got"
    first = G.receive(stage / "00", got)
    assert first["complete"] == [] and first["missing_pieces"] == ["01", "02", "03", "04"]
    for p in pieces[1:3]:
        mid = G.receive(stage / p, got)
    assert mid["complete"] == ["a.whl", "b.whl", "c.whl"] and mid["missing_pieces"] == ["03", "04"]
    for p in pieces[3:]:
        done = G.receive(stage / p, got)
    assert done["missing_pieces"] == []
    for f in files:
        assert (got / f.name).read_bytes() == f.read_bytes()
    assert sorted(x.name for x in got.iterdir()) == ["a.whl", "b.whl", "c.whl", "d.whl",
                                                    "manifest.json"]  # fmt: skip
    bad = tmp_path / "bad"
    part = next((stage / "04").iterdir())
    part.write_bytes(b"x" * part.stat().st_size)
    G.receive(stage / "03", bad)
    with pytest.raises(SystemExit, match="d.whl: joined parts do not match the manifest"):
        G.receive(stage / "04", bad)
    assert not (bad / "d.whl").exists()
    with pytest.raises(SystemExit, match="expected a piece folder written by `pack`"):
        G.receive(stage / "99", bad)
