"""Parameter inertia recovers exactly which neurons moved and how far; transfer runs end to end."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import hlens
from hlens.origin import check_same_architecture, inertia_test, parameter_inertia
from tests.helpers import build_checkpoint

# (layer, neuron, which weight, t): the row gets t * |row| of an orthogonal direction added,
# so cos = 1 / sqrt(1 + t^2) and drift = 1 - cos
PERTURB = [(0, 3, "up", 1.0), (1, 10, "down", 0.5), (1, 20, "up", 2.0), (0, 7, "down", 3.0)]


def _perturbed_copy(src, dst, family):
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    fam = hlens.registry.family_for_architecture(
        json.loads((dst / "config.json").read_text())["architectures"][0]
    )
    gen = torch.Generator().manual_seed(1)
    for layer, j, which, t in PERTURB:
        path = fam.hf_up_proj if which == "up" else fam.hf_down_proj
        key = next(k for k in state if k.endswith(f".{layer}.{path}.weight"))
        w = state[key]
        # neuron j's vector: a row for up (out_in), a column for down (out_in); GPT-2 transposed
        along_rows = (which == "up") == (fam.linear_layout == "out_in")
        v = w[j] if along_rows else w[:, j]
        r = torch.randn(v.shape, generator=gen)
        r = r - (r @ v) / (v @ v) * v
        new = v + t * v.norm() * r / r.norm()
        if along_rows:
            w[j] = new
        else:
            w[:, j] = new
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_inertia_recovers_moved_neurons_exactly(checkpoint_dir, tmp_path, family):
    base = hlens.load(checkpoint_dir(family), device="cpu")
    tuned = hlens.load(
        _perturbed_copy(checkpoint_dir(family), tmp_path / "t", family), device="cpu"
    )
    inertia = parameter_inertia(base, tuned)
    assert set(inertia.moved()) == {hlens.NeuronId(layer, j) for layer, j, _, _ in PERTURB}
    for layer, j, which, t in PERTURB:
        drift = inertia.drift_up if which == "up" else inertia.drift_down
        other = inertia.drift_down if which == "up" else inertia.drift_up
        assert drift[layer, j].item() == pytest.approx(1 - 1 / math.sqrt(1 + t * t), abs=1e-5)
        assert other[layer, j].item() == pytest.approx(0.0, abs=1e-6)
    # the biggest mover ranks first; all ranks lie in [0, 1]
    assert inertia.rank[0, 7] == 0.0
    assert inertia.rank.min() >= 0 and inertia.rank.max() == 1.0
    if family == "llama":
        assert inertia.drift_gate is not None and inertia.drift_gate.abs().max() < 1e-6
    else:
        assert inertia.drift_gate is None


def test_inertia_test_detects_moved_and_unmoved_sets(checkpoint_dir, tmp_path):
    base = hlens.load(checkpoint_dir("llama"), device="cpu")
    tuned = hlens.load(
        _perturbed_copy(checkpoint_dir("llama"), tmp_path / "t", "llama"), device="cpu"
    )
    inertia = parameter_inertia(base, tuned)
    moved = hlens.NeuronSet(tuple(hlens.NeuronId(layer, j) for layer, j, _, _ in PERTURB), 2, 48)
    res = inertia_test(inertia, moved, n_random=2000, n_boot=200)
    assert res["mean_rank"] < 0.05  # they moved most: small ranks
    assert res["p_value"] > 0.99  # so "moved less than random" is firmly rejected
    assert res["ci"][0] <= res["mean_rank"] <= res["ci"][1]


def test_shape_or_family_mismatch_is_a_clear_error(checkpoint_dir, tmp_path):
    a = hlens.load(checkpoint_dir("llama"), device="cpu")
    b = hlens.load(checkpoint_dir("qwen2"), device="cpu")
    with pytest.raises(ValueError, match="family.name: base 'llama' vs tuned 'qwen2'"):
        check_same_architecture(a, b)
    wide = hlens.load(build_checkpoint("llama", tmp_path / "w", intermediate_size=64), device="cpu")
    with pytest.raises(ValueError, match="d_mlp: base 48 vs tuned 64"):
        parameter_inertia(a, wide)


def test_backward_transfer_on_a_find_run(checkpoint_dir, tmp_path):
    from hlens.identify import find
    from hlens.origin import backward_transfer
    from hlens.sources import SOURCES, register_source
    from tests.test_find import _config, _fake_source

    register_source("fake", _fake_source())
    try:
        find(_config(checkpoint_dir), tmp_path / "run", progress=False)
    finally:
        SOURCES.pop("fake")
    base = hlens.load(build_checkpoint("llama", tmp_path / "base", seed=3), device="cpu")
    res = backward_transfer(
        base, tmp_path / "run", tmp_path / "origin", n_random_seeds=2, n_boot=50, progress=False
    )
    assert 0.0 <= res["auroc"] <= 1.0 and len(res["ci"]) == 2
    assert {"auroc", "ci"} <= set(res["base_trained"])
    assert (tmp_path / "origin" / "base_features" / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="run `hlens find` first"):
        backward_transfer(base, tmp_path / "nowhere", tmp_path / "o2")
