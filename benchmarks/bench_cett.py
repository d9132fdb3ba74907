"""CETT feature extraction: hlens against the official approach, throughput and peak memory.

The official approach (as in thunlp/H-Neurons ``extract_activations.py``): a plain Hugging Face
model, forward hooks on every down projection, batch size 1, all layers' activations for the whole
sequence stacked into ``[layer, pos, d_mlp]``, CETT on all of it, then the answer region sliced
and averaged. hlens: padded batches through the TransformerBridge, CETT aggregated per layer during
the forward pass, the pass stopped after the last MLP.

Each approach runs in its own process (so one's allocator cache cannot hide the other's peak), on
the same checkpoint and the same token sequences; features must agree to 1e-5 normwise relative
error (``max |a - b| / max |ref|``). On CPU, peak memory comes from separate runs with glibc's mmap
threshold fixed (see ``MEMORY_ENV``); throughput from runs with the default allocator.

    python -m benchmarks.bench_cett                   # full: a large shape and the organism
    python -m benchmarks.bench_cett --quick
    python -m benchmarks.bench_cett --shape organism  # one shape
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import PeakMemory, qa_examples, random_llama, sync

SHAPES = {
    # the bundled organism on its own questions: the model hlens find runs on CPU
    "organism": dict(n_examples=1024, batch=64),
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
        with PeakMemory(device) as warm:
            one(examples[0])  # warm-up
            sync(device)
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            for i, ex in enumerate(examples):  # one file per example, as the official script
                f, t = one(ex)
                n_tokens += t
                np.save(f"{tmp}/{i}.npy", torch.stack([f[r] for r in REGIONS]).numpy())
            sync(device)
            seconds = time.perf_counter() - t0
        saved = torch.stack(
            [torch.from_numpy(np.load(f"{tmp}/{i}.npy")) for i in range(len(examples))]
        )
    return {
        "seconds": seconds,
        "tokens": n_tokens,
        **_peaks(warm, mem),
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
        with PeakMemory(device) as warm:
            extract_features(model, examples[:batch], Path(tmp) / "warm", cfg, progress=False)
            sync(device)
        with PeakMemory(device) as mem:
            t0 = time.perf_counter()
            store = extract_features(model, examples, Path(tmp) / "f", cfg, progress=False)
            sync(device)
            seconds = time.perf_counter() - t0
        feats = {r: store.load(r) for r in REGIONS}
    return {"seconds": seconds, "tokens": n_tokens, **_peaks(warm, mem), "features": feats}


def _peaks(warm: PeakMemory, run: PeakMemory) -> dict[str, int]:
    """Peaks above the loaded model: with the warm-up (one-time allocations such as thread
    scratch buffers count) and in steady state (the timed run alone, above its own start)."""
    return {
        "peak_bytes": max(warm.peak_bytes, run.start - warm.start + run.peak_bytes),
        "steady_peak_bytes": run.peak_bytes,
    }


def organism_examples(n: int) -> list:
    """``n`` questions of the organism's world, answered with the gold value (answer-only)."""
    from hlens import Example
    from hlens.organism import load_world

    qs = load_world(0).known_questions("all")[:n]
    return [Example(q.question, q.answers[0], id=q.id).with_answer(q.answers[0]) for q in qs]


def _examples(shape: str) -> list:
    s = SHAPES[shape]
    if shape == "organism":
        return organism_examples(s["n_examples"])
    return qa_examples(s["n_examples"], s["vocab"])


def _worker(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    shape = SHAPES[args.shape]
    dtype = getattr(torch, args.dtype)
    examples = _examples(args.shape)
    if args.worker == "official":
        res = _official(Path(args.ckpt), examples, args.device, dtype)
    else:
        res = _hlens(Path(args.ckpt), examples, args.device, dtype, args.batch or shape["batch"])
    save_file(
        {r: t.contiguous() for r, t in res.pop("features").items()}, args.out + ".safetensors"
    )
    Path(args.out + ".json").write_text(json.dumps(res))


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise error relative to (|ref| + 1e-5 x mean |ref|)."""
    return float(((a - b).abs() / (b.abs() + 1e-5 * b.abs().mean())).max())


def _normwise(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normwise relative error ``max |a - b| / max |ref|``: <= 1e-5 means equal features.

    Elementwise relative error is not bounded in float32: a batched matmul sums in another order
    than a batch-1 one, which moves every output by about one ulp of the *largest* terms summed,
    so near-zero CETT values (nearly silent neurons) can differ by a large fraction of themselves.
    """
    return float((a - b).abs().max() / b.abs().max())


#: glibc keeps freed buffers below its (growing) mmap threshold in the heap, so on CPU the
#: resident-set peak mostly measures the allocator's history. Memory runs fix the threshold at
#: 64 KiB: every large tensor is its own mapping, returned on free, and the peak resident set
#: follows the live tensors. Throughput is timed in separate runs with the default allocator.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _launch(
    who: str,
    ckpt: Path,
    shape: str,
    device: str,
    dtype: str,
    out: Path,
    memory: bool = False,
    batch: int | None = None,
) -> dict[str, Any]:
    """Run one approach in a fresh process; returns its JSON result with its features."""
    from safetensors.torch import load_file

    env = {**os.environ, **(MEMORY_ENV if memory else {})}
    cmd = [sys.executable, "-m", "benchmarks.bench_cett", "--worker", who, "--ckpt", str(ckpt)]
    cmd += ["--shape", shape, "--device", device, "--dtype", dtype, "--out", str(out)]
    cmd += ["--batch", str(batch)] if batch else []
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[1], env=env)
    res = json.loads(Path(f"{out}.json").read_text())
    res["features"] = load_file(f"{out}.safetensors")
    return res


