"""Torch solvers for L1- and L2-penalised logistic regression, and liblinear's objective.

The solver minimises **liblinear's primal objective**, the one scikit-learn's
``LogisticRegression(solver="liblinear")`` minimises, so the two can be compared at equal ``C``:

* L1: ``||w||_1 + |b| / s + C * sum_i c_i * log(1 + exp(-y_i (w . x_i + b)))``
* L2: ``||w||^2 / 2 + (b / s)^2 / 2 + C * sum_i c_i * log(1 + exp(-y_i (w . x_i + b)))``

with labels ``y_i`` in ``{-1, +1}``, per-sample weights ``c_i`` (class weights) and ``s`` the
*intercept scaling*. liblinear fits the intercept as the weight of an extra constant feature of
value ``s``, so the intercept is penalised like any other weight, by ``|b| / s``. ``s = inf``
(torch only) leaves the intercept unpenalised, which is what scikit-learn's ``lbfgs`` does for L2.

L1 runs a working-set loop: it solves the problem restricted to the current support plus the
worst violators of the optimality conditions, then checks those conditions on all features (one
pass over ``X`` on its device), and repeats. With a few hundred selected neurons out of ~460k this
costs a few full passes over ``X``. The restricted problem (a few hundred columns) is solved in
float64 on the CPU by L-BFGS-B on the split ``w = u - v``, ``u, v >= 0`` (the L1 term becomes
linear), with columns scaled to unit weighted norm: on real CETT features (strongly correlated
columns of very different scales) FISTA stalled far from the tolerance after thousands of
iterations, while this quasi-Newton method reaches it. L2 runs FISTA on all features.

It stops, like liblinear, when the norm of the minimum-norm subgradient (1-norm for L1, 2-norm
for L2) falls below ``tol * max(min(n_pos, n_neg), 1) / n`` times its value at ``w = 0, b = 0``.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(200, 30, generator=g)
    >>> y = torch.where(X[:, 0] - X[:, 1] > 0, 1.0, -1.0)
    >>> res = fista_logistic(X, y, penalty="l1", C=1.0, tol=1e-6)
    >>> res.converged, sorted(np.argsort(-np.abs(res.coef))[:2].tolist())
    (True, [0, 1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Shaped
from torch import Tensor

__all__ = [
    "SolverResult",
    "fista_logistic",
    "linear_scores",
    "logistic_objective",
    "resolve_device",
]

Penalty = Literal["l1", "l2"]


@dataclass
class SolverResult:
    """What :func:`fista_logistic` returns."""

    coef: Float[np.ndarray, " feature"]  # weights, float64
    intercept: float  # the intercept b (not divided by the intercept scaling)
    n_iter: int  # FISTA iterations, summed over working-set rounds
    converged: bool  # whether the stopping rule was met within max_iter
    gnorm: float  # final min-norm-subgradient norm, relative to its value at w = 0, b = 0
    target: float = math.nan  # the stopping threshold on ``gnorm`` (relative, like ``gnorm``)
    n_rounds: int = 0  # working-set rounds (L1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def linear_scores(
    X: Float[Tensor, "sample feature"] | Float[np.ndarray, "sample feature"],
    coef: Float[np.ndarray, " feature"],
    intercept: float,
) -> Float[np.ndarray, " sample"]:
    """``X @ coef + intercept`` in float64, reading only the columns where ``coef`` is non-zero.

    Rows are processed in chunks, so a float32 ``X`` of several GB is never copied whole.
    """
    n = X.shape[0]
    out = np.full(n, float(intercept), dtype=np.float64)
    nz = np.flatnonzero(coef)
    if nz.size == 0:
        return out
    w = coef[nz].astype(np.float64)
    step = max(1, (1 << 24) // nz.size)
    nz_t = torch.from_numpy(nz).to(X.device) if isinstance(X, Tensor) else None
    for start in range(0, n, step):
        if isinstance(X, Tensor):
            block = X[start : start + step].index_select(1, nz_t).to("cpu", torch.float64).numpy()
        else:
            block = np.asarray(X[start : start + step][:, nz], dtype=np.float64)
        out[start : start + step] += block @ w
    return out


def logistic_objective(
    X: Float[Tensor, "sample feature"] | Float[np.ndarray, "sample feature"],
    y: Shaped[np.ndarray, " sample"] | Shaped[Tensor, " sample"],
    coef: Float[np.ndarray, " feature"],
    intercept: float,
    *,
    C: float,
    penalty: Penalty = "l1",
    sample_weight: Float[np.ndarray, " sample"] | None = None,
    fit_intercept: bool = True,
    intercept_scaling: float = 1.0,
) -> float:
    """liblinear's primal objective (see the module docstring), in float64.

    Args:
        X: features.
        y: labels, either ``{0, 1}`` or ``{-1, +1}``.
        coef: weights.
        intercept: the intercept ``b``.
        C: inverse regularisation strength.
        penalty: ``"l1"`` or ``"l2"``.
        sample_weight: per-sample multipliers of ``C`` (class weights); ``None`` for all ones.
        fit_intercept: whether ``b`` is a fitted (hence penalised) parameter.
        intercept_scaling: liblinear's ``s``; the intercept is penalised by ``|b| / s``.

    Example:
        >>> X = np.zeros((2, 3)); y = np.array([0, 1])
        >>> round(logistic_objective(X, y, np.array([1.0, -2.0, 0.0]), 0.0, C=1.0), 4)
        4.3863
    """
    yy = np.asarray(y.cpu() if isinstance(y, Tensor) else y, dtype=np.float64)
    yy = np.where(yy > 0, 1.0, -1.0)
    margins = yy * linear_scores(X, coef, intercept)
    losses = np.logaddexp(0.0, -margins)
    if sample_weight is not None:
        losses = losses * sample_weight
    lam_b = 1.0 / intercept_scaling if fit_intercept else 0.0
    if penalty == "l1":
        reg = float(np.abs(coef).sum()) + lam_b * abs(intercept)
    else:
        reg = 0.5 * float(coef @ coef) + 0.5 * (lam_b * intercept) ** 2
    return reg + C * float(losses.sum())


# -- internals ------------------------------------------------------------------------------------
def _softplus_neg(m: Tensor) -> Tensor:
    """``log(1 + exp(-m))``, stably."""
    return torch.nn.functional.softplus(-m)


class _Problem:
    """The smooth loss ``sum_i c_i log(1 + exp(-y_i z_i))`` (c_i already includes C)."""

    def __init__(self, y: Tensor, c: Tensor, penalty: Penalty, lam_b: float, fit_b: bool):
        self.y, self.c, self.penalty, self.lam_b, self.fit_b = y, c, penalty, lam_b, fit_b

    def smooth(self, z: Tensor, w: Tensor, b: float) -> float:
        f = float((self.c * _softplus_neg(self.y * z)).double().sum())
        if self.penalty == "l2":
            f += 0.5 * float(w.double().square().sum()) + 0.5 * (self.lam_b * b) ** 2
        return f

    def dz(self, z: Tensor) -> Tensor:
        """d loss / d z."""
        return -self.c * self.y * torch.sigmoid(-self.y * z)

    def grads(self, A: Tensor, z: Tensor, w: Tensor, b: float) -> tuple[Tensor, float]:
        r = self.dz(z)
        g = A.T @ r
        gb = float(r.double().sum()) if self.fit_b else 0.0
        if self.penalty == "l2":
            g = g + w
            gb += self.lam_b**2 * b
        return g, gb

    def violation(self, g: Tensor, gb: float, w: Tensor, b: float) -> tuple[Tensor, float]:
        """Per-feature min-norm subgradient (absolute value), and the intercept's."""
        if self.penalty == "l2":
            return g.abs(), abs(gb)
        v = torch.where(w != 0, (g + torch.sign(w)).abs(), (g.abs() - 1).clamp_min(0))
        if not self.fit_b:
            vb = 0.0
        elif b != 0:
            vb = abs(gb + self.lam_b * math.copysign(1.0, b))
        else:
            vb = max(abs(gb) - self.lam_b, 0.0)
        return v, vb

    def norm(self, v: Tensor, vb: float) -> float:
        if self.penalty == "l1":
            return float(v.double().sum()) + vb
        return math.sqrt(float(v.double().square().sum()) + vb**2)

    def nonsmooth(self, w: Tensor, b: float) -> float:
        if self.penalty == "l2":
            return 0.0
        return float(w.double().abs().sum()) + (self.lam_b * abs(b) if self.fit_b else 0.0)

    def prox(self, w: Tensor, b: float, t: float) -> tuple[Tensor, float]:
        if self.penalty == "l2" or not self.fit_b:
            return (torch.nn.functional.softshrink(w, t) if self.penalty == "l1" else w), (
                b if self.fit_b else 0.0
            )
        tb = t * self.lam_b
        return torch.nn.functional.softshrink(w, t), math.copysign(max(abs(b) - tb, 0.0), b)


