"""Benchmark: liblinear L1 logistic regression vs hlens's torch solver, at equal C.

Both solvers minimise the same objective (liblinear's, see :mod:`hlens.solvers`), each at its
default tolerance (``tol=1e-4``, liblinear's meaning). For each problem it reports the relative
objective difference ``(f_torch - f_liblinear) / f_liblinear`` (negative: torch is lower), the
Jaccard index of the selected (non-zero) and of the positive neurons, the wall time of each
solver and their ratio ``liblinear / torch``, and each solver's peak extra resident memory.

Problems (synthetic, shaped like CETT features; i.i.d. standard-normal features with a planted
sparse logistic signal on 64 neurons, float32):

* quick: 400 samples x 20,000 neurons.
* full: 2,000 x 229,376 (16 x 14,336: half of Llama-3.1-8B's layers) for both solvers, and
  2,000 x 458,752 (32 x 14,336: all of Llama-3.1-8B) for the torch solver only. liblinear does
  not fit the full size in 24 GiB: scikit-learn hands it a copy of X as (index, double) nodes
  and its L1 solver builds a column-wise copy too; the peak resident memory grows by about 32
  bytes per entry (measured at 2,000 x 229,376: +14.7 GB), i.e. ~29 GB on top of the 3.7 GB X.

Correlated problems (like real CETT features: non-negative, 30 shared factors, column scales
spread over ~2 orders of magnitude, labels from 8 columns, 40% positive), where FISTA used to
stall (ConvergenceWarning at max_iter=5000 on SmolLM2's 272 x 46,080 training set):

* quick: 300 x 5,000.
* full: 272 x 46,080 (30 x 1,536: SmolLM2-135M's shape).

``C`` defaults to ``4 * C_min`` and ``16 * C_min``, where ``C_min = 2 / max_j |x_j . y|``
(labels in {-1, +1}) is the smallest C at which an L1 probe without intercept selects a neuron.

Run: ``python benchmarks/bench_probe.py [--full]``, or ``run(quick)`` from ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from hlens.probe import NeuronProbe, c_min
from hlens.solvers import logistic_objective, resolve_device

QUICK_SHAPE = (400, 20_000)
FULL_SHAPE_BOTH = (2_000, 16 * 14_336)
FULL_SHAPE_TORCH = (2_000, 32 * 14_336)
LIBLINEAR_BYTES_PER_ENTRY = 32  # measured at 2,000 x 229,376: peak RSS growth / (n * p)
C_FACTORS = (4.0, 16.0)  # C = factor * C_min: a sparse and a denser probe


class _PeakRSS:
    """Peak resident memory above the level at entry, sampled every 20 ms (Linux)."""

    def __enter__(self) -> _PeakRSS:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def extra_gb(self) -> float:
        return (self.peak - self.base) / 1e9


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def synthetic(n: int, p: int, k: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 features with a planted sparse logistic signal on ``k`` neurons."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g)
    idx = torch.randperm(p, generator=g)[:k]
    w = torch.randn(k, generator=g) * 3 / k**0.5
    logits = X[:, idx] @ w
    y = (logits + 0.5 * torch.randn(n, generator=g) > 0).long()
    return X.numpy(), y.numpy()


def correlated(n: int, p: int, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CETT-like float32 features: non-negative, 30 shared factors, spread column scales."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, 30))
    X = np.abs(F @ (0.7 * rng.standard_normal((30, p))) + rng.standard_normal((n, p)))
    X = (X * np.exp(rng.normal(-3.0, 1.0, p))).astype(np.float32)
    cols = rng.choice(p, k, replace=False)
    Z = (X[:, cols] - X[:, cols].mean(0)) / X[:, cols].std(0)
    y = (Z @ rng.choice([-1.0, 1.0], k) + rng.standard_normal(n) > 0.8).astype(np.int64)
    return X, y


def _fit(solver: str, X: np.ndarray, y: np.ndarray, C: float, device: str) -> dict[str, Any]:
    probe = NeuronProbe(C=C, solver=solver, device=device if solver == "torch" else None)
    gc.collect()
    with warnings.catch_warnings(record=True) as caught, _PeakRSS() as mem:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        probe.fit(X, y)
        seconds = time.perf_counter() - start
    coef, b = probe.coef_[0], float(probe.intercept_[0])
    return {
        "seconds": seconds,
        "peak_extra_rss_gb": mem.extra_gb,
        "n_nonzero": int(np.count_nonzero(coef)),
        "n_positive": int((coef > 0).sum()),
        "n_iter": int(probe.n_iter_[0]),
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
        "convergence": getattr(probe, "convergence_", None),
        "objective": logistic_objective(X, y, coef, b, C=C),
        "_coef": coef,
    }


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def compare(
    X: np.ndarray, y: np.ndarray, *, C: float | None = None, name: str = "", liblinear: bool = True
) -> dict[str, Any]:
    """Fit both solvers (or torch only) at the same C and compare them."""
    device = str(resolve_device(None))
    C = C_FACTORS[0] * c_min(X, y) if C is None else C
    out: dict[str, Any] = {"name": name, "shape": list(X.shape), "C": C, "device": device}
    out["torch"] = _fit("torch", X, y, C, device)
    if liblinear:
        out["liblinear"] = _fit("liblinear", X, y, C, device)
        t, lib = out["torch"], out["liblinear"]
        out["objective_rel_diff"] = (t["objective"] - lib["objective"]) / lib["objective"]
        out["jaccard_nonzero"] = _jaccard(t["_coef"] != 0, lib["_coef"] != 0)
        out["jaccard_positive"] = _jaccard(t["_coef"] > 0, lib["_coef"] > 0)
        out["time_ratio"] = lib["seconds"] / t["seconds"]
    else:
        need = LIBLINEAR_BYTES_PER_ENTRY * X.shape[0] * X.shape[1] / 1e9
        out["liblinear"] = {"skipped": f"needs ~{need:.0f} GB on top of X; does not fit 24 GiB"}
    for solver in ("torch", "liblinear"):
        out[solver].pop("_coef", None)
    return out


def organism_training_set(run_dir: str = "runs/organism") -> tuple[np.ndarray, np.ndarray]:
    """The 3-vs-1 training set that ``hlens find`` fitted in ``run_dir`` (organism features)."""
    from pathlib import Path

    from hlens.features import FeatureStore
    from hlens.identify import probe_training_set
    from hlens.splits import Splits

    run = Path(run_dir)
    if not (run / "splits.json").exists():
        raise FileNotFoundError(
            f"no finished hlens find run in {run}; run `hlens find --model organism --out {run}`"
        )
    sp = Splits.load(run / "splits.json")
    X, y = probe_training_set(
        FeatureStore(run / "features"), sp.train_faithful, sp.train_hallucinated
    )
    X = X.numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    return X.astype(np.float32), np.asarray(y)


def run(quick: bool = True, data: tuple[Any, Any] | None = None, C: float | None = None) -> dict:
    """Run the benchmark; returns a JSON-serialisable dict.

    Args:
        quick: small synthetic problem only (seconds); otherwise the Llama-3.1-8B-shaped ones.
        data: optional ``(X, y)`` (e.g. the organism's CETT features), compared as well.
        C: C for every problem; ``None``: ``4 * C_min`` and ``16 * C_min`` of each problem.
    """
    cases = []
    skipped = {}
    if data is None and not quick:
        try:
            data = organism_training_set()
        except FileNotFoundError as e:
            skipped["organism"] = str(e)
    if data is not None:
        X, y = data
        X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        X = X.astype(np.float32, copy=False)
        for f in C_FACTORS if C is None else (None,):
            c = C if f is None else f * c_min(X, y)
            name = f"{X.shape[0]}x{X.shape[1]} given data, C=" + (
                f"{f:g}*C_min" if f else f"{c:.3g}"
            )
            cases.append(compare(X, y, C=c, name=name))
    shapes = (
        [(QUICK_SHAPE, True)] if quick else [(FULL_SHAPE_BOTH, True), (FULL_SHAPE_TORCH, False)]
    )
    for (n, p), both in shapes:
        X, y = synthetic(n, p)
        for f in C_FACTORS if C is None else (None,):
            c = C if f is None else f * c_min(X, y)
            name = f"synthetic {n}x{p}, C=" + (f"{f:g}*C_min" if f else f"{c:.3g}")
            cases.append(compare(X, y, C=c, name=name, liblinear=both))
        del X, y
        gc.collect()
    n, p = (300, 5_000) if quick else (272, 46_080)
    X, y = correlated(n, p)
    for f in C_FACTORS if C is None else (None,):
        c = C if f is None else f * c_min(X, y)
        name = f"correlated {n}x{p}, C=" + (f"{f:g}*C_min" if f else f"{c:.3g}")
        cases.append(compare(X, y, C=c, name=name))
    return {
        "benchmark": "probe: liblinear L1 vs hlens torch solver at equal C",
        "quick": quick,
        "torch_threads": torch.get_num_threads(),
        "cases": cases,
        "skipped": skipped,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="Llama-3.1-8B-shaped problems")
    args = parser.parse_args()
    print(json.dumps(run(quick=not args.full), indent=1))
