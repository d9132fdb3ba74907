"""The torch FISTA solver minimises liblinear's objective (L1) and matches lbfgs (L2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hlens.solvers import fista_logistic, linear_scores, logistic_objective


def planted(n=300, p=1500, k=15, seed=0, pos_frac=0.5):
    """A sparse planted logistic problem: ``k`` informative features out of ``p``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    w = np.zeros(p)
    w[:k] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.8, 1.6, k)
    logits = X @ w + np.log(pos_frac / (1 - pos_frac))
    y = (logits + 0.5 * rng.standard_normal(n) > 0).astype(np.int64)
    return X, y


def torch_fit(X, y, **kw):
    yt = torch.from_numpy(np.where(y == 1, 1.0, -1.0)).to(
        torch.float32 if X.dtype == np.float32 else torch.float64
    )
    return fista_logistic(torch.from_numpy(X), yt, **kw)


def liblinear(X, y, C, penalty="l1", **kw):
    m = LogisticRegression(
        l1_ratio=1.0 if penalty == "l1" else 0.0,
        C=C,
        solver="liblinear",
        tol=1e-8,
        max_iter=10_000,
        **kw,
    ).fit(X, y)
    return m.coef_[0].astype(np.float64), float(m.intercept_[0])


def jaccard(a, b):
    a, b = set(np.flatnonzero(a)), set(np.flatnonzero(b))
    return len(a & b) / max(len(a | b), 1)


@pytest.mark.parametrize("C", [0.03, 0.1, 0.3])
def test_l1_matches_liblinear_objective_and_support(C):
    X, y = planted()
    ref_w, ref_b = liblinear(X, y, C)
    res = torch_fit(X, y, penalty="l1", C=C, tol=1e-5)
    assert res.converged
    f_ref = logistic_objective(X, y, ref_w, ref_b, C=C)
    f_ours = logistic_objective(X, y, res.coef, res.intercept, C=C)
    assert abs(f_ours - f_ref) / f_ref < 1e-3
    assert jaccard(res.coef, ref_w) >= 0.9
    assert np.count_nonzero(res.coef) < 0.5 * X.shape[1]  # actually sparse


def test_l1_planted_support_recovered():
    X, y = planted(n=600, p=1000, k=10)
    res = torch_fit(X, y, penalty="l1", C=0.05, tol=1e-6)
    top = set(np.argsort(-np.abs(res.coef))[:10].tolist())
    assert top == set(range(10))


@pytest.mark.parametrize("intercept_scaling", [1.0, 10.0])
def test_l1_penalised_intercept_matches_liblinear(intercept_scaling):
    X, y = planted(pos_frac=0.8, seed=1)  # imbalanced, so the intercept matters
    C = 0.1
    ref_w, ref_b = liblinear(X, y, C, intercept_scaling=intercept_scaling)
    res = torch_fit(X, y, penalty="l1", C=C, tol=1e-7, intercept_scaling=intercept_scaling)
    kw = dict(C=C, intercept_scaling=intercept_scaling)
    f_ref = logistic_objective(X, y, ref_w, ref_b, **kw)
    f_ours = logistic_objective(X, y, res.coef, res.intercept, **kw)
    assert abs(f_ours - f_ref) / f_ref < 1e-3
    assert res.intercept == pytest.approx(ref_b, abs=0.05)
    assert ref_b != 0


def test_class_weights_match_liblinear():
    X, y = planted(pos_frac=0.75, seed=2)
    C = 0.1
    ref_w, ref_b = liblinear(X, y, C, class_weight="balanced")
    cw = len(y) / (2 * np.bincount(y))
    sw = cw[y]
    res = torch_fit(X, y, penalty="l1", C=C, tol=1e-7, sample_weight=torch.from_numpy(sw).float())
    f_ref = logistic_objective(X, y, ref_w, ref_b, C=C, sample_weight=sw)
    f_ours = logistic_objective(X, y, res.coef, res.intercept, C=C, sample_weight=sw)
    assert abs(f_ours - f_ref) / f_ref < 1e-3