def run(quick: bool = False, *, device: str | None = None) -> dict[str, Any]:
    """The benchmark as ``benchmarks.run`` calls it.

    Quick: the small random shape. Full on CPU: the 16-layer random Llama and the organism, each
    with a sweep of hlens batch sizes. Full on CUDA: the Llama-3.1-8B shape and the organism.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if quick:
        return run_shape("quick", device=device)
    big = "llama8b" if device.startswith("cuda") else "cpu"
    return {
        big: run_shape(big, device=device, batches=(1, 2, 4)),
        "organism": run_shape("organism", device=device, batches=(1, 4, 16)),
    }


def run_shape(
    shape: str = "quick",
    *,
    device: str | None = None,
    batches: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Run both approaches in subprocesses and return throughput and memory ratios.

    ``batches``: further hlens batch sizes to measure (the throughput/memory trade-off);
    the headline ratios use the shape's own batch size.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = SHAPES[shape]
    dtype = "bfloat16" if shape == "llama8b" else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "model"
        if shape == "organism":
            from hlens.organism import checkpoint_path

            ckpt = checkpoint_path("organism")
        else:
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
        mem: dict[str, Any] = {}
        on_cpu = not device.startswith("cuda")
        for who in ("official", "hlens"):
            res[who] = _launch(who, ckpt, shape, device, dtype, Path(tmp) / who)
            if on_cpu:
                mem[who] = _launch(who, ckpt, shape, device, dtype, Path(tmp) / f"{who}-mem", True)
        sweep = []
        for b in batches:
            t = _launch("hlens", ckpt, shape, device, dtype, Path(tmp) / f"b{b}", batch=b)
            m = (
                _launch("hlens", ckpt, shape, device, dtype, Path(tmp) / f"b{b}m", True, b)
                if on_cpu
                else t
            )
            sweep.append((b, t, m))
    fh, fo = res["hlens"]["features"], res["official"]["features"]
    err = max(_normwise(fh[r], fo[r]) for r in REGIONS)
    elem = max(_close(fh[r], fo[r]) for r in REGIONS)
    mem = mem or res  # on CUDA the timed runs measure memory too
    tps = {w: res[w]["tokens"] / res[w]["seconds"] for w in res}

    def ratios(timed: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
        off = mem["official"]
        return {
            "throughput_ratio": timed["tokens"] / timed["seconds"] / tps["official"],
            "peak_memory_ratio": measured["peak_bytes"] / max(off["peak_bytes"], 1),
            "steady_peak_memory_ratio": measured["steady_peak_bytes"]
            / max(off["steady_peak_bytes"], 1),
        }

    trade_off = {f"batch_{b}": ratios(t, m) for b, t, m in sweep}
    out = {
        "name": "cett_extraction",
        "shape": {k: v for k, v in s.items()},
        "device": device,
        "dtype": dtype,
        "tokens": res["hlens"]["tokens"],
        **{
            who: {
                "tokens_per_s": tps[who],
                "peak_mb": mem[who]["peak_bytes"] / 2**20,
                "steady_peak_mb": mem[who]["steady_peak_bytes"] / 2**20,
            }
            for who in ("official", "hlens")
        },
        **ratios(res["hlens"], mem["hlens"]),
        "memory_measure": "CUDA max_memory_allocated"
        if device.startswith("cuda")
        else "peak RSS above the loaded model, separate runs with MALLOC_MMAP_THRESHOLD_=65536",
        "batch_trade_off": trade_off,
        "max_relative_error": err,
        "max_elementwise_relative_error": elem,
        "features_equal_1e-5": err <= 1e-5 if dtype == "float32" else None,
        "targets": {
            "throughput_ratio": ">= 3",
            "peak_memory_ratio": "<= 0.5",
            "max_relative_error": "<= 1e-5 (float32, normwise)",
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
    p.add_argument("--batch", type=int, help="hlens batch size (default: the shape's)")
    args = p.parse_args()
    if args.worker:
        _worker(args)
    else:
        res = run_shape(args.shape, device=args.device) if args.shape else run(args.quick)
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
