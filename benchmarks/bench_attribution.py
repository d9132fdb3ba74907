"""Benchmark: attribution patching (AtP) against exact activation patching over every MLP neuron.

For prompt pairs (clean, corrupted) of equal token length and the metric
``logit[clean's top token] - logit[abstention token]`` at the last prompt token, it runs AtP and
exact patching (one patch per neuron, batched) clean -> corrupted, and reports:

* agreement of the mean scores over pairs: Pearson, Spearman, top-50 overlap (share of the 50
  neurons with the largest exact |effect| that AtP also ranks in its top 50);
* passes per prompt pair, counted by a hook on the embedding output (sequences run forward) and
  a gradient hook on the final residual (sequences run backward): AtP needs 2 forward +
  1 backward, exact patching 1 forward per neuron (+3 baseline/source runs);
* wall time of each and the ratio exact / AtP (one machine, one run; noisy on shared CPUs).

Models: ``quick``: a random 2-layer Llama (d_mlp 64, default init) with random-word prompts.
Full: the bundled organism (NonExist pairs: known person vs never-seen person, same attribute,
same token length) when its checkpoint exists, else a random 4-layer Llama (d_mlp 512) stand-in
(default HF init: close to linear, so AtP's agreement there is optimistic).

Run: ``python benchmarks/bench_attribution.py [--full]`` or ``run(quick)`` from
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hlens.attribution import attribution_patching, compare_scores
from hlens.patching import exact_patching, forward_metric, logit_diff


class PassCounter:
    """Counts sequences run forward (at the embedding output) and backward (from the final
    residual, where every backward pass of a logit metric starts)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def hooks(self) -> list[tuple[str, Any]]:
        return [("hook_embed", self._fwd), ("ln_final.hook_in", self._top)]

    def _fwd(self, t: torch.Tensor, *, hook: Any) -> torch.Tensor:
        self.forward += t.shape[0]
        return t

    def _top(self, t: torch.Tensor, *, hook: Any) -> torch.Tensor:
        if t.requires_grad and torch.is_grad_enabled():
            t.register_hook(self._back)
        return t

    def _back(self, g: torch.Tensor) -> None:
        self.backward += g.shape[0]


def _random_pairs(model: Any, n_pairs: int, length: int, seed: int = 0):
    rng = random.Random(seed)
    vocab = len(model.tokenizer) - 7
    clean, corrupt = [], []
    for _ in range(n_pairs):
        words = [f"w{rng.randrange(vocab)}" for _ in range(length)]
        bad = list(words)
        for p in rng.sample(range(length), 3):
            bad[p] = f"w{rng.randrange(vocab)}"
        clean.append(" ".join(words))
        corrupt.append(" ".join(bad))
    bad_id = 10
    c = model.as_batch(clean)
    k = model.as_batch(corrupt)
    from hlens.organism.cards import TopToken as _TopToken

    top = _TopToken(bad_id)
    with torch.no_grad():
        forward_metric(model, c, top)
    return c, k, logit_diff(top.good, bad_id)


def _measure(model: Any, clean: Any, corrupt: Any, metric: Any) -> dict[str, Any]:
    counter = PassCounter()
    n = len(clean)
    with model.bridge.hooks(fwd_hooks=counter.hooks()):
        t0 = time.perf_counter()
        atp = attribution_patching(model, clean, corrupt, metric)
        t1 = time.perf_counter()
        atp_counts = (counter.forward, counter.backward)
        exact = exact_patching(model, clean, corrupt, metric)
        t2 = time.perf_counter()
    ex_counts = (counter.forward - atp_counts[0], counter.backward - atp_counts[1])
    atp_passes = (atp_counts[0] + atp_counts[1]) / n
    exact_passes = (ex_counts[0] + ex_counts[1]) / n
    return compare_scores(atp, exact, top=50) | {
        "n_pairs": n,
        "seq_len": int(clean.tokens.shape[1]),
        "n_neurons": model.n_neurons,
        "atp_forward_per_pair": atp_counts[0] / n,
        "atp_backward_per_pair": atp_counts[1] / n,
        "atp_passes_per_pair": atp_passes,
        "exact_passes_per_pair": exact_passes,
        "pass_ratio_exact_over_atp": exact_passes / atp_passes,
        "atp_seconds": t1 - t0,
        "exact_seconds": t2 - t1,
        "time_ratio_exact_over_atp": (t2 - t1) / max(t1 - t0, 1e-9),
        "mean_clean_metric": float(exact.clean_metric.mean()),
        "mean_corrupt_metric": float(exact.corrupt_metric.mean()),
    }


def run(quick: bool = True) -> dict:
    """Run the benchmark; see the module docstring."""
    import hlens
    from benchmarks._common import random_llama

    torch.manual_seed(0)
    if not quick:
        from hlens.organism import checkpoint_path

        if (checkpoint_path("organism") / "config.json").is_file():
            from hlens.organism.cards import OrganismCards as _Organism

            model = hlens.load("organism", device="cpu")
            clean, corrupt, metric = _Organism.pairs(model, 16)
            return {"model": "organism", "quick": False} | _measure(model, clean, corrupt, metric)
    shape = (
        dict(n_layers=2, d_model=32, d_mlp=64, vocab=200, n_heads=4)
        if quick
        else dict(n_layers=4, d_model=128, d_mlp=512, vocab=1000, n_heads=4)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = random_llama(Path(tmp) / "llama", **shape)
        model = hlens.load(path, device="cpu")
        clean, corrupt, metric = _random_pairs(model, 4 if quick else 16, 12)
        out = _measure(model, clean, corrupt, metric)
    return {"model": f"random llama {shape}", "quick": quick} | out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true")
    args = p.parse_args()
    print(json.dumps(run(quick=not args.full), indent=1))
