"""Benchmark: generation speed under :func:`hlens.interventions.scale_neurons` vs plain generation.

Both arms decode the same prompts with :func:`hlens.sampling.sample_responses` (same seeds) on the
same loaded model. The intervention arm scales a layer-spread neuron set with ``alpha = 1.0``:
the hooks do all their work (one per layer, a per-layer scale-vector multiply) but the outputs
are bit-identical, so both arms decode exactly the same tokens (checked), and the ratio
``intervened / plain`` measures the hook overhead alone. The arms alternate (ABBA order) and the
ratio of the medians over ``repeats`` is reported (the CPUs are shared; timings are noisy).
Target: <= 1.15.

Model: the bundled organism when its checkpoint exists (full mode), else a seeded random Llama
(quick mode always uses the random one: 2 layers, d_model 64).

Run: ``python benchmarks/bench_generation.py [--full]``, or ``run(quick)``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import hlens
import hlens.organism
from hlens.interventions import scale_neurons
from hlens.sampling import SamplingConfig, sample_responses

ROOT = Path(__file__).resolve().parents[1]


def _random_llama(out: Path, quick: bool) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import build_checkpoint

    size = (
        dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2)
        if quick
        else dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4)
    )
    return build_checkpoint("llama", out, **size)


def run(quick: bool = True) -> dict[str, Any]:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        organism = hlens.organism.checkpoint_path("organism") if not quick else None
        if organism is not None and (organism / "config.json").exists():
            model, source = hlens.load("organism", device="cpu"), "organism"
        else:
            model = hlens.load(_random_llama(Path(tmp) / "llama", quick), device="cpu")
            source = "random llama"
        n_prompts, max_new, repeats = (8, 8, 4) if quick else (320, 16, 7)
        cfg = SamplingConfig(
            n_samples=1 if quick else 2,
            temperature=1.0,
            max_new_tokens=max_new,
            seed=0,
            batch_size=64,
        )
        bos = model.tokenizer.bos_token or ""
        prompts = [f"{bos}Where was person number {i} born?" for i in range(n_prompts)]
        ids = [f"q{i}" for i in range(n_prompts)]
        # 1% of each layer's neurons (at least one): every layer gets a hook
        per_layer = max(1, model.d_mlp // 100)
        neurons = hlens.NeuronSet.random(
            0,
            n_layers=model.n_layers,
            d_mlp=model.d_mlp,
            seed=0,
            layer_counts=[per_layer] * model.n_layers,
        )

        def generate() -> tuple[float, list[list[str]]]:
            t0 = time.perf_counter()
            out = sample_responses(
                model.hf_model, model.tokenizer, prompts, ids, cfg, progress=False
            )
            return time.perf_counter() - t0, out

        generate()  # warm-up
        plain_t, hooked_t = [], []
        same = True
        for r in range(repeats):
            # alternate which arm goes first (ABBA), so that drift and order effects cancel
            for arm in ("plain", "hooked") if r % 2 == 0 else ("hooked", "plain"):
                if arm == "plain":
                    t, ref = generate()
                    plain_t.append(t)
                    outputs_plain = ref
                else:
                    with scale_neurons(model, neurons, 1.0):
                        t, out = generate()
                    hooked_t.append(t)
                    outputs_hooked = out
            same = same and outputs_plain == outputs_hooked
    plain, hooked = statistics.median(plain_t), statistics.median(hooked_t)
    return {
        "model": source,
        "n_layers": model.n_layers,
        "d_mlp": model.d_mlp,
        "neurons": len(neurons),
        "prompts": n_prompts,
        "samples_per_prompt": cfg.n_samples,
        "max_new_tokens": max_new,
        "repeats": repeats,
        "plain_s": round(plain, 4),
        "scale_neurons_s": round(hooked, 4),
        "ratio": round(hooked / plain, 4),
        "identical_outputs": same,
        "target_ratio": 1.15,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger run (organism if present)")
    print(json.dumps(run(quick=not parser.parse_args().full), indent=2))