def _lipschitz(A: Tensor, prob: _Problem, n_power: int = 12) -> float:
    """Upper-ish bound on the smooth part's gradient Lipschitz constant (power iteration)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(A.shape[1], generator=g, dtype=torch.float64).to(A.device, A.dtype)
    v = v / v.norm().clamp_min(1e-30)
    sigma2 = 0.0
    for _ in range(n_power):
        u = A.T @ (A @ v)
        sigma2 = float(u.norm())
        v = u / max(sigma2, 1e-30)
    L = float(prob.c.max()) * (1.05 * sigma2 + (A.shape[0] if prob.fit_b else 0)) / 4
    if prob.penalty == "l2":
        L += 1.0 + prob.lam_b**2
    return max(L, 1e-12)


def _fista(
    A: Tensor, prob: _Problem, w: Tensor, b: float, target: float, max_iter: int
) -> tuple[Tensor, float, int, float]:
    """FISTA with backtracking and adaptive restart on ``A``; returns (w, b, n_iter, gnorm).

    Stops when the min-norm subgradient norm is below ``target``, after ``max_iter`` iterations,
    or when the objective has not decreased (beyond rounding) for 50 iterations.
    """
    t = 1.0 / _lipschitz(A, prob)
    w_prev, b_prev = w, b
    z = A @ w + b
    z_prev = z
    theta = 1.0
    gnorm = math.inf
    # the smooth part is summed in float64 from ``z`` in A's dtype: allow for float32 rounding
    slack = 8 * torch.finfo(A.dtype).eps * (float(prob.c.double().sum()) + 1.0)
    best, stalled = math.inf, 0
    for it in range(1, max_iter + 1):
        theta_next = (1 + math.sqrt(1 + 4 * theta**2)) / 2
        beta = (theta - 1) / theta_next
        v = w + beta * (w - w_prev)
        bv = b + beta * (b - b_prev)
        zv = z + beta * (z - z_prev)
        g, gb = prob.grads(A, zv, v, bv)
        gnorm = prob.norm(*prob.violation(g, gb, v, bv))
        if gnorm <= target:  # the extrapolated point is optimal enough: return it
            return v, bv, it - 1, gnorm
        fv = prob.smooth(zv, v, bv)
        while True:
            w_new, b_new = prob.prox(v - t * g, bv - t * gb, t)
            z_new = A @ w_new + b_new
            d, db = w_new - v, b_new - bv
            d2 = float(d.double().square().sum()) + db**2
            quad = fv + float((g.double() * d.double()).sum()) + gb * db + d2 / (2 * t)
            f_new = prob.smooth(z_new, w_new, b_new)
            if f_new <= quad + slack or d2 == 0:
                break
            t *= 0.5
        # adaptive restart (O'Donoghue & Candes): momentum pointing uphill -> reset it
        uphill = float(((v - w_new).double() * (w_new - w).double()).sum())
        uphill += (bv - b_new) * (b_new - b)
        theta = 1.0 if uphill > 0 else theta_next
        w_prev, b_prev, z_prev = w, b, z
        w, b, z = w_new, b_new, z_new
        t *= 1.05  # let the step grow back where the curvature is low
        obj = f_new + prob.nonsmooth(w, b)
        stalled += 1
        if obj < best - slack:
            best, stalled = obj, 0
        if stalled >= 50:  # no progress beyond rounding: this is as good as this dtype gets
            return w, b, it, gnorm
    return w, b, max_iter, gnorm


def fista_logistic(
    X: Float[Tensor, "sample feature"],
    y: Float[Tensor, " sample"],
    *,
    penalty: Penalty = "l1",
    C: float = 1.0,
    sample_weight: Float[Tensor, " sample"] | None = None,
    fit_intercept: bool = True,
    intercept_scaling: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 1000,
    coef_init: Float[np.ndarray, " feature"] | None = None,
    intercept_init: float = 0.0,
) -> SolverResult:
    """Minimise liblinear's L1 or L2 logistic objective (see the module docstring).

    Args:
        X: features, on the device to compute on (float32 or float64; the solver keeps the dtype).
        y: labels in ``{-1, +1}``, same device and dtype as ``X``.
        penalty: ``"l1"`` or ``"l2"``.
        C: inverse regularisation strength (liblinear's ``C``).
        sample_weight: per-sample multipliers of ``C`` (e.g. class weights).
        fit_intercept: fit an intercept ``b``.
        intercept_scaling: liblinear's ``s``: ``b`` is penalised by ``|b| / s`` (``inf``: not
            at all).
        tol: stop when the min-norm subgradient norm is below ``tol * min(n_pos, n_neg) / n``
            times its value at 0 (liblinear's rule).
        max_iter: L-BFGS-B iterations per working-set round (L1), or FISTA iterations (L2).
        coef_init: warm start for the weights.
        intercept_init: warm start for the intercept.

    Returns:
        A :class:`SolverResult`.
    """
    n, p = X.shape
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be a positive finite number, got {C}")
    if not intercept_scaling > 0:
        raise ValueError(f"intercept_scaling must be > 0 (inf allowed), got {intercept_scaling}")
    c = torch.full((n,), float(C), dtype=X.dtype, device=X.device)
    if sample_weight is not None:
        c = c * sample_weight.to(X.device, X.dtype)
    lam_b = 1.0 / intercept_scaling if fit_intercept else 0.0
    prob = _Problem(y.to(X.device, X.dtype), c, penalty, lam_b, fit_intercept)

    # reference norm at w = 0, b = 0 (liblinear's Gnorm_init), so tol means the same on warm starts
    zeros = torch.zeros(p, dtype=X.dtype, device=X.device)
    g0, gb0 = prob.grads(X, torch.zeros(n, dtype=X.dtype, device=X.device), zeros, 0.0)
    norm0 = max(prob.norm(*prob.violation(g0, gb0, zeros, 0.0)), 1e-30)
    # liblinear scales its tolerance by the minority-class share: eps * max(min(pos, neg), 1) / n
    n_pos = int((y > 0).sum())
    target = tol * max(min(n_pos, n - n_pos), 1) / n * norm0

    w = zeros if coef_init is None else torch.as_tensor(coef_init).to(X.device, X.dtype)
    b = float(intercept_init) if fit_intercept else 0.0
    if penalty == "l2":
        w, b, n_iter, gnorm = _fista(X, prob, w, b, target, max_iter)
        return SolverResult(
            w.double().cpu().numpy(), float(b), n_iter, gnorm <= target, gnorm / norm0
        )

    # L1: working-set rounds, the restricted problems solved by L-BFGS-B in float64
    n_iter, converged, gnorm, rounds, stalled_rounds = 0, False, math.inf, 0, 0
    y64, c64 = prob.y.double().cpu().numpy(), prob.c.double().cpu().numpy()
    ws = torch.zeros(0, dtype=torch.long, device=X.device)
    for rounds in range(1, 101):
        z = _scores64(X, w, b)
        r = prob.dz(z)  # float64
        g = X.T @ r.to(X.dtype)
        support = torch.nonzero(w).flatten()
        if support.numel():  # the support's gradient exactly (float32 rounding would not do)
            g = g.index_copy(0, support, (X.index_select(1, support).double().T @ r).to(g.dtype))
        gb = float(r.sum()) if fit_intercept else 0.0
        viol, vb = prob.violation(g, gb, w, b)
        gnorm = prob.norm(viol, vb)
        if gnorm <= target:
            converged = True
            break
        outside = viol.index_fill(0, support, 0) if support.numel() else viol
        if rounds > 1 and float(outside.index_fill(0, ws, 0).double().sum()) <= 0.5 * target:
            if stalled_rounds >= 2:
                break  # nothing left to add and the restricted problem no longer improves
            stalled_rounds += 1
        else:
            stalled_rounds = 0
        n_out = int((outside > 0).sum())
        n_new = min(max(2 * int(support.numel()), 32), n_out)
        new = torch.topk(outside, n_new).indices if n_new > 0 else support[:0]
        ws = torch.unique(torch.cat([support, new]))
        A = X.index_select(1, ws).to("cpu", torch.float64).numpy()
        w_ws, b, it = _l1_restricted(
            A,
            y64,
            c64,
            prob.lam_b,
            fit_intercept,
            w.index_select(0, ws).double().cpu().numpy(),
            b,
            0.1 * target,
            max_iter,
        )
        n_iter += it
        w = torch.zeros_like(w).index_copy(0, ws, torch.from_numpy(w_ws).to(X.device, X.dtype))
    return SolverResult(
        w.double().cpu().numpy(),
        float(b),
        n_iter,
        converged,
        gnorm / norm0,
        target / norm0,
        rounds,
    )


def _scores64(X: Tensor, w: Tensor, b: float) -> Tensor:
    """``X @ w + b`` in float64, from the non-zero columns only."""
    nz = torch.nonzero(w).flatten()
    z = torch.full((X.shape[0],), float(b), dtype=torch.float64, device=X.device)
    if nz.numel():
        z = z + X.index_select(1, nz).double() @ w.index_select(0, nz).double()
    return z


def _l1_restricted(
    A: np.ndarray,
    y: np.ndarray,
    c: np.ndarray,
    lam_b: float,
    fit_b: bool,
    w0: np.ndarray,
    b0: float,
    target: float,
    max_iter: int,
) -> tuple[np.ndarray, float, int]:
    """The L1 problem on the columns ``A`` (float64), by L-BFGS-B on ``w = u - v``, ``u, v >= 0``.

    Columns (and the intercept) are scaled to unit ``c``-weighted norm first, which makes the
    quasi-Newton steps far better conditioned on features of very different scales. Stops when
    the projected gradient is small enough for the 1-norm of the min-norm subgradient to be below
    ``target``, or when the objective stops decreasing (float64 rounding), or after ``max_iter``.

    Returns:
        ``(w, b, n_iter)``.
    """
    from scipy.optimize import minimize

    k = A.shape[1]
    d = np.sqrt(c @ (A * A))
    d = np.where(d > 0, d, 1.0)
    As = A / d
    lam = 1.0 / d  # |w_j| = |u_j| / d_j in the scaled variables
    db = math.sqrt(float(c.sum())) if fit_b else 1.0
    free_b = fit_b and lam_b == 0
    nb = 0 if not fit_b else (1 if free_b else 2)

    def unpack(x: np.ndarray) -> tuple[np.ndarray, float]:
        u = x[:k] - x[k : 2 * k]
        bs = 0.0 if nb == 0 else (x[2 * k] if free_b else x[2 * k] - x[2 * k + 1])
        return u, bs

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        u, bs = unpack(x)
        m = y * (As @ u + bs / db)
        f = float(c @ np.logaddexp(0.0, -m)) + float(lam @ (x[:k] + x[k : 2 * k]))
        r = -c * y * np.exp(-np.logaddexp(0.0, m))  # d loss / d z
        gu = As.T @ r
        grad = [gu + lam, -gu + lam]
        if nb:
            gbs = float(r.sum()) / db
            if free_b:
                grad.append(np.array([gbs]))
            else:
                pen = lam_b / db  # lam_b |b| = (lam_b / db) |b_scaled|
                f += pen * (x[2 * k] + x[2 * k + 1])
                grad.append(np.array([gbs + pen, -gbs + pen]))
        return f, np.concatenate(grad)

    u0 = w0 * d
    bs0 = b0 * db
    x0 = [np.maximum(u0, 0), np.maximum(-u0, 0)]
    bounds = [(0.0, None)] * (2 * k)
    if nb == 1:
        x0.append(np.array([bs0]))
        bounds.append((None, None))
    elif nb == 2:
        x0.append(np.array([max(bs0, 0.0), max(-bs0, 0.0)]))
        bounds += [(0.0, None)] * 2
    # the projected gradient in the scaled variables, times d_j, is the violation of w_j
    gtol = target / ((k + 1) * max(float(d.max()), db))
    res = minimize(
        fun,
        np.concatenate(x0),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options=dict(maxiter=max_iter, maxfun=2 * max_iter, gtol=gtol, ftol=1e-15, maxcor=30),
    )
    u, bs = unpack(res.x)
    return u / d, float(bs / db), int(res.nit)
