"""``NeuronProbe``: the sparse logistic-regression probe that finds H-neurons.

The probe reads one feature per MLP neuron (e.g. CETT contributions), in the flat neuron order
``layer * d_mlp + index``, and predicts whether a response is hallucinated (label 1) or faithful
(label 0). With an L1 penalty most weights are exactly zero; the neurons with a **positive** weight
are the paper's H-neurons (:attr:`NeuronProbe.h_neurons_`).

Besides the estimator, this module builds the paper's training sets (:func:`build_training_set`),
sweeps the regularisation strength (:func:`c_min`, :func:`c_path`, :func:`select_c`) and fits the
random-neuron control (:func:`random_neuron_baseline`).

How ``C`` is spelled: the regularisation value itself is ``C`` and a grid of them ``Cs``, upper
case as scikit-learn's ``LogisticRegression(C=...)`` and ``LogisticRegressionCV(Cs=...)``;
inside a longer snake_case name (a function, a config field, a JSON key) it is lower case:
``c_min``, ``c_path``, ``c_rule``, ``select_c``. ``select_C`` is the deprecated name of
:func:`select_c`, for one release.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 2 * 50)).astype(np.float32)
    >>> y = (X[:, 7] - X[:, 60] > 0).astype(int)
    >>> probe = NeuronProbe(C=0.5, n_layers=2, d_mlp=50).fit(X, y)
    >>> [(n.layer, n.index) for n in probe.h_neurons_.top(1)]
    [(0, 7)]
    >>> probe.score(X, y) > 0.95
    True
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int, Shaped
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_class_weight
from torch import Tensor

from hlens._deprecate import UNSET, renamed_kwarg, warn_renamed
from hlens._version import __version__
from hlens.metrics import METRIC_NAMES, ProbeMetrics, auroc, compute_metrics
from hlens.neurons import NeuronSet
from hlens.records import reject_unknown
from hlens.solvers import fista_logistic, linear_scores, resolve_device

__all__ = [
    "BaselineResult",
    "CPath",
    "NeuronProbe",
    "build_training_set",
    "c_min",
    "c_path",
    "random_neuron_baseline",
    "select_c",
]

Features = Float[Tensor, "sample neuron"] | Float[np.ndarray, "sample neuron"]
Labels = Shaped[Tensor, " sample"] | Shaped[np.ndarray, " sample"] | Sequence[int]

FORMAT = "hlens.NeuronProbe"
FORMAT_VERSION = 1
_VERSION_RE = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[\w.]+)?")


# -- validation -----------------------------------------------------------------------------------
def _check_features(X: Any, what: str = "X", n_features: int | None = None) -> Any:
    """Check ``X`` is a finite 2-D float tensor/array; returns it (low-precision -> float32)."""
    if isinstance(X, Tensor):
        if X.ndim != 2 or not X.is_floating_point():
            raise ValueError(
                f"{what} must be a 2-D float tensor of shape (sample, neuron), got a "
                f"{X.ndim}-D {X.dtype} tensor of shape {tuple(X.shape)}"
            )
        if X.dtype not in (torch.float32, torch.float64):
            X = X.float()
        finite = bool(torch.isfinite(X.sum()))
    elif isinstance(X, np.ndarray):
        if X.ndim != 2 or X.dtype.kind != "f":
            raise ValueError(
                f"{what} must be a 2-D float array of shape (sample, neuron), got a "
                f"{X.ndim}-D {X.dtype} array of shape {X.shape}"
            )
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float32)
        finite = bool(np.isfinite(X.sum()))
    else:
        raise TypeError(f"{what} must be a torch.Tensor or numpy array, got {type(X).__name__}")
    if X.shape[0] == 0:
        raise ValueError(f"{what} has no samples (shape {tuple(X.shape)})")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{what} has {X.shape[1]} features (neurons) but the probe was fitted on {n_features}"
        )
    if not finite:
        raise ValueError(f"{what} contains NaN or infinite values (or its sum overflows)")
    return X


def _check_labels(y: Any, n: int, what: str = "y") -> np.ndarray:
    arr = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},), one label per sample, got {arr.shape}")
    ok = np.isin(arr, (0, 1)) if arr.dtype != bool else np.ones(n, bool)
    if not ok.all():
        raise ValueError(
            f"{what} must hold 0/1 labels (1 = hallucinated, 0 = faithful), got values "
            f"{np.unique(arr[~ok])[:5].tolist()}"
        )
    return arr.astype(np.int64)


def _columns(X: Any, cols: np.ndarray) -> Any:
    if isinstance(X, Tensor):
        return X.index_select(1, torch.from_numpy(cols).to(X.device))
    return X[:, cols]


def _to_numpy(X: Any) -> np.ndarray:
    return X.detach().cpu().numpy() if isinstance(X, Tensor) else X


# -- the estimator --------------------------------------------------------------------------------
class NeuronProbe(ClassifierMixin, BaseEstimator):
    """L1 (or L2) logistic regression over per-neuron features; positive weights = H-neurons.

    A scikit-learn estimator: ``get_params``, ``set_params`` and ``clone`` work, ``fit`` returns
    the probe, learned attributes end in ``_``, and using an unfitted probe raises
    ``sklearn.exceptions.NotFittedError``. Both solvers minimise liblinear's objective
    ``||w||_1 + |b| / intercept_scaling + C * sum_i c_i log(1 + exp(-y_i (w . x_i + b)))``
    (``y_i`` in ``{-1, +1}``, ``c_i`` the class weights; see :mod:`hlens.solvers`), so a probe
    fitted with ``solver="torch"`` matches one fitted with ``solver="liblinear"`` at equal ``C``.

    Args:
        penalty: ``"l1"`` (sparse; the paper's probe) or ``"l2"``.
        C: inverse regularisation strength; smaller C selects fewer neurons.
        solver: ``"liblinear"`` (scikit-learn, CPU; copies ``X`` into its own format, about
            24 bytes per entry) or ``"torch"`` (optimality checks over all of ``X`` on
            ``device``, no copy of a float32 ``X`` on CPU; see :mod:`hlens.solvers`).
        max_iter: liblinear iterations; torch: L-BFGS-B iterations per working-set round (L1)
            or FISTA iterations (L2).
        tol: stopping tolerance, with liblinear's meaning for both solvers.
        n_layers: number of layers of the feature space; ``X`` has ``n_layers * d_mlp`` columns.
            ``None`` (with ``d_mlp``) infers it from ``X``; both ``None``: one layer of all columns.
        d_mlp: MLP width of the feature space.
        standardize: scale each feature to zero mean and unit variance (training statistics)
            before fitting. Off by default: CETT features are already scale-free contribution
            ratios, and the paper fits them raw. When on, ``coef_`` is in standardised units.
        class_weight: ``None``, ``"balanced"`` or ``{0: w0, 1: w1}``, multiplying ``C`` per sample.
        fit_intercept: fit an intercept.
        intercept_scaling: liblinear's intercept scaling ``s``; the intercept is penalised by
            ``|b| / s``. ``float("inf")`` (torch only) leaves it unpenalised.
        warm_start: torch solver only: start from the previous ``coef_`` (used by :func:`c_path`).
        device: torch solver only: ``"cuda"``, ``"cpu"``, ...; ``None`` picks CUDA when available.
        random_state: seed of liblinear's coordinate order (the torch solver is deterministic).
        metadata: JSON-serialisable dict saved with the probe; by convention ``model_id`` and
            ``cett`` (the feature-extraction options).

    Attributes:
        coef_: weights, shape ``(1, n_features)``, in flat neuron order.
        intercept_: intercept, shape ``(1,)``.
        classes_: ``array([0, 1])``.
        n_features_in_: number of features seen in ``fit``.
        n_layers_, d_mlp_: the feature-space shape used.
        n_iter_: solver iterations, shape ``(1,)``.
        converged_: whether the solver met its stopping rule (liblinear: fewer than ``max_iter``
            iterations; torch: the min-norm subgradient below ``tol``'s threshold). A fit that did
            not converge also warns with ``ConvergenceWarning``.
        convergence_: a JSON-ready dict for run summaries: ``solver``, ``converged``,
            ``n_iter``, ``max_iter``, ``tol`` and, for the torch solver, ``rel_subgradient_norm``
            (relative to its value at ``w = 0``), ``rel_target`` (the threshold it is compared
            with) and ``n_rounds`` (L1 working-set rounds).
        mean_, scale_: standardisation statistics (``None`` unless ``standardize``).

    Example:
        >>> from sklearn.base import clone
        >>> clone(NeuronProbe(C=0.1)).get_params()["C"]
        0.1
    """

    def __init__(
        self,
        penalty: Literal["l1", "l2"] = "l1",
        C: float = 1.0,
        *,
        solver: Literal["liblinear", "torch"] = "liblinear",
        max_iter: int = 1000,
        tol: float = 1e-4,
        n_layers: int | None = None,
        d_mlp: int | None = None,
        standardize: bool = False,
        class_weight: Literal["balanced"] | dict[int, float] | None = None,
        fit_intercept: bool = True,
        intercept_scaling: float = 1.0,
        warm_start: bool = False,
        device: str | None = None,
        random_state: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.n_layers = n_layers
        self.d_mlp = d_mlp
        self.standardize = standardize
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.warm_start = warm_start
        self.device = device
        self.random_state = random_state
        self.metadata = metadata

    # -- checks -----------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r} is invalid: expected {expected}")

        if self.penalty not in ("l1", "l2"):
            raise bad("penalty", "'l1' or 'l2'")
        if self.solver not in ("liblinear", "torch"):
            raise bad("solver", "'liblinear' or 'torch'")
        if not (self.C > 0 and math.isfinite(self.C)):
            raise bad("C", "a positive finite number")
        if self.max_iter < 1:
            raise bad("max_iter", "an integer >= 1")
        if not self.tol > 0:
            raise bad("tol", "a positive number")
        for name in ("n_layers", "d_mlp"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise bad(name, "a positive integer or None")
        if not self.intercept_scaling > 0:
            raise bad("intercept_scaling", "a positive number")
        if self.solver == "liblinear" and math.isinf(self.intercept_scaling):
            raise bad("intercept_scaling", "a finite number with solver='liblinear'")
        cw = self.class_weight
        if cw is not None and cw != "balanced" and (not isinstance(cw, dict) or set(cw) - {0, 1}):
            raise bad("class_weight", "None, 'balanced' or a dict {0: w0, 1: w1}")

    def _feature_shape(self, n_features: int) -> tuple[int, int]:
        L, D = self.n_layers, self.d_mlp
        if L is None and D is None:
            return 1, n_features
        if L is None or D is None:
            known = L if L is not None else D
            if n_features % known:
                raise ValueError(
                    f"X has {n_features} columns, not a multiple of "
                    f"{'n_layers' if L is not None else 'd_mlp'}={known}"
                )
            return (L, n_features // L) if L is not None else (n_features // D, D)
        if n_features != L * D:
            raise ValueError(
                f"X has {n_features} columns but n_layers * d_mlp = {L} * {D} = {L * D}; the "
                f"columns must be the flat neuron index layer * d_mlp + index"
            )
        return L, D

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(X, y) or "
                f"{type(self).__name__}.load(path) first"
            )

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, X: Features, y: Labels) -> NeuronProbe:
        """Fit the probe.

        Args:
            X: features, shape ``(sample, n_layers * d_mlp)``, flat neuron order.
            y: labels, 1 = hallucinated, 0 = faithful; both classes must be present.

        Returns:
            The fitted probe.
        """
        self._validate_params()
        X = _check_features(X)
        n, p = X.shape
        y = _check_labels(y, n)
        if np.unique(y).size < 2:
            raise ValueError(f"y must contain both classes 0 and 1, got only {np.unique(y)}")
        self.n_layers_, self.d_mlp_ = self._feature_shape(p)
        prev = self.coef_[0] if self.warm_start and hasattr(self, "coef_") else None
        prev_b = float(self.intercept_[0]) if prev is not None else 0.0
        if prev is not None and prev.shape[0] != p:
            prev = None

        self.mean_ = self.scale_ = None
        if self.standardize:
            Xf = X.double() if isinstance(X, Tensor) else X.astype(np.float64)
            mean, std = Xf.mean(0), Xf.std(0)
            self.mean_, self.scale_ = _to_numpy(mean), _to_numpy(std)
            self.scale_ = np.where(self.scale_ > 0, self.scale_, 1.0)
            X = (
                X - X.new_tensor(self.mean_)
                if isinstance(X, Tensor)
                else X - self.mean_.astype(X.dtype)
            )
            X = X / (
                X.new_tensor(self.scale_) if isinstance(X, Tensor) else self.scale_.astype(X.dtype)
            )

        if self.solver == "liblinear":
            coef, b, n_iter = self._fit_liblinear(_to_numpy(X), y)
            self.convergence_ = {
                "solver": "liblinear",
                "converged": bool(n_iter < self.max_iter),
                "n_iter": int(n_iter),
                "max_iter": int(self.max_iter),
                "tol": float(self.tol),
            }
        else:
            coef, b, n_iter = self._fit_torch(X, y, prev, prev_b)
        self.converged_ = bool(self.convergence_["converged"])
        self.coef_ = coef[None, :]
        self.intercept_ = np.array([b], dtype=np.float64)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = p
        self.n_iter_ = np.array([n_iter])
        return self

    def _fit_liblinear(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, int]:
        model = LogisticRegression(
            l1_ratio=1.0 if self.penalty == "l1" else 0.0,
            C=float(self.C),
            solver="liblinear",
            tol=self.tol,
            max_iter=self.max_iter,
            fit_intercept=self.fit_intercept,
            intercept_scaling=self.intercept_scaling,
            class_weight=self.class_weight,
            random_state=self.random_state,
        ).fit(X, y)
        b = float(model.intercept_[0]) if self.fit_intercept else 0.0
        return model.coef_[0].astype(np.float64), b, int(np.max(model.n_iter_))

    def _fit_torch(
        self, X: Any, y: np.ndarray, prev: np.ndarray | None, prev_b: float
    ) -> tuple[np.ndarray, float, int]:
        device = resolve_device(self.device)
        Xt = (X if isinstance(X, Tensor) else torch.from_numpy(X)).to(device)
        yt = torch.from_numpy(np.where(y == 1, 1.0, -1.0)).to(device, Xt.dtype)
        sw = None
        if self.class_weight is not None:
            cw = compute_class_weight(self.class_weight, classes=np.array([0, 1]), y=y)
            sw = torch.from_numpy(cw[y]).to(device, Xt.dtype)
        res = fista_logistic(
            Xt,
            yt,
            penalty=self.penalty,
            C=float(self.C),
            sample_weight=sw,
            fit_intercept=self.fit_intercept,
            intercept_scaling=float(self.intercept_scaling),
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            coef_init=prev,
            intercept_init=prev_b,
        )
        self.convergence_ = {
            "solver": "torch",
            "converged": bool(res.converged),
            "n_iter": int(res.n_iter),
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "rel_subgradient_norm": float(res.gnorm),
            "rel_target": float(res.target),
            "n_rounds": int(res.n_rounds),
        }
        if not res.converged:
            warnings.warn(
                f"the torch solver did not converge in max_iter={self.max_iter} iterations per "
                f"round (relative subgradient norm {res.gnorm:.2e}); increase max_iter or tol",
                ConvergenceWarning,
                stacklevel=3,
            )
        return res.coef, res.intercept, res.n_iter

    # -- prediction -------------------------------------------------------------------------------
    def _raw_coef(self) -> tuple[np.ndarray, float]:
        """Weights and intercept on the unstandardised features."""
        coef, b = self.coef_[0], float(self.intercept_[0])
        if self.mean_ is None:
            return coef, b
        raw = coef / self.scale_
        return raw, b - float(self.mean_ @ raw)

    def decision_function(self, X: Features) -> Float[np.ndarray, " sample"]:
        """``X @ coef + intercept`` (float64); positive means hallucinated."""
        self._check_fitted()
        X = _check_features(X, n_features=self.n_features_in_)
        return linear_scores(X, *self._raw_coef())

    def predict_proba(self, X: Features) -> Float[np.ndarray, "sample 2"]:
        """Probabilities of ``[faithful, hallucinated]``, shape ``(sample, 2)``."""
        p1 = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - p1, p1], axis=1)

    def predict(self, X: Features) -> Int[np.ndarray, " sample"]:
        """Predicted labels, 1 = hallucinated."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def score(self, X: Features, y: Labels, sample_weight: Any = None) -> float:
        """Accuracy on ``(X, y)``."""
        pred = self.predict(X)
        y = _check_labels(y, pred.shape[0])
        return float(np.average(pred == y, weights=sample_weight))

    def evaluate(
        self, X: Features, y: Labels, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
    ) -> ProbeMetrics:
        """Accuracy, precision, recall, F1 and AUROC with bootstrap intervals on ``(X, y)``."""
        score = self.decision_function(X)
        y = _check_labels(y, score.shape[0])
        return compute_metrics(
            y,
            score,
            (score > 0).astype(np.int64),
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )

    @property
    def h_neurons_(self) -> NeuronSet:
        """Neurons with a positive weight (the H-neurons), sorted by weight, largest first."""
        self._check_fitted()
        coef = self.coef_[0]
        pos = np.flatnonzero(coef > 0)
        pos = pos[np.argsort(-coef[pos], kind="stable")]
        meta = {"source": "NeuronProbe", "penalty": self.penalty, "C": float(self.C)}
        if self.metadata and "model_id" in self.metadata:
            meta["model_id"] = self.metadata["model_id"]
        return NeuronSet.from_flat(
            pos.tolist(),
            n_layers=self.n_layers_,
            d_mlp=self.d_mlp_,
            weights=coef[pos].tolist(),
            meta=meta,
        )

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``probe.safetensors`` (weights) and ``probe.json`` (everything else) in ``path``.

        Args:
            path: a directory (created if missing).
        """
        self._check_fitted()
        params = self.get_params(deep=False)
        metadata = params.pop("metadata")
        if isinstance(params["class_weight"], dict):
            params["class_weight"] = {str(k): float(v) for k, v in params["class_weight"].items()}
        info = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "hlens_version": __version__,
            "params": params,
            "classes": self.classes_.tolist(),
            "n_layers": self.n_layers_,
            "d_mlp": self.d_mlp_,
            "n_features": int(self.n_features_in_),
            "n_iter": int(self.n_iter_[0]),
            "convergence": getattr(self, "convergence_", None),
            "metadata": metadata,
        }
        try:
            text = json.dumps(info, indent=1)
        except TypeError as e:
            raise ValueError(f"probe metadata must be JSON-serialisable: {e}") from e
        tensors = {"coef": self.coef_[0].astype(np.float64), "intercept": self.intercept_}
        if self.mean_ is not None:
            tensors |= {"scaler_mean": self.mean_, "scaler_scale": self.scale_}
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(path / "probe.safetensors"),
            metadata={"format": FORMAT},
        )
        (path / "probe.json").write_text(text)

    @classmethod
    def load(
        cls, path: str | Path, *, expected_shape: tuple[int, int] | None = None
    ) -> NeuronProbe:
        """Read a probe written by :meth:`save`, checking files, format, version and shape.

        Args:
            path: the directory given to :meth:`save`.
            expected_shape: ``(n_layers, d_mlp)`` the probe must have (e.g. the model's).
        """
        path = Path(path)
        files = {name: path / name for name in ("probe.json", "probe.safetensors")}
        for name, f in files.items():
            if not f.is_file():
                raise FileNotFoundError(
                    f"{path} has no {name}; a saved NeuronProbe is a directory with probe.json "
                    f"and probe.safetensors (written by NeuronProbe.save)"
                )
        try:
            info = json.loads(files["probe.json"].read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{files['probe.json']} is not valid JSON: {e}") from e
        where = files["probe.json"]
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            got = info.get("format") if isinstance(info, dict) else type(info).__name__
            raise ValueError(
                f"{where} is not a NeuronProbe file: format={got!r}, expected {FORMAT!r}"
            )
        need = ("format_version", "hlens_version", "params", "classes", "n_layers", "d_mlp")
        reject_unknown(
            str(where), info, ("format", *need, "n_features", "n_iter", "convergence", "metadata")
        )
        missing = [k for k in need if k not in info]
        if missing:
            raise ValueError(f"{where} lacks keys {missing}; expected {list(need)}")
        if info["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{where} has format_version={info['format_version']!r}; this hlens "
                f"({__version__}) reads format_version={FORMAT_VERSION}"
            )
        if not isinstance(info["hlens_version"], str) or not _VERSION_RE.fullmatch(
            info["hlens_version"]
        ):
            raise ValueError(
                f"{where} has hlens_version={info['hlens_version']!r}, not a version like '0.1.0'"
            )
        if info["classes"] != [0, 1]:
            raise ValueError(f"{where} has classes={info['classes']!r}, expected [0, 1]")
        n_layers, d_mlp = info["n_layers"], info["d_mlp"]
        if expected_shape is not None and (n_layers, d_mlp) != tuple(expected_shape):
            raise ValueError(
                f"{path} holds a probe for n_layers={n_layers}, d_mlp={d_mlp}, but "
                f"expected_shape=(n_layers, d_mlp)={tuple(expected_shape)}"
            )
        params = dict(info["params"])
        if isinstance(params.get("class_weight"), dict):
            params["class_weight"] = {int(k): float(v) for k, v in params["class_weight"].items()}
        valid = set(cls().get_params())
        unknown = set(params) - valid
        if unknown:
            raise ValueError(
                f"{where} has unknown params {sorted(unknown)}; valid: {sorted(valid)}"
            )
        probe = cls(**params, metadata=info.get("metadata"))
        try:
            tensors = load_file(str(files["probe.safetensors"]))
        except (SafetensorError, OSError) as e:
            raise ValueError(
                f"{files['probe.safetensors']} is not a readable safetensors file: {e}"
            ) from e
        n_features = n_layers * d_mlp
        for key, shape in (("coef", (n_features,)), ("intercept", (1,))):
            if key not in tensors or tensors[key].shape != shape:
                got = tensors[key].shape if key in tensors else "missing"
                raise ValueError(
                    f"{files['probe.safetensors']}: {key!r} has shape {got}, expected {shape} "
                    f"(n_layers={n_layers} * d_mlp={d_mlp})"
                )
        probe.coef_ = tensors["coef"].astype(np.float64)[None, :]
        probe.intercept_ = tensors["intercept"].astype(np.float64)
        probe.classes_ = np.array([0, 1])
        probe.n_features_in_ = n_features
        probe.n_layers_, probe.d_mlp_ = n_layers, d_mlp
        probe.n_iter_ = np.array([int(info.get("n_iter", 0))])
        if isinstance(info.get("convergence"), dict):  # probes saved before it have none
            probe.convergence_ = dict(info["convergence"])
            probe.converged_ = bool(probe.convergence_.get("converged"))
        probe.mean_ = tensors.get("scaler_mean")
        probe.scale_ = tensors.get("scaler_scale")
        if probe.standardize and (probe.mean_ is None or probe.scale_ is None):
            raise ValueError(f"{path}: standardize=True but the scaler statistics are missing")
        return probe


# -- training sets --------------------------------------------------------------------------------
def build_training_set(
    answer_faithful: Float[Tensor, "n_faithful neuron"] | Float[np.ndarray, "n_faithful neuron"],
    answer_hallucinated: Float[Tensor, "n_halluc neuron"] | Float[np.ndarray, "n_halluc neuron"],
    other: Float[Tensor, "_ neuron"]
    | Float[np.ndarray, "_ neuron"]
    | Sequence[Float[Tensor, "_ neuron"] | Float[np.ndarray, "_ neuron"]]
    | None = None,
    *,
    contrast: Literal["3-vs-1", "1-vs-1"] = "3-vs-1",
    mode: Any = UNSET,
) -> tuple[
    Float[Tensor, "total neuron"] | Float[np.ndarray, "total neuron"], Int[np.ndarray, " total"]
]:
    """Stack per-region features into the paper's training sets.

    * ``"1-vs-1"``: hallucinated-answer features (y=1) vs faithful-answer features (y=0).
    * ``"3-vs-1"`` (the paper's default): hallucinated-answer features (y=1) vs three negative
      groups (y=0): faithful-answer features, and the non-answer ("other") features of both the
      faithful and the hallucinated responses. The probe must then fire on the hallucinated
      *answer* specifically, not on anything in a hallucinated response.

    Rows are ordered faithful answers, hallucinated answers, then ``other``.

    Args:
        answer_faithful: answer-span features of faithful responses.
        answer_hallucinated: answer-span features of hallucinated responses.
        other: non-answer features of faithful and hallucinated responses: one matrix, or a
            sequence of matrices (e.g. ``[other_faithful, other_hallucinated]``). Required by
            ``"3-vs-1"``; must be ``None`` for ``"1-vs-1"``.
        contrast: ``"3-vs-1"`` or ``"1-vs-1"`` (:attr:`hlens.FindConfig.contrast`).
        mode: the deprecated name of ``contrast``, for one release.

    Returns:
        ``(X, y)``: a tensor if any input is a tensor, else an array; and int64 labels.

    Example:
        >>> f, h, o = np.zeros((2, 4)), np.ones((3, 4)), np.zeros((5, 4))
        >>> X, y = build_training_set(f, h, o, contrast="3-vs-1")
        >>> X.shape, y.tolist()
        ((10, 4), [0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    """
    contrast = renamed_kwarg("build_training_set", "mode", "contrast", mode, contrast, "3-vs-1")
    if contrast not in ("3-vs-1", "1-vs-1"):
        raise ValueError(f"contrast={contrast!r} is invalid: expected '3-vs-1' or '1-vs-1'")
    if contrast == "3-vs-1" and other is None:
        raise ValueError("contrast='3-vs-1' needs the non-answer features in `other`; got None")
    if contrast == "1-vs-1" and other is not None:
        raise ValueError("contrast='1-vs-1' uses answer features only; pass other=None")
    others = (
        [] if other is None else [other] if isinstance(other, Tensor | np.ndarray) else list(other)
    )
    parts = [answer_faithful, answer_hallucinated, *others]
    names = ["answer_faithful", "answer_hallucinated"] + [f"other[{i}]" for i in range(len(others))]
    parts = [_check_features(x, what) for x, what in zip(parts, names)]
    widths = {p.shape[1] for p in parts}
    if len(widths) > 1:
        got = ", ".join(f"{w}={p.shape[1]}" for w, p in zip(names, parts))
        raise ValueError(f"all feature matrices must have the same number of neurons, got {got}")
    labels = [0, 1] + [0] * len(others)
    y = np.concatenate([np.full(p.shape[0], lab, dtype=np.int64) for p, lab in zip(parts, labels)])
    if any(isinstance(p, Tensor) for p in parts):
        t = [p if isinstance(p, Tensor) else torch.from_numpy(p) for p in parts]
        dtype = torch.float64 if all(p.dtype == torch.float64 for p in t) else torch.float32
        return torch.cat([p.to(t[0].device, dtype) for p in t]), y
    return np.concatenate(parts), y


# -- regularisation path --------------------------------------------------------------------------
@dataclass(frozen=True)
class CPath:
    """Held-out quality and sparsity of probes along a grid of ``C`` (ascending).

    Attributes:
        Cs: the C values, ascending.
        n_positive: neurons with a positive weight (H-neuron candidates) at each C.
        n_nonzero: neurons with a non-zero weight at each C.
        accuracy: held-out accuracy.
        auroc: held-out AUROC of the decision values.
        auroc_se: its standard error (Hanley & McNeil 1982), used by the 1-SE rule.
        f1: held-out F1 of label 1 (hallucinated).
        fit_seconds: wall time of each fit.
        params: the other probe parameters.
    """

    Cs: tuple[float, ...]
    n_positive: tuple[int, ...]
    n_nonzero: tuple[int, ...]
    accuracy: tuple[float, ...]
    auroc: tuple[float, ...]
    auroc_se: tuple[float, ...]
    f1: tuple[float, ...]
    fit_seconds: tuple[float, ...]
    params: dict[str, Any]

    def __len__(self) -> int:
        return len(self.Cs)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CPath:
        ints = ("n_positive", "n_nonzero")
        floats = ("Cs", "accuracy", "auroc", "auroc_se", "f1", "fit_seconds")
        try:
            kw: dict[str, Any] = {k: tuple(int(x) for x in d[k]) for k in ints}
            kw |= {k: tuple(float(x) for x in d[k]) for k in floats}
        except KeyError as e:
            raise ValueError(f"not a CPath dict: missing {e}; got keys {sorted(d)}") from e
        return cls(**kw, params=dict(d.get("params", {})))


def _hanley_mcneil_se(a: float, n_pos: int, n_neg: int) -> float:
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def c_min(X: Features, y: Labels, class_weight: Literal["balanced"] | None = None) -> float:
    """Smallest C at which liblinear's L1 objective selects any neuron (w = 0 is optimal below).

    ``2 / max_j |sum_i s_i y_i x_ij|`` with labels in {-1, +1} and sample weights ``s_i`` (1, or
    the probe's ``class_weight="balanced"`` weights). The intercept is ignored.

    Example:
        >>> c_min(np.array([[1.0, 0.0], [-1.0, 2.0]], dtype=np.float32), np.array([1, 0]))
        1.0
    """
    X = torch.as_tensor(X)
    y = np.asarray(y, dtype=np.int64)
    ypm = torch.as_tensor(2.0 * y - 1.0, dtype=X.dtype)
    if class_weight is not None:
        w = compute_class_weight(class_weight, classes=np.array([0, 1]), y=y)
        ypm = ypm * torch.as_tensor(w[y], dtype=X.dtype)
    grad = (ypm @ X).abs().max().item() / 2.0
    return 1.0 / grad if grad > 0 else 1.0


def c_path(
    X_train: Features,
    y_train: Labels,
    X_val: Float[Tensor, "val_sample neuron"] | Float[np.ndarray, "val_sample neuron"],
    y_val: Shaped[Tensor, " val_sample"] | Shaped[np.ndarray, " val_sample"] | Sequence[int],
    Cs: Sequence[float] | Float[np.ndarray, " c"],
    **probe_params: Any,
) -> CPath:
    """Fit a probe for each ``C`` (ascending, warm-started with the torch solver) and score it.

    Args:
        X_train: training features.
        y_train: training labels (1 = hallucinated).
        X_val: held-out features.
        y_val: held-out labels.
        Cs: C values (any order; duplicates removed).
        **probe_params: other :class:`NeuronProbe` parameters (``penalty``, ``solver``, ...).

    Returns:
        A :class:`CPath`; pick a C with :func:`select_C`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((200, 40)); y = (X[:, 3] > 0).astype(int)
        >>> path = c_path(X[:150], y[:150], X[150:], y[150:], [0.01, 0.1, 1.0])
        >>> path.n_nonzero[0] <= path.n_nonzero[-1]
        True
    """
    Cs = sorted({float(c) for c in np.asarray(Cs, dtype=np.float64).ravel()})
    if not Cs or Cs[0] <= 0:
        raise ValueError(f"Cs must be a non-empty list of positive numbers, got {Cs}")
    probe = NeuronProbe(**probe_params)
    probe.set_params(warm_start=True)
    X_train = _check_features(X_train, "X_train")
    if probe.solver == "torch" and isinstance(X_train, np.ndarray):
        X_train = torch.from_numpy(X_train).to(resolve_device(probe.device))  # move once
    yv = _check_labels(y_val, X_val.shape[0], "y_val")
    n_pos, n_neg = int(yv.sum()), int((1 - yv).sum())
    rows: dict[str, list[Any]] = {
        k: []
        for k in ("n_positive", "n_nonzero", "accuracy", "auroc", "auroc_se", "f1", "fit_seconds")
    }
    for C in Cs:
        start = time.perf_counter()
        probe.set_params(C=C).fit(X_train, y_train)
        rows["fit_seconds"].append(time.perf_counter() - start)
        score = probe.decision_function(X_val)
        m = compute_metrics(yv, score, (score > 0).astype(np.int64), n_boot=0)
        a = auroc(yv, score)
        rows["n_positive"].append(int((probe.coef_ > 0).sum()))
        rows["n_nonzero"].append(int((probe.coef_ != 0).sum()))
        rows["accuracy"].append(m.accuracy)
        rows["f1"].append(m.f1)
        rows["auroc"].append(a)
        rows["auroc_se"].append(_hanley_mcneil_se(a, n_pos, n_neg) if n_pos and n_neg else math.nan)
    params = {k: v for k, v in probe.get_params().items() if k not in ("C", "warm_start")}
    params = json.loads(json.dumps(params, default=str))
    return CPath(tuple(Cs), **{k: tuple(v) for k, v in rows.items()}, params=params)


def select_c(path: CPath, rule: Literal["best_auroc", "auroc_1se"] = "best_auroc") -> float:
    """Pick a C from a :class:`CPath`.

    * ``"best_auroc"``: the highest held-out AUROC; ties broken by fewer positive neurons,
      then by the smaller C.
    * ``"auroc_1se"``: the one-standard-error rule: among the Cs whose AUROC is within one
      standard error (Hanley-McNeil) of the best, the one with the fewest positive neurons
      (ties: smaller C). Prefers a sparser, more interpretable neuron set at no significant loss.

    Example:
        >>> p = CPath((0.1, 1.0), (3, 9), (4, 12), (0.8, 0.9), (0.89, 0.90), (0.02, 0.02),
        ...           (0.8, 0.9), (0.1, 0.1), {})
        >>> select_c(p), select_c(p, "auroc_1se")
        (1.0, 0.1)
    """
    if len(path) == 0:
        raise ValueError("select_c needs a non-empty CPath")
    if rule not in ("best_auroc", "auroc_1se"):
        raise ValueError(f"rule={rule!r} is invalid: expected 'best_auroc' or 'auroc_1se'")
    auc = np.nan_to_num(np.asarray(path.auroc, dtype=np.float64), nan=-np.inf)
    best = int(np.lexsort((path.Cs, path.n_positive, -auc))[0])
    if rule == "best_auroc":
        return path.Cs[best]
    se = path.auroc_se[best]
    floor = auc[best] - (se if math.isfinite(se) else 0.0)
    ok = [i for i in range(len(path)) if auc[i] >= floor]
    return path.Cs[min(ok, key=lambda i: (path.n_positive[i], path.Cs[i]))]


def select_C(path: CPath, rule: Literal["best_auroc", "auroc_1se"] = "best_auroc") -> float:
    """Deprecated name of :func:`select_c` (kept for one release)."""
    warn_renamed("hlens.probe.select_C", "hlens.probe.select_c")
    return select_c(path, rule)


# -- random-neuron control ------------------------------------------------------------------------
@dataclass(frozen=True)
class BaselineResult:
    """Probes on the chosen neurons vs on layer-matched random neurons.

    Attributes:
        reference: test metrics of a probe on the given neurons.
        random: test metrics of a probe on random neurons, one per seed.
        seeds: the seeds passed to ``NeuronSet.layer_matched_random``.
        random_neurons: flat indices of each seed's random neurons.
        mean: mean over seeds of each random-probe metric.
        ci: t-interval (at ``confidence``) of that mean; ``(nan, nan)`` with one seed.
        confidence: interval level.
    """

    reference: ProbeMetrics
    random: tuple[ProbeMetrics, ...]
    seeds: tuple[int, ...]
    random_neurons: tuple[tuple[int, ...], ...]
    mean: dict[str, float]
    ci: dict[str, tuple[float, float]]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.to_dict(),
            "random": [m.to_dict() for m in self.random],
            "seeds": list(self.seeds),
            "random_neurons": [list(r) for r in self.random_neurons],
            "mean": dict(self.mean),
            "ci": {k: list(v) for k, v in self.ci.items()},
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineResult:
        return cls(
            reference=ProbeMetrics.from_dict(d["reference"]),
            random=tuple(ProbeMetrics.from_dict(m) for m in d["random"]),
            seeds=tuple(int(s) for s in d["seeds"]),
            random_neurons=tuple(tuple(int(i) for i in r) for r in d["random_neurons"]),
            mean={k: float(v) for k, v in d["mean"].items()},
            ci={k: (float(v[0]), float(v[1])) for k, v in d["ci"].items()},
            confidence=float(d["confidence"]),
        )


def random_neuron_baseline(
    X_train: Features,
    y_train: Labels,
    X_test: Float[Tensor, "test_sample neuron"] | Float[np.ndarray, "test_sample neuron"],
    y_test: Shaped[Tensor, " test_sample"] | Shaped[np.ndarray, " test_sample"] | Sequence[int],
    neurons: NeuronSet,
    n_seeds: int = 5,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    **probe_params: Any,
) -> BaselineResult:
    """Compare a probe on ``neurons`` with probes on as many layer-matched random neurons.

    For each seed ``seed, seed + 1, ...`` the random set has the same number of neurons in each
    layer as ``neurons`` and none of them (``neurons.layer_matched_random``). Every probe is a
    :class:`NeuronProbe` with ``probe_params`` fitted on the selected columns only.

    Args:
        X_train: training features over all neurons (flat order of ``neurons``' model).
        y_train: training labels.
        X_test: test features.
        y_test: test labels.
        neurons: the neuron set under test (e.g. ``probe.h_neurons_``).
        n_seeds: number of random sets.
        n_boot: bootstrap resamples for each :class:`ProbeMetrics`.
        confidence: interval level (bootstrap and across-seed t-interval).
        seed: first seed.
        **probe_params: :class:`NeuronProbe` parameters (``n_layers``/``d_mlp`` are ignored).

    Returns:
        A :class:`BaselineResult`.
    """
    from scipy import stats

    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    if len(neurons) == 0:
        raise ValueError("neurons is empty; the baseline needs at least one neuron")
    n_features = neurons.n_layers * neurons.d_mlp
    X_train = _check_features(X_train, "X_train")
    X_test = _check_features(X_test, "X_test")
    for what, X in (("X_train", X_train), ("X_test", X_test)):
        if X.shape[1] != n_features:
            raise ValueError(
                f"{what} has {X.shape[1]} columns but neurons belongs to a model with n_layers * "
                f"d_mlp = {neurons.n_layers} * {neurons.d_mlp} = {n_features}"
            )
    params = {k: v for k, v in probe_params.items() if k not in ("n_layers", "d_mlp")}

    def run(cols: np.ndarray) -> ProbeMetrics:
        probe = NeuronProbe(**params).fit(_columns(X_train, cols), y_train)
        return probe.evaluate(
            _columns(X_test, cols), y_test, n_boot=n_boot, confidence=confidence, seed=seed
        )

    reference = run(neurons.flat().numpy())
    seeds = tuple(range(seed, seed + n_seeds))
    sets = [neurons.layer_matched_random(s).flat().numpy() for s in seeds]
    random = tuple(run(cols) for cols in sets)
    mean, ci = {}, {}
    for k in METRIC_NAMES:
        vals = np.array([getattr(m, k) for m in random], dtype=np.float64)
        mean[k] = float(vals.mean())
        if n_seeds > 1:
            half = (
                stats.t.ppf((1 + confidence) / 2, n_seeds - 1)
                * vals.std(ddof=1)
                / math.sqrt(n_seeds)
            )
            ci[k] = (float(vals.mean() - half), float(vals.mean() + half))
        else:
            ci[k] = (math.nan, math.nan)
    return BaselineResult(
        reference,
        random,
        seeds,
        tuple(tuple(int(i) for i in c) for c in sets),
        mean,
        ci,
        float(confidence),
    )