def test_l2_matches_lbfgs_with_unpenalised_intercept():
    X, y = planted(n=300, p=200, pos_frac=0.7, seed=3)
    X = X.astype(np.float64)
    C = 0.05
    m = LogisticRegression(l1_ratio=0.0, C=C, solver="lbfgs", tol=1e-10, max_iter=10_000).fit(X, y)
    res = torch_fit(
        X, y, penalty="l2", C=C, tol=1e-8, intercept_scaling=float("inf"), max_iter=20_000
    )
    assert res.converged
    kw = dict(C=C, penalty="l2", fit_intercept=False)  # lbfgs leaves the intercept unpenalised
    f_ref = logistic_objective(X, y, m.coef_[0], float(m.intercept_[0]), **kw)
    f_ours = logistic_objective(X, y, res.coef, res.intercept, **kw)
    assert abs(f_ours - f_ref) / f_ref < 1e-6
    np.testing.assert_allclose(res.coef, m.coef_[0], atol=1e-4)
    assert res.intercept == pytest.approx(float(m.intercept_[0]), abs=1e-4)


def test_l2_matches_liblinear_l2():
    X, y = planted(n=200, p=100, seed=4)
    C = 0.2
    ref_w, ref_b = liblinear(X, y, C, penalty="l2")
    res = torch_fit(X, y, penalty="l2", C=C, tol=1e-7, max_iter=20_000)
    f_ref = logistic_objective(X, y, ref_w, ref_b, C=C, penalty="l2")
    f_ours = logistic_objective(X, y, res.coef, res.intercept, C=C, penalty="l2")
    assert abs(f_ours - f_ref) / f_ref < 1e-4


def test_warm_start_converges_to_the_same_point_faster():
    X, y = planted()
    cold = torch_fit(X, y, C=0.1, tol=1e-6)
    warm = torch_fit(X, y, C=0.1, tol=1e-6, coef_init=cold.coef, intercept_init=cold.intercept)
    assert warm.n_iter < max(cold.n_iter, 1)
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-3)


def test_float64_and_float32_agree():
    X, y = planted(n=200, p=300)
    a = torch_fit(X, y, C=0.1, tol=1e-7)
    b = torch_fit(X.astype(np.float64), y, C=0.1, tol=1e-7)
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-3)


def test_objective_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([1, 0])
    w, b, C = np.array([0.5, -1.0]), 0.25, 2.0
    margins = np.array([0.75, -(-2.0 + 0.25)])
    expected = 1.5 + 0.25 + C * np.log1p(np.exp(-margins)).sum()
    assert logistic_objective(X, y, w, b, C=C) == pytest.approx(expected)
    assert logistic_objective(torch.from_numpy(X), y, w, b, C=C) == pytest.approx(expected)


def test_linear_scores_reads_only_nonzero_columns():
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    X[:, 1] = np.nan  # never read: its weight is zero
    coef = np.array([1.0, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(linear_scores(X, coef, 1.0), X[:, 0] + 2 * X[:, 2] + 1)


def test_invalid_C_raises():
    X, y = planted(n=20, p=5, k=2)
    with pytest.raises(ValueError, match="C must be a positive"):
        torch_fit(X, y, C=-1.0)


def real_shaped(n=300, p=20_000, k=8, seed=0):
    """Like CETT features: non-negative, strongly correlated (30 factors), scales spread over
    ~2 orders of magnitude; labels from ``k`` columns (the probe benchmark's problem)."""
    from benchmarks.bench_probe import correlated

    return correlated(n, p, k, seed)


@pytest.mark.slow
def test_l1_converges_on_a_real_shaped_problem_and_matches_liblinear_tightly():
    """FISTA stalled on such problems (strongly correlated columns of spread scales): it hit
    max_iter=5000 with relative subgradient norms of 1e-4 to 1e-2. The working-set L-BFGS-B
    solver converges, to liblinear's objective at tol 1e-8."""
    X, y = real_shaped()
    sw = (len(y) / (2 * np.bincount(y)))[y]  # class_weight="balanced", as find() fits
    ypm = np.where(y == 1, 1.0, -1.0)
    C = 32 / np.abs((ypm * sw) @ X.astype(np.float64)).max()  # 32 x C_min: ~170 neurons
    ref_w, ref_b = liblinear(X, y, C, class_weight="balanced")
    res = torch_fit(X, y, C=C, tol=1e-6, max_iter=5000, sample_weight=torch.from_numpy(sw).float())
    assert res.converged and res.gnorm <= res.target
    f_ref = logistic_objective(X, y, ref_w, ref_b, C=C, sample_weight=sw)
    f_ours = logistic_objective(X, y, res.coef, res.intercept, C=C, sample_weight=sw)
    assert abs(f_ours - f_ref) / f_ref < 1e-4
    assert jaccard(res.coef, ref_w) >= 0.9
    assert 50 < np.count_nonzero(res.coef) < 1000
