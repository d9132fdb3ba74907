"""CETT feature extraction: hlens against the official approach, throughput and peak memory.

The official approach (as in thunlp/H-Neurons ``extract_activations.py``): a plain Hugging Face
model, forward hooks on every down projection, batch size 1, all layers' activations for the whole
sequence stacked into ``[layer, pos, d_mlp]``, CETT on all of it, then the answer region sliced
and averaged. hlens: padded batches through the TransformerBridge, CETT aggregated per layer during
the forward pass, the pass stopped after the last MLP.

Each approach runs in its own process (so one's allocator cache cannot hide the other's peak), on
the same checkpoint and the same token sequences; features must agree to 1e-5 relative.

    python -m benchmarks.bench_cett            # CPU model, full
    python -m benchmarks.bench_cett --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import PeakMemory, qa_examples, random_llama

SHAPES = {
    "quick": dict(
        n_layers=4, d_model=128, d_mlp=512, vocab=2000, n_heads=4, n_examples=24, batch=8
    ),
    "cpu": dict(
        n_layers=16, d_model=512, d_mlp=2048, vocab=32000, n_heads=8, n_examples=96, batch=8
    ),
    # Llama-3.1-8B's shape with random weights (GPU only)
    "llama8b": dict(
        n_layers=32,
        d_model=4096,
        d_mlp=14336,
        vocab=128256,
        n_heads=32,
        n_kv=8,
        n_examples=128,
        batch=16,
    ),
}
REGIONS = ("answer", "all_except_answer")


def _official(ckpt: Path, examples: list, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """The official approach, reimplemented: HF model, down_proj hooks, one example at a time."""
    from transformers import AutoModelForCausalLM

    from hlens.prompts import tokenize_examples
    from hlens.registry import family_for_architecture

    hf = AutoModelForCausalLM.from_pretrained(ckpt, dtype=dtype, attn_implementation="eager")
    hf.to(device).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    fam = family_for_architecture(type(hf).__name__)
    mods = [fam.hf_down_proj_module(hf, i) for i in range(hf.config.num_hidden_layers)]
    acts: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []

    def hook(module, inputs, output):
        acts.append(inputs[0].detach())
        norms.append(torch.norm(output.detach(), dim=-1, keepdim=True))

    for m in mods:
        m.register_forward_hook(hook)
    weight_norms = torch.stack([torch.norm(m.weight.data, dim=0) for m in mods])  # [L, d_mlp]

    def one(ex):
        b = tokenize_examples([ex], tok)
        ids = b.tokens.to(device)
        ans = b.regions["answer"][0].nonzero().flatten()
        a0, a1 = int(ans.min()), int(ans.max()) + 1
        acts.clear()
        norms.clear()
        with torch.no_grad():
            hf(ids)
        a = torch.stack(acts).squeeze(1)  # [L, T, d_mlp]
        n = torch.stack(norms).squeeze(1)
        c = (a.abs() * weight_norms.unsqueeze(1)) / (n + 1e-8)
        answer = c[:, a0:a1].mean(1)
        other = torch.cat([c[:, :a0], c[:, a1:]], dim=1).mean(1)
        return {
            "answer": answer.float().cpu(),
            "all_except_answer": other.float().cpu(),
        }, ids.shape[1]

    with torch.no_grad():  # touch every weight page (safetensors are memory-mapped)
        hf(torch.ones(1, 4, dtype=torch.long, device=device))
    n_tokens = 0
    with tempfile.TemporaryDirectory() as tmp:
        # peak above the loaded model: the warm-up is inside (it is smaller than the run)
        with PeakMemory(device) as mem:
            one(examples[0])  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            for i, ex in enumerate(examples):  # one file per example, as the official script
                f, t = one(ex)
                n_tokens += t
                np.save(f"{tmp}/{i}.npy", torch.stack([f[r] for r in REGIONS]).numpy())
            _sync(device)
            seconds = time.perf_counter() - t0
        saved = torch.stack(
            [torch.from_numpy(np.load(f"{tmp}/{i}.npy")) for i in range(len(examples))]
        )
    return {
        "seconds": seconds,
        "tokens": n_tokens,
        "peak_bytes": mem.peak_bytes,
        "features": {r: saved[:, j] for j, r in enumerate(REGIONS)},
    }


def _hlens(
    ckpt: Path, examples: list, device: str, dtype: torch.dtype, batch: int
) -> dict[str, Any]:
    import hlens
    from hlens.features import CETTConfig, extract_features

    model = hlens.load(str(ckpt), device=device, dtype=dtype)
    # shards of a few batches: written as they finish, like the official per-example files
    cfg = CETTConfig(regions=REGIONS, batch_size=batch, shard_size=4 * batch)
    n_tokens = int(model.tokenize(examples).attention_mask.sum())
    with torch.no_grad():  # touch every weight page (safetensors are memory-mapped)
        model.bridge(torch.ones(1, 4, dtype=torch.long, device=device), return_type=None)
    with tempfile.TemporaryDirectory() as tmp:
        with PeakMemory(device) as mem:  # peak above the loaded model, warm-up included
            extract_features(model, examples[:batch], Path(tmp) / "warm", cfg, progress=False)
            _sync(device)
            t0 = time.perf_counter()
            store = extract_features(model, examples, Path(tmp) / "f", cfg, progress=False)
            _sync(device)
            seconds = time.perf_counter() - t0
        feats = {r: store.load(r) for r in REGIONS}
    return {"seconds": seconds, "tokens": n_tokens, "peak_bytes": mem.peak_bytes, "features": feats}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _worker(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    shape = SHAPES[args.shape]
    dtype = getattr(torch, args.dtype)
    examples = qa_examples(shape["n_examples"], shape["vocab"])
    if args.worker == "official":
        res = _official(Path(args.ckpt), examples, args.device, dtype)
    else:
        res = _hlens(Path(args.ckpt), examples, args.device, dtype, shape["batch"])
    save_file(
        {r: t.contiguous() for r, t in res.pop("features").items()}, args.out + ".safetensors"
    )
    Path(args.out + ".json").write_text(json.dumps(res))


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise error relative to (|ref| + 1e-5 x mean |ref|): <= 1e-5 means equal."""
    return float(((a - b).abs() / (b.abs() + 1e-5 * b.abs().mean())).max())


