"""NeuronProbe: estimator rules, H-neuron recovery, persistence, training sets, C path, control."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from hlens._version import __version__
from hlens.metrics import ProbeMetrics
from hlens.neurons import NeuronId, NeuronSet
from hlens.probe import (
    BaselineResult,
    CPath,
    NeuronProbe,
    build_training_set,
    c_path,
    random_neuron_baseline,
    select_c,
)

N_LAYERS, D_MLP = 4, 50
POS = [(1, 3), (2, 10), (3, 7)]  # planted H-neurons (positive weight)
NEG = [(0, 5), (2, 40)]  # planted negatively predictive neurons


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def flat(layer, index):
    return layer * D_MLP + index


def planted(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_LAYERS * D_MLP)).astype(np.float32)
    logit = sum(1.5 * X[:, flat(*ln)] for ln in POS) - sum(1.5 * X[:, flat(*ln)] for ln in NEG)
    y = (logit + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = planted(600)
    return X[:400], y[:400], X[400:], y[400:]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return NeuronProbe(C=0.05, n_layers=N_LAYERS, d_mlp=D_MLP, metadata={"model_id": "toy"}).fit(
        X, y
    )


# -- estimator contract ---------------------------------------------------------------------------
def test_fit_returns_self_and_sets_learned_attributes(data):
    X, y, _, _ = data
    probe = NeuronProbe(C=0.05, n_layers=N_LAYERS, d_mlp=D_MLP)
    assert probe.fit(X, y) is probe
    assert probe.coef_.shape == (1, N_LAYERS * D_MLP)
    assert probe.intercept_.shape == (1,)
    assert probe.classes_.tolist() == [0, 1]
    assert probe.n_features_in_ == N_LAYERS * D_MLP


def test_clone_and_get_params():
    probe = NeuronProbe("l2", 0.3, solver="torch", max_iter=50, class_weight={0: 1.0, 1: 2.0})
    twin = clone(probe)
    assert twin is not probe
    assert twin.get_params() == probe.get_params()
    assert not hasattr(twin, "coef_")
    assert probe.set_params(C=2.0).C == 2.0


@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
def test_unfitted_probe_raises_not_fitted(method, data):
    X = data[0]
    with pytest.raises(NotFittedError):
        getattr(NeuronProbe(), method)(X)
    with pytest.raises(NotFittedError):
        NeuronProbe().h_neurons_  # noqa: B018


def test_planted_h_neurons_recovered(fitted):
    h = fitted.h_neurons_
    assert set(h.top(3)) == {NeuronId(*ln) for ln in POS}
    assert not {NeuronId(*ln) for ln in NEG} & set(h)
    assert list(h.weights) == sorted(h.weights, reverse=True)
    assert all(w > 0 for w in h.weights)
    assert (h.n_layers, h.d_mlp) == (N_LAYERS, D_MLP)
    assert h.meta["model_id"] == "toy"


def test_predictions_are_consistent(fitted, data):
    _, _, Xt, yt = data
    proba = fitted.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(fitted.predict(Xt), (proba[:, 1] > 0.5).astype(int))
    assert fitted.score(Xt, yt) > 0.9
    np.testing.assert_allclose(
        fitted.decision_function(torch.from_numpy(Xt)), fitted.decision_function(Xt), atol=1e-5
    )


def test_evaluate_returns_metrics_with_intervals(fitted, data):
    _, _, Xt, yt = data
    m = fitted.evaluate(Xt, yt, n_boot=200)
    assert isinstance(m, ProbeMetrics)
    assert m.accuracy == pytest.approx(fitted.score(Xt, yt))
    assert m.ci["auroc"][0] <= m.auroc <= m.ci["auroc"][1]


def test_torch_solver_agrees_with_liblinear(fitted, data):
    X, y, Xt, _ = data
    probe = NeuronProbe(C=0.05, solver="torch", n_layers=N_LAYERS, d_mlp=D_MLP, device="cpu")
    probe.fit(torch.from_numpy(X), torch.from_numpy(y))
    assert set(probe.h_neurons_.top(3)) == set(fitted.h_neurons_.top(3))
    assert (probe.predict(Xt) == fitted.predict(Xt)).mean() >= 0.98


def test_l2_and_class_weight_and_standardize(data):
    X, y, Xt, yt = data
    for kw in (
        {"penalty": "l2", "C": 0.01},
        {"class_weight": "balanced", "C": 0.05},
        {"standardize": True, "C": 0.05},
    ):
        probe = NeuronProbe(**kw, n_layers=N_LAYERS).fit(X, y)
        assert probe.d_mlp_ == D_MLP
        assert probe.score(Xt, yt) > 0.8, kw


def test_standardized_coefficients_are_in_standard_units(data):
    X, y, _, _ = data
    Xs = X * 10.0
    probe = NeuronProbe(C=0.05, standardize=True, solver="torch", device="cpu").fit(Xs, y)
    plain = NeuronProbe(C=0.05, solver="torch", device="cpu").fit(X / X.std(0), y)
    np.testing.assert_allclose(probe.coef_, plain.coef_, atol=0.05)


# -- input validation -----------------------------------------------------------------------------
def test_shape_errors_say_what_was_expected(fitted, data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=r"n_layers \* d_mlp = 3 \* 50 = 150"):
        NeuronProbe(n_layers=3, d_mlp=50).fit(X, y)
    with pytest.raises(ValueError, match="fitted on 200"):
        fitted.predict(X[:, :100])
    with pytest.raises(ValueError, match="not a multiple of n_layers=3"):
        NeuronProbe(n_layers=3).fit(X, y)
    with pytest.raises((ValueError, TypeError)):  # 1-D X: jaxtyping's or our error
        fitted.predict(X[0])


def test_label_errors(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="0/1 labels"):
        NeuronProbe().fit(X, y + 1)
    with pytest.raises(ValueError, match="both classes"):
        NeuronProbe().fit(X, np.zeros_like(y))
    with pytest.raises(ValueError, match="NaN or infinite"):
        NeuronProbe().fit(np.full_like(X, np.nan), y)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"penalty": "elasticnet"}, "'l1' or 'l2'"),
        ({"solver": "saga"}, "'liblinear' or 'torch'"),
        ({"C": 0.0}, "positive finite"),
        ({"intercept_scaling": float("inf")}, "finite number with solver='liblinear'"),
        ({"class_weight": {2: 1.0}}, "None, 'balanced'"),
    ],
)
def test_invalid_params_are_rejected_at_fit(params, match, data):
    X, y, _, _ = data
    # sklearn's rule: validation happens in fit (set_params skips the type-checked __init__)
    probe = NeuronProbe().set_params(**params)
    with pytest.raises(ValueError, match=match):
        probe.fit(X, y)


# -- persistence ----------------------------------------------------------------------------------
def test_save_load_round_trip(fitted, data, tmp_path):
    _, _, Xt, _ = data
    fitted.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["probe.json", "probe.safetensors"]
    info = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert info["hlens_version"] == __version__
    assert info["metadata"] == {"model_id": "toy"}
    assert (info["n_layers"], info["d_mlp"]) == (N_LAYERS, D_MLP)
    loaded = NeuronProbe.load(tmp_path / "p", expected_shape=(N_LAYERS, D_MLP))
    np.testing.assert_array_equal(loaded.decision_function(Xt), fitted.decision_function(Xt))
    np.testing.assert_array_equal(loaded.predict(Xt), fitted.predict(Xt))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.h_neurons_ == fitted.h_neurons_


def test_save_load_with_scaler_and_class_weight_dict(data, tmp_path):
    X, y, Xt, _ = data
    probe = NeuronProbe(C=0.05, standardize=True, class_weight={0: 1.0, 1: 2.0}).fit(X, y)
    probe.save(tmp_path)
    loaded = NeuronProbe.load(tmp_path)
    assert loaded.class_weight == {0: 1.0, 1: 2.0}
    np.testing.assert_array_equal(loaded.predict_proba(Xt), probe.predict_proba(Xt))


def _edit_json(path, **changes):
    info = json.loads((path / "probe.json").read_text())
    info.update(changes)
    (path / "probe.json").write_text(json.dumps(info))


def test_load_rejects_bad_files(fitted, tmp_path):
    fitted.save(tmp_path)
    with pytest.raises(ValueError, match=r"n_layers=4, d_mlp=50, but expected_shape"):
        NeuronProbe.load(tmp_path, expected_shape=(32, 14336))
    _edit_json(tmp_path, hlens_version="banana")
    with pytest.raises(ValueError, match="not a version"):
        NeuronProbe.load(tmp_path)
    _edit_json(tmp_path, hlens_version=__version__, d_mlp=49)
    with pytest.raises(ValueError, match=r"'coef' has shape \(200,\), expected \(196,\)"):
        NeuronProbe.load(tmp_path)
    _edit_json(tmp_path, d_mlp=D_MLP, format="sklearn")
    with pytest.raises(ValueError, match="not a NeuronProbe file"):
        NeuronProbe.load(tmp_path)
    (tmp_path / "probe.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        NeuronProbe.load(tmp_path)
    (tmp_path / "probe.json").unlink()
    with pytest.raises(FileNotFoundError, match="no probe.json"):
        NeuronProbe.load(tmp_path)


def test_load_rejects_corrupt_weights(fitted, tmp_path):
    fitted.save(tmp_path)
    (tmp_path / "probe.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        NeuronProbe.load(tmp_path)


def test_save_unfitted_and_unserialisable_metadata(tmp_path, data):
    with pytest.raises(NotFittedError):
        NeuronProbe().save(tmp_path)
    X, y, _, _ = data
    probe = NeuronProbe(C=0.05, metadata={"bad": object()}).fit(X, y)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        probe.save(tmp_path)


# -- training sets --------------------------------------------------------------------------------
def test_build_training_set_modes():
    f, h = np.zeros((3, 6), np.float32), np.ones((2, 6), np.float32)
    of, oh = np.full((4, 6), 2.0, np.float32), np.full((5, 6), 3.0, np.float32)
    X, y = build_training_set(f, h, contrast="1-vs-1")
    assert X.shape == (5, 6) and y.tolist() == [0, 0, 0, 1, 1]
    X, y = build_training_set(f, h, [of, oh], contrast="3-vs-1")
    assert X.shape == (14, 6) and y.tolist() == [0] * 3 + [1] * 2 + [0] * 9
    np.testing.assert_array_equal(X[y == 1], h)
    Xt, yt = build_training_set(torch.from_numpy(f), h, of)
    assert isinstance(Xt, torch.Tensor) and Xt.shape == (9, 6) and yt.sum() == 2


def test_build_training_set_errors():
    f, h = np.zeros((3, 6), np.float32), np.ones((2, 6), np.float32)
    with pytest.raises(ValueError, match="needs the non-answer features"):
        build_training_set(f, h, contrast="3-vs-1")
    with pytest.raises(ValueError, match="pass other=None"):
        build_training_set(f, h, f, contrast="1-vs-1")
    with pytest.raises((ValueError, TypeError), match="2-vs-2"):  # ours, or the type hook's
        build_training_set(f, h, contrast="2-vs-2")
    with pytest.raises((ValueError, TypeError)):  # width mismatch: ours, or jaxtyping's
        build_training_set(f, np.ones((2, 5), np.float32), contrast="1-vs-1")


# -- C path ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["liblinear", "torch"])
def test_c_path_and_select(data, solver):
    X, y, Xv, yv = data
    path = c_path(X, y, Xv, yv, [1.0, 0.003, 0.05, 0.01], solver=solver, device="cpu")
    assert list(path.Cs) == [0.003, 0.01, 0.05, 1.0]
    assert path.n_nonzero[0] <= path.n_nonzero[-1]
    assert path.n_nonzero[-1] > path.n_nonzero[1]
    assert max(path.auroc) > 0.95
    best = select_c(path)
    assert path.auroc[path.Cs.index(best)] == max(path.auroc)
    sparse = select_c(path, "auroc_1se")
    assert path.n_positive[path.Cs.index(sparse)] <= path.n_positive[path.Cs.index(best)]
    assert CPath.from_dict(json.loads(json.dumps(path.to_dict()))) == path


def test_select_c_rejects_unknown_rule():
    p = CPath((1.0,), (1,), (1,), (0.5,), (0.5,), (0.1,), (0.5,), (0.0,), {})
    with pytest.raises((ValueError, TypeError), match="best_f1"):  # ours, or the type hook's
        select_c(p, "best_f1")


# -- random-neuron control ------------------------------------------------------------------------
def test_random_neuron_baseline(data):
    X, y, Xt, yt = data
    h = NeuronSet(tuple(NeuronId(*ln) for ln in POS + NEG), N_LAYERS, D_MLP)
    res = random_neuron_baseline(X, y, Xt, yt, h, n_seeds=3, n_boot=100, C=1.0)
    assert len(res.random) == 3 and res.seeds == (0, 1, 2)
    assert res.reference.auroc > 0.95
    assert res.mean["auroc"] < res.reference.auroc - 0.2
    lo, hi = res.ci["auroc"]
    assert lo <= res.mean["auroc"] <= hi
    for cols in res.random_neurons:
        rand = NeuronSet.from_flat(cols, n_layers=N_LAYERS, d_mlp=D_MLP)
        assert rand.layer_counts() == h.layer_counts()
        assert not set(rand) & set(h)
    assert BaselineResult.from_dict(json.loads(json.dumps(res.to_dict()))) == res


def test_random_neuron_baseline_checks_model_shape(data):
    X, y, Xt, yt = data
    h = NeuronSet((NeuronId(0, 1),), 8, 50)
    with pytest.raises(ValueError, match=r"n_layers \* d_mlp = 8 \* 50 = 400"):
        random_neuron_baseline(X, y, Xt, yt, h)


def test_convergence_is_recorded_and_saved(data, tmp_path):
    X, y, _, _ = data
    for solver in ("liblinear", "torch"):
        probe = NeuronProbe(C=0.05, solver=solver, device="cpu").fit(X, y)
        assert probe.converged_ is True
        c = probe.convergence_
        assert c["solver"] == solver and c["converged"] is True and c["n_iter"] >= 1
        json.dumps(c)  # goes into summary.json as it is
        if solver == "torch":
            assert c["rel_subgradient_norm"] <= c["rel_target"] and c["n_rounds"] >= 1
        probe.save(tmp_path / solver)
        assert NeuronProbe.load(tmp_path / solver).convergence_ == c
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        probe = NeuronProbe(C=0.05, solver="torch", device="cpu", max_iter=1, tol=1e-12).fit(X, y)
    assert probe.converged_ is False and probe.convergence_["converged"] is False
