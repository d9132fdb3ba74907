"""Check the torch L1 solver on real SmolLM2-135M-Instruct CETT features (300 x 46,080).

Extracts answer-region CETT for the first 300 questions of ``hlens/data/triviaqa_3500.jsonl``
(response = first gold alias) with ``hlens.features.extract_features`` into ``--work`` (resumable;
~8 minutes on 2 shared CPU cores), labels each question by whether it contains "which" (a lexical
label the activations encode: only there to give a sparse solution to check), and compares the
torch solver (``tol=1e-4``, ``max_iter=5000``, balanced class weights) with liblinear at
``tol=1e-4`` and ``tol=1e-8``. ``--old-solver FILE`` also runs another ``solvers.py`` (e.g. the
FISTA one from git history: ``git show 05802d7:hlens/solvers.py > old.py``). Results:
``benchmarks/results/probe_smollm2_cett.md``.

Run: ``python -m benchmarks.probe_smollm2_cett [--work DIR] [--old-solver FILE]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import liblinear_l1

ROOT = Path(__file__).resolve().parents[1]


def features(work: Path, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    import hlens
    from hlens.features import extract_features

    rows = [json.loads(line) for line in (ROOT / "hlens/data/triviaqa_3500.jsonl").open()][:n]
    exs = [hlens.Example(r["question"], r["answers"][0], id=r["id"]) for r in rows]
    exs = [e.with_answer(e.response) for e in exs]
    model = hlens.load("smollm2-135m-instruct", device="cpu")
    store = extract_features(model, exs, work / "features", progress=True)
    X = store.load("answer", flat=True).float().numpy()
    y = np.array(["which" in e.question.lower() for e in exs], dtype=np.int64)
    return X, y


def main() -> None:
    from hlens import solvers
    from hlens.probe import c_min
    from hlens.solvers import logistic_objective

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/hlens_probe_smollm2")
    p.add_argument("--old-solver", help="another solvers.py to compare")
    args = p.parse_args()
    X, y = features(Path(args.work))
    sw = (len(y) / (2 * np.bincount(y)))[y]
    ypm = torch.from_numpy(np.where(y == 1, 1.0, -1.0)).float()
    mods = [("torch", solvers)]
    if args.old_solver:
        spec = importlib.util.spec_from_file_location("old_solvers", args.old_solver)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        mods.append(("old", old))
    for mult in (4, 16):
        C = mult * c_min(X, y, "balanced")
        lib = {}
        for tol in (1e-4, 1e-8):
            m, secs = liblinear_l1(X, y, C, tol, "balanced")
            lib[tol] = (secs, m.coef_[0].astype(np.float64), m.intercept_[0])
        f_ref = logistic_objective(X, y, lib[1e-8][1], float(lib[1e-8][2]), C=C, sample_weight=sw)
        for name, mod in mods:
            t0 = time.perf_counter()
            r = mod.fista_logistic(
                torch.from_numpy(X),
                ypm,
                C=C,
                tol=1e-4,
                max_iter=5000,
                sample_weight=torch.from_numpy(sw).float(),
            )
            secs = time.perf_counter() - t0
            f = logistic_objective(X, y, r.coef, r.intercept, C=C, sample_weight=sw)
            a, b = set(np.flatnonzero(r.coef)), set(np.flatnonzero(lib[1e-8][1]))
            print(
                json.dumps(
                    {
                        "C": f"{mult} C_min",
                        "solver": name,
                        "seconds": round(secs, 2),
                        "liblinear_tol1e-4_s": round(lib[1e-4][0], 2),
                        "converged": bool(r.converged),
                        "rel_subgradient_norm": r.gnorm,
                        "nnz": len(a),
                        "nnz_liblinear": len(b),
                        "rel_objective_vs_liblinear_1e-8": (f - f_ref) / f_ref,
                        "jaccard": len(a & b) / max(len(a | b), 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
