"""hlens.plots: figures build without a display and from the JSON the commands write."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from hlens import plots
from hlens.neurons import NeuronSet


def test_h_neurons_per_layer_inputs_agree():
    ns = NeuronSet.from_flat([0, 1, 9], n_layers=3, d_mlp=4)
    a = plots.h_neurons_per_layer(ns)
    b = plots.h_neurons_per_layer([2, 0, 1])
    c = plots.h_neurons_per_layer({"0": 2, "2": 1})
    heights = [[p.get_height() for p in f.axes[0].patches] for f in (a, b, c)]
    assert heights[0] == heights[1] == heights[2] == [2, 0, 1]
    assert "total 3" in a.axes[0].get_title()


def test_roc_curves_labels_and_baseline():
    y = np.array([0, 0, 1, 1, 0, 1])
    fig = plots.roc_curves(
        torch.tensor(y),
        {
            "H": torch.tensor([0.1, 0.2, 0.9, 0.8, 0.3, 0.7]),
            "random": [0.5, 0.4, 0.3, 0.6, 0.2, 0.5],
        },
        random_auroc=0.52,
        random_ci=(0.4, 0.6),
    )
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels[0] == "H (AUROC 1.000)" and labels[-1].endswith("AUROC 0.520 [0.400, 0.600]")


def test_c_path_from_dict_and_cpath():
    from hlens.probe import CPath

    p = CPath((0.1, 1.0), (3, 9), (4, 12), (0.8, 0.9), (0.89, 0.9), (0.02, 0.02), (0.8, 0.9),
              (0.1, 0.1), {})  # fmt: skip
    for path in (p, p.to_dict()):
        fig = plots.c_path(path, selected_C=1.0)
        assert fig.axes[0].get_xscale() == "log" and len(fig.axes) == 2


def test_alpha_sweep_from_steer_summary():
    cell = lambda r: {"rate": r, "ci": [r - 0.1, r + 0.1], "statistic": "rate"}  # noqa: E731
    s = {
        "results": {
            suite: {
                "h_neurons": {"0": cell(0.1), "1": cell(0.3), "2.5": cell(0.6)},
                "random_seed0": {"0": cell(0.3), "1": cell(0.3), "2.5": cell(0.3)},
                "random_seed1": {"0": cell(0.3), "1": cell(0.3), "2.5": cell(0.32)},
            }
            for suite in ("a", "b", "c", "d", "e")
        },
        "slopes": {"a": {"h_neurons": {"slope": 0.2, "ci": [0.1, 0.3]}}},
    }
    fig = plots.alpha_sweep(s)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5 and "slope +0.200" in visible[0].get_title()
    assert visible[0].get_legend_handles_labels()[1] == ["H-neurons", "random (controls)"]
    with pytest.raises(ValueError, match="no suites"):
        plots.alpha_sweep({"results": {}})


def test_inertia_and_heatmap_and_save(tmp_path):
    fig = plots.inertia_ranks(np.random.default_rng(0).random(500), [0.1, 0.2, 0.15])
    assert isinstance(fig, Figure)
    assert any("H-neuron mean 0.150" in t for t in fig.axes[0].get_legend_handles_labels()[1])
    hm = plots.effects_heatmap(torch.randn(3, 7), layers=[2, 4, 6], unit="head")
    assert [t.get_text() for t in hm.axes[0].get_yticklabels()] == ["2", "4", "6"]
    for ext in ("png", "svg"):
        assert plots.save(hm, tmp_path / f"h.{ext}").stat().st_size > 0
    with pytest.raises((ValueError, TypeError)):  # jaxtyping sees the bad shape first
        plots.effects_heatmap(np.zeros(3))
