"""hlens.views: self-contained circuitsvis views (no network, bundle inline)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from hlens.neurons import NeuronSet
from hlens.probe import NeuronProbe
from hlens.views import (
    View,
    circuitsvis_bundle,
    colored_scores,
    colored_tokens,
    effects_view,
    text_neuron_activations,
    token_scores,
    topk_samples,
)


def _props(view: View) -> dict:
    """The JSON props of a single-component view."""
    (script,) = view.scripts
    return json.loads(re.search(r"CircuitsVis\.\w+, (\{.*\})\);$", script, re.S).group(1))


@pytest.fixture(scope="module")
def probe():
    rng = np.random.default_rng(0)
    X = rng.random((120, 2 * 5)).astype(np.float32)
    y = (X[:, 7] > 0.5).astype(int)
    return NeuronProbe(C=10.0, n_layers=2, d_mlp=5, solver="liblinear").fit(X, y)


def test_token_scores_are_the_probe_decision_per_token(probe):
    feats = torch.rand(6, 2, 5)
    got = token_scores(feats, probe)
    coef, b = probe.coef_[0], float(probe.intercept_[0])
    want = feats.reshape(6, -1).double().numpy() @ coef + b
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fitted on 10"):
        token_scores(torch.rand(6, 3, 5), probe)


def test_colored_tokens_props_and_mask(probe):
    feats = torch.rand(3, 2, 5)
    v = colored_tokens(["A", " b", " c"], feats, probe, mask=torch.tensor([False, True, True]))
    p = _props(v)
    assert p["tokens"] == ["A", " b", " c"] and p["values"][0] == 0.0
    assert p["maxValue"] == -p["minValue"] > 0
    assert "towards hallucinated" in v.html
    with pytest.raises(ValueError, match="2 tokens but scores has 3"):
        colored_tokens(["A", "b"], feats, probe)


def test_view_is_self_contained_and_offline():
    v = colored_scores(["x", "</script><b>"], torch.tensor([1.0, float("nan")]))
    html = v._repr_html_()
    assert html == v.html and "var CircuitsVis=" in html
    assert "sourceMappingURL" not in html
    assert not re.search(r"<script[^>]+src", html)
    # token text cannot close the script element early
    assert html.count("</script") == 1 and "<!--" not in html
    assert _props(v)["values"] == [1.0, 0.0]
    assert circuitsvis_bundle() in html  # read from the installed package, inline


def test_save_writes_standalone_page(tmp_path):
    v = colored_scores(["a"], torch.tensor([0.5]))
    path = v.save(tmp_path / "sub" / "v.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in text
    assert "default-src 'none'" in text


def test_views_add_up():
    a = colored_scores(["a"], torch.tensor([0.5]))
    b = View("<p>note</p>")
    c = a + b
    assert len(c.scripts) == 1 and "<p>note</p>" in c.html
    assert c.body_html().count("CircuitsVis.render") == 1
    assert "var CircuitsVis=" not in c.body_html()


def test_text_neuron_activations_interleaves_labels():
    toks = [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]
    acts = torch.arange(27, dtype=torch.float32).reshape(3, 3, 3)
    ns = NeuronSet.from_flat([1, 6, 9], n_layers=2, d_mlp=5)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]]).bool()
    v = text_neuron_activations(
        toks, acts, ns, labels=["faithful", "faithful", "hallucinated"], mask=mask
    )
    p = _props(v)
    assert p["firstDimensionLabels"] == ["L0.1", "L1.1", "L1.4"]
    assert [t[0] for t in p["tokens"]] == ["[faithful] ", "[hallucinated] ", "[faithful] "]
    assert p["tokens"][0] == ["[faithful] ", "a", "b"]  # padding dropped
    assert np.array(p["activations"][0]).shape == (3, 3, 1)
    with pytest.raises(ValueError, match="2 neuron labels"):
        text_neuron_activations(toks, acts, ["x", "y"])


def test_topk_samples_orders_by_peak_and_groups():
    toks = [[f"s{i}t{j}" for j in range(4)] for i in range(4)]
    acts = torch.zeros(4, 4, 1)
    acts[2, 1, 0], acts[0, 3, 0], acts[3, 0, 0] = 5.0, 3.0, 1.0
    v = topk_samples(toks, acts, ["N"], k=2, labels=["f", "h", "f", "h"], window=1)
    p = _props(v)
    assert p["firstDimensionLabels"] == ["all", "f", "h"]
    assert p["tokens"][0][0] == [["s2t0", "s2t1", "s2t2"], ["s0t2", "s0t3"]]  # windowed
    assert p["tokens"][0][2][0][0].startswith("s3")


def test_effects_view_from_tensor_and_result():
    from hlens.patching import PatchResult

    v = effects_view(torch.tensor([[0.0, 2.0], [-3.0, 0.5]]), unit="head", k=2)
    assert "data:image/png;base64," in v.html and not v.scripts
    table = v.html[v.html.index("<table>") :]
    assert table.index("<td>-3</td>") < table.index("<td>+2</td>")  # sorted by |effect|
    r = PatchResult(
        "heads",
        "atp",
        "clean_to_corrupt",
        torch.randn(2, 3),
        torch.randn(4, 2, 3),
        (3, 5),
        torch.zeros(4),
        torch.zeros(4),
    )
    html = effects_view(r).html
    assert "<th>head</th>" in html and "<td>5</td>" in html
    with pytest.raises(ValueError, match="layer, unit"):
        effects_view(torch.randn(3))