def run(
    quick: bool = False, *, shape: str | None = None, device: str | None = None
) -> dict[str, Any]:
    """Run both approaches in subprocesses and return throughput and memory ratios."""
    from safetensors.torch import load_file

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    shape = shape or ("quick" if quick else ("llama8b" if device.startswith("cuda") else "cpu"))
    s = SHAPES[shape]
    dtype = "bfloat16" if shape == "llama8b" else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model"
        random_llama(
            ckpt,
            n_layers=s["n_layers"],
            d_model=s["d_model"],
            d_mlp=s["d_mlp"],
            vocab=s["vocab"],
            n_heads=s["n_heads"],
            n_kv=s.get("n_kv"),
            dtype=getattr(torch, dtype),
        )
        res: dict[str, Any] = {}
        for who in ("official", "hlens"):
            out = str(Path(tmp) / who)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_cett",
                    "--worker",
                    who,
                    "--ckpt",
                    str(ckpt),
                    "--shape",
                    shape,
                    "--device",
                    device,
                    "--dtype",
                    dtype,
                    "--out",
                    out,
                ],
                check=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            res[who] = json.loads(Path(out + ".json").read_text())
            res[who]["features"] = load_file(out + ".safetensors")
    err = max(_close(res["hlens"]["features"][r], res["official"]["features"][r]) for r in REGIONS)
    tps = {w: res[w]["tokens"] / res[w]["seconds"] for w in res}
    out = {
        "name": "cett_extraction",
        "shape": {k: v for k, v in s.items()},
        "device": device,
        "dtype": dtype,
        "tokens": res["hlens"]["tokens"],
        "official": {
            "tokens_per_s": tps["official"],
            "peak_mb": res["official"]["peak_bytes"] / 2**20,
        },
        "hlens": {"tokens_per_s": tps["hlens"], "peak_mb": res["hlens"]["peak_bytes"] / 2**20},
        "throughput_ratio": tps["hlens"] / tps["official"],
        "peak_memory_ratio": res["hlens"]["peak_bytes"] / max(res["official"]["peak_bytes"], 1),
        "max_relative_error": err,
        "features_equal_1e-5": err <= 1e-5 if dtype == "float32" else None,
        "targets": {
            "throughput_ratio": ">= 3",
            "peak_memory_ratio": "<= 0.5",
            "max_relative_error": "<= 1e-5 (float32)",
        },
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--shape", choices=sorted(SHAPES))
    p.add_argument("--device")
    p.add_argument("--worker", choices=["official", "hlens"])
    p.add_argument("--ckpt")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out")
    args = p.parse_args()
    if args.worker:
        _worker(args)
    else:
        print(json.dumps(run(args.quick, shape=args.shape, device=args.device), indent=1))


if __name__ == "__main__":
    main()
