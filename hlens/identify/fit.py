"""The probe stage of ``hlens find``: the training and answer-region sets of a feature store,
the C path on a validation split, and the refit (:class:`ProbeFit`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from hlens._deprecate import UNSET, renamed_kwarg
from hlens.features import FeatureStore
from hlens.identify.config import FindConfig
from hlens.neurons import NeuronSet
from hlens.probe import CPath, NeuronProbe, build_training_set, c_min, c_path, select_c
from hlens.splits import Splits, make_splits

__all__ = ["PROBE_TOL", "ProbeFit", "answer_set", "probe_training_set"]


def _flat(store: FeatureStore, region: str, ids: list[str]) -> torch.Tensor:
    return store.load(region, ids, flat=True) if ids else torch.empty(0, math.prod(store.shape))


def _finite_rows(X: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(X).all(dim=1)


def probe_training_set(
    store: FeatureStore,
    faithful: Sequence[str],
    hallucinated: Sequence[str],
    contrast: Literal["3-vs-1", "1-vs-1"] = "3-vs-1",
    *,
    mode: Any = UNSET,
) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
    """The probe's training set from stored features, as ``hlens find`` builds it.

    Answer features of the ``faithful`` and ``hallucinated`` ids; with ``contrast="3-vs-1"``
    also their ``all_except_answer`` features as negatives (rows without such tokens are
    dropped). ``mode=`` is the deprecated name of ``contrast``, for one release.
    """
    contrast = renamed_kwarg("probe_training_set", "mode", "contrast", mode, contrast, "3-vs-1")

    faithful, hallucinated = list(faithful), list(hallucinated)
    f, h = _flat(store, "answer", faithful), _flat(store, "answer", hallucinated)
    other = None
    if contrast == "3-vs-1":
        other = _flat(store, "all_except_answer", faithful + hallucinated)
        other = other[_finite_rows(other)]
    return build_training_set(f, h, other, contrast=contrast)


#: stopping tolerance of the L1 probe fits (the C path, the final fit, the random baselines). At
#: NeuronProbe's default 1e-4 the support had not settled on real SmolLM2 features: H-neuron
#: Jaccard 0.85 with liblinear at tol 1e-8; at 1e-5 it is 1.0, for 0.19 s instead of 0.16 s
#: (``python -m benchmarks.bench_probe_real``).
PROBE_TOL = 1e-5


def answer_set(
    store: FeatureStore, faithful: Sequence[str], hallucinated: Sequence[str]
) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
    """The answer-region features of these ids, faithful first (label 0) then hallucinated
    (label 1): what a probe is evaluated on (``hlens find``'s test set, ``hlens origin``'s)."""
    faithful, hallucinated = list(faithful), list(hallucinated)
    X = torch.cat([_flat(store, "answer", faithful), _flat(store, "answer", hallucinated)])
    y = np.array([0] * len(faithful) + [1] * len(hallucinated), dtype=np.int64)
    return X, y


@dataclass(frozen=True)
class ProbeFit:
    """The fitted probe of a run and the C path that chose its C (:func:`find`'s probe stage).

    Attributes:
        probe: the probe refit on the whole training split at ``C``.
        path: held-out quality and sparsity along the C grid (on a validation split of train).
        C: the selected C (``FindConfig.c_rule`` on ``path``).
        c_min: the smallest C that selects any neuron (``1.0`` for an L2 penalty); the grid is
            ``c_min * FindConfig.Cs``.
        store: the CETT features the sets below are read from.
        contrast: the training set's contrast (``"3-vs-1"`` or ``"1-vs-1"``).
    """

    probe: NeuronProbe
    path: CPath
    C: float
    c_min: float
    store: FeatureStore
    contrast: str

    def training_set(
        self, faithful: Sequence[str], hallucinated: Sequence[str]
    ) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
        """The probe's training set of these ids (:func:`probe_training_set`)."""
        return probe_training_set(self.store, list(faithful), list(hallucinated), self.contrast)

    def answer_set(
        self, faithful: Sequence[str], hallucinated: Sequence[str]
    ) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
        """The answer-region features of these ids, faithful first (label 0) then hallucinated
        (label 1): what the probe is evaluated on."""
        return answer_set(self.store, faithful, hallucinated)

    def h_neurons(self, model: str, dataset: str) -> NeuronSet:
        """The probe's H-neurons (positive weights); their meta names the model, data and C."""
        h = self.probe.h_neurons_
        meta = {**h.meta, "model": model, "dataset": dataset, "C": self.C}
        return type(h)(h.neurons, h.n_layers, h.d_mlp, h.weights, meta)


def _fit_probe(
    store: FeatureStore,
    splits: Splits,
    groups: dict[str, str] | None,
    cfg: FindConfig,
    meta: dict[str, Any],
) -> ProbeFit:
    """The C path on a validation split of train, then the probe refit on train at the chosen C."""
    n_layers, d_mlp = store.shape
    val = make_splits(
        splits.train_faithful,
        splits.train_hallucinated,
        test_fraction=cfg.val_fraction,
        seed=cfg.seed + 1,
        balance=False,
        groups={i: groups[i] for i in splits.train_ids} if groups else None,
    )
    params = dict(
        penalty=cfg.penalty,
        solver=cfg.solver,
        n_layers=n_layers,
        d_mlp=d_mlp,
        random_state=cfg.seed,
        max_iter=5000,
        tol=PROBE_TOL,
        class_weight=cfg.class_weight,
    )
    X_fit, y_fit = probe_training_set(
        store, list(val.train_faithful), list(val.train_hallucinated), cfg.contrast
    )
    X_val, y_val = answer_set(store, val.test_faithful, val.test_hallucinated)
    cmin = c_min(X_fit, y_fit, cfg.class_weight) if cfg.penalty == "l1" else 1.0
    Cs = [cmin * m for m in cfg.Cs]
    path = c_path(X_fit, y_fit, X_val, y_val, Cs, **params)
    C = select_c(path, cfg.c_rule)
    X_train, y_train = probe_training_set(
        store, list(splits.train_faithful), list(splits.train_hallucinated), cfg.contrast
    )
    probe = NeuronProbe(C=C, metadata=meta, **params).fit(X_train, y_train)
    return ProbeFit(probe, path, C, cmin, store, cfg.contrast)
