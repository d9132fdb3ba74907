"""Benchmark: the torch L1 probe on the real SmolLM2-135M-Instruct features of a finished run.

Refits a finished ``hlens find`` run exactly as ``hlens find`` fits it
(``hlens.identify.fit._fit_probe``: the validation split of the training ids, the C path
warm-started from the smallest C, the refit at the selected C on the whole training set; then
the layer-matched random-neuron baselines of
``hlens.probe.random_neuron_baseline`` with the run's seeds), recording every fit's convergence
(``NeuronProbe.convergence_``). At the selected C it fits sklearn's liblinear at ``tol=1e-8`` on the
same training set and compares the objectives (``hlens.solvers.logistic_objective``, liblinear's
primal) and the H-neurons (positive weights, Jaccard). The time ratio is liblinear's fit time at
``tol=1e-8`` (and at the probe's ``tol``) over the torch fit's.

The run directory comes from ``HLENS_BENCH_RUN`` (default ``/tmp/runs/smollm2``); without it the
benchmark is skipped with a message. Acceptance (#18): converged at every C and in every
baseline, objective within 1e-4 of liblinear's (relative), H-neuron Jaccard >= 0.9.

Run: ``python -m benchmarks.bench_probe_real`` or ``python -m benchmarks.run --only probe_real``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_RUN = "/tmp/runs/smollm2"


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def run(quick: bool = True) -> dict[str, Any]:
    run_dir = Path(os.environ.get("HLENS_BENCH_RUN", DEFAULT_RUN))
    needed = ["config.json", "splits.json", "summary.json", "features/manifest.json"]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing:
        return {
            "skipped": f"no finished hlens find run at {run_dir} (missing {missing}); set "
            "HLENS_BENCH_RUN to a run directory"
        }
    import torch
    from sklearn.utils.class_weight import compute_class_weight

    from benchmarks._common import liblinear_l1
    from hlens.features import FeatureStore
    from hlens.identify import FindConfig
    from hlens.identify.fit import _fit_probe
    from hlens.probe import NeuronProbe, random_neuron_baseline
    from hlens.solvers import logistic_objective
    from hlens.splits import Splits

    cfg = FindConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    summary = json.loads((run_dir / "summary.json").read_text())
    splits = Splits.load(run_dir / "splits.json")
    store = FeatureStore(run_dir / "features")

    fits: list[dict[str, Any]] = []
    real_fit = NeuronProbe.fit

    def recording_fit(self, X, y):
        t0 = time.perf_counter()
        out = real_fit(self, X, y)
        fits.append({**self.convergence_, "C": float(self.C), "seconds": time.perf_counter() - t0})
        return out

    NeuronProbe.fit = recording_fit
    try:
        t0 = time.perf_counter()
        fit = _fit_probe(store, splits, None, cfg, {})
        path_s = time.perf_counter() - t0
        n_path = len(fit.path.Cs)
        path_fits, final_fit = fits[:n_path], fits[n_path]
        probe = fit.probe
        X_train, y_train = fit.training_set(
            list(splits.train_faithful), list(splits.train_hallucinated)
        )
        X_test, y_test = fit.answer_set(list(splits.test_faithful), list(splits.test_hallucinated))
        h = probe.h_neurons_
        baseline_fits: list[dict[str, Any]] = []
        n_seeds = 2 if quick else cfg.n_random_seeds
        if len(h) > 0:
            start = len(fits)
            random_neuron_baseline(
                X_train,
                y_train,
                X_test,
                y_test,
                h,
                n_seeds=n_seeds,
                n_boot=10,
                seed=cfg.seed,
                penalty=cfg.penalty,
                solver=cfg.solver,
                C=fit.C,
                max_iter=5000,
                n_layers=h.n_layers,
                d_mlp=h.d_mlp,
                random_state=cfg.seed,
                class_weight=cfg.class_weight,
            )
            baseline_fits = fits[start:]
    finally:
        NeuronProbe.fit = real_fit

    C = float(fit.C)
    Xn = X_train.numpy() if isinstance(X_train, torch.Tensor) else np.asarray(X_train)
    y = np.asarray(y_train)
    cw = compute_class_weight(cfg.class_weight, classes=np.array([0, 1]), y=y)
    sw = cw[y] if cfg.class_weight is not None else None
    lib: dict[str, Any] = {}
    for tol in (1e-8, probe.tol):
        lib[tol] = liblinear_l1(Xn, y, C, tol, cfg.class_weight, cfg.seed)
    ref, ref_s = lib[1e-8]
    kw = dict(C=C, sample_weight=sw)
    obj_torch = logistic_objective(Xn, y, probe.coef_[0], float(probe.intercept_[0]), **kw)
    obj_lib = logistic_objective(Xn, y, ref.coef_[0], float(ref.intercept_[0]), **kw)
    pos_torch = set(np.flatnonzero(probe.coef_[0] > 0).tolist())
    pos_lib = set(np.flatnonzero(ref.coef_[0] > 0).tolist())
    nz_torch = set(np.flatnonzero(probe.coef_[0] != 0).tolist())
    nz_lib = set(np.flatnonzero(ref.coef_[0] != 0).tolist())
    torch_s = final_fit["seconds"]
    rel = (obj_torch - obj_lib) / abs(obj_lib)
    res = {
        "run": str(run_dir),
        "train_shape": list(Xn.shape),
        "selected_C": C,
        "selected_C_in_summary": summary.get("probe", {}).get("C"),
        "same_C_as_the_run": bool(np.isclose(C, summary.get("probe", {}).get("C", np.nan))),
        "path": {
            "Cs": [f["C"] for f in path_fits],
            "converged": [f["converged"] for f in path_fits],
            "rel_subgradient_norm": [f.get("rel_subgradient_norm") for f in path_fits],
            "n_iter": [f.get("n_iter") for f in path_fits],
            "seconds": [round(f["seconds"], 3) for f in path_fits],
        },
        "path_wall_s": round(path_s, 2),
        "final_fit": {k: v for k, v in final_fit.items() if k != "seconds"},
        "baselines": {
            "n_fits": len(baseline_fits),
            "n_seeds": n_seeds,
            "converged": [f["converged"] for f in baseline_fits],
            "rel_subgradient_norm": [f.get("rel_subgradient_norm") for f in baseline_fits],
        },
        "all_converged": all(f["converged"] for f in [*path_fits, final_fit, *baseline_fits]),
        "objective_torch": obj_torch,
        "objective_liblinear_tol1e-8": obj_lib,
        "objective_rel_diff": rel,
        "objective_abs_diff": obj_torch - obj_lib,
        "objective_within_1e-4": bool(rel <= 1e-4),
        "h_neurons_torch": len(pos_torch),
        "h_neurons_liblinear": len(pos_lib),
        "h_neuron_jaccard": round(_jaccard(pos_torch, pos_lib), 4),
        "nonzero_jaccard": round(_jaccard(nz_torch, nz_lib), 4),
        "jaccard_at_least_0.9": bool(_jaccard(pos_torch, pos_lib) >= 0.9),
        "torch_fit_s": round(torch_s, 3),
        "liblinear_tol1e-8_s": round(ref_s, 3),
        "liblinear_tol1e-8_n_iter": int(np.max(ref.n_iter_)),
        f"liblinear_tol{probe.tol:g}_s": round(lib[probe.tol][1], 3),
        "time_ratio_liblinear_1e-8_over_torch": round(ref_s / torch_s, 3),
        f"time_ratio_liblinear_{probe.tol:g}_over_torch": round(lib[probe.tol][1] / torch_s, 3),
        "torch_threads": torch.get_num_threads(),
    }
    return res


if __name__ == "__main__":
    print(json.dumps(run(quick=False), indent=1, default=str))
