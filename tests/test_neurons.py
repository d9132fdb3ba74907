from __future__ import annotations

import pytest

from hlens import NeuronId, NeuronSet


def test_flat_order_matches_official_classifier():
    s = NeuronSet.from_flat([0, 5, 11], n_layers=3, d_mlp=4)
    assert [(n.layer, n.index) for n in s] == [(0, 0), (1, 1), (2, 3)]
    assert s.flat().tolist() == [0, 5, 11]
    assert NeuronId(2, 3).flat(4) == 11


def test_json_round_trip(tmp_path):
    s = NeuronSet.from_flat([1, 6], n_layers=2, d_mlp=4, weights=[0.5, 2.0], meta={"m": "x"})
    s.save(tmp_path / "s.json")
    back = NeuronSet.load(tmp_path / "s.json")
    assert back == s and back.weights == (0.5, 2.0) and back.meta == {"m": "x"}
    assert s.top(1).neurons == (NeuronId(1, 2),)


def test_layer_matched_random_is_disjoint_and_seeded():
    s = NeuronSet.from_flat([0, 1, 9], n_layers=3, d_mlp=8)
    r1, r2 = s.layer_matched_random(seed=1), s.layer_matched_random(seed=1)
    assert r1 == r2 and r1.layer_counts() == s.layer_counts()
    assert not set(r1) & set(s)
    assert s.layer_matched_random(seed=2) != r1


def test_shape_errors():
    with pytest.raises(ValueError, match="outside a model"):
        NeuronSet((NeuronId(3, 0),), n_layers=2, d_mlp=4)
    with pytest.raises(ValueError, match="duplicate"):
        NeuronSet((NeuronId(0, 0), NeuronId(0, 0)), n_layers=2, d_mlp=4)
    s = NeuronSet.from_flat([1], n_layers=2, d_mlp=4)
    with pytest.raises(ValueError, match="n_layers=2, d_mlp=4, but the model has n_layers=4"):
        s.check_model(4, 8)
    with pytest.raises(ValueError, match="expected keys"):
        NeuronSet.from_dict({"neurons": []})
    assert s.fraction() == 1 / 8
