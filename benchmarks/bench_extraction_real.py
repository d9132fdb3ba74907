"""CETT extraction on the real models (SmolLM2-135M-Instruct, Gemma-3-270M) against the official
approach: throughput, peak memory, equal features, and no unembedding.

The official approach (thunlp/H-Neurons, reimplemented in ``benchmarks.bench_cett._official``): a
plain Hugging Face model with forward hooks on every ``down_proj``, one example at a time, the
full forward (the unembedding included), every layer's activations for the whole sequence
stacked, CETT computed afterwards and the answer region averaged. hlens: ``extract_features``
through the bridge: the token prefix all examples share (SmolLM2's system prompt and chat
scaffolding) run once, batches of equal token length running only the tokens after it, CETT
reduced per layer to ``[batch, d_mlp]`` during the forward pass and written to the shard file at
once, the pass stopped after the last needed layer. The hlens worker counts the calls of the
model's output embedding (the unembedding) and of its final norm; both must be 0.

Same setting on both sides: the same examples, checkpoint (float32), device, threads, regions
and features. hlens's batch size is the one free choice: the headline uses ``BATCH`` and the
batch sizes of ``SWEEP`` are measured beside it (both ratios each), since peak memory grows
with the batch. The machine's limits are measured in the same way (a ``limits`` worker): fp32
``F.linear`` throughput at the weight shapes and row counts that occur on each side (the official
side: one example's tokens, its unembedding included; hlens: a batch of the tokens after the
prefix), and memory bandwidth (one large ``copy_``). Each side's GEMM work (linear layers,
attention matmuls, the unembedding where it runs; padding included) over its time is reported as
a fraction of its GEMM limit, and the weight bytes it must stream (once per forward pass) over
the bandwidth as a fraction of its time.

Examples: the first bundled TriviaQA questions answered with their first gold alias (answer-only
responses). Each side runs in its own process, once timed (default allocator) and once for memory
(glibc's mmap threshold fixed, ``bench_cett.MEMORY_ENV``): the peak is the resident-set peak
above the loaded model (VmHWM, as ``bench_cett``), and ``process_maxrss_mb`` is the worker
process's whole resident-set peak, model load included (``_common.process_peak_rss``; before
#18's last run it was ``getrusage``'s, which Linux carries over from the parent process).
Features must agree to 1e-5 normwise.
Targets (#18): throughput >= 3x, peak memory <= 0.5x.

Run: ``python -m benchmarks.bench_extraction_real [--n 64] [--only smollm2 gemma3] [--device
cuda]`` or
``python -m benchmarks.run --only extraction_real``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma-3-270m"}
REGIONS = ("answer", "all_except_answer")
#: hlens's batch size for the headline ratios, and the others measured beside it
BATCH = 8
SWEEP = (4, 8, 16)


def _checkpoint(name: str) -> Path | None:
    """The float32 checkpoint ``hlens.load(name)`` boots from (converted once), or ``None``
    when the model's packages are not installed."""
    from benchmarks._common import load_known

    m = load_known(name)
    if m is None:
        return None
    path = getattr(m, "checkpoint", None) or getattr(m.hf_model, "name_or_path", None)
    del m
    return Path(path) if path and (Path(path) / "config.json").exists() else None


def examples(n: int) -> list:
    from hlens import Example

    rows = [json.loads(line) for line in (ROOT / "hlens/data/triviaqa_3500.jsonl").open()][:n]
    return [
        Example(r["question"], r["answers"][0], id=str(r["id"])).with_answer(r["answers"][0])
        for r in rows
    ]


def _worker(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    from benchmarks import bench_cett as B

    exs = examples(args.n)
    calls = {"unembed": 0, "final_norm": 0}
    if args.worker == "official":
        res = B._official(Path(args.ckpt), exs, args.device, torch.float32)
    else:
        import hlens

        real_load = hlens.load

        def load(*a: Any, **k: Any):
            m = real_load(*a, **k)
            hf = m.hf_model

            def count(key: str):
                def hook(*_: Any) -> None:
                    calls[key] += active[0]  # only inside extract_features (not page touching)

                return hook

            hf.get_output_embeddings().register_forward_hook(count("unembed"))
            norm = getattr(getattr(hf, "model", None), "norm", None)
            if norm is not None:
                norm.register_forward_hook(count("final_norm"))
            return m

        import hlens.features as HF

        active = [0]
        real_extract = HF.extract_features

        def extract(*a: Any, **k: Any):
            active[0] = 1
            try:
                return real_extract(*a, **k)
            finally:
                active[0] = 0

        hlens.load, HF.extract_features = load, extract
        try:
            res = B._hlens(Path(args.ckpt), exs, args.device, torch.float32, args.batch)
        finally:
            hlens.load, HF.extract_features = real_load, real_extract
        res["calls_after_last_layer"] = calls
    from benchmarks._common import process_peak_rss

    res["process_maxrss_bytes"] = process_peak_rss()
    save_file({r: t.contiguous() for r, t in res.pop("features").items()}, args.out + ".st")
    Path(args.out + ".json").write_text(json.dumps(res))


def _linears(cfg: dict) -> tuple[list[tuple[str, int, int]], tuple[str, int, int]]:
    """The ``(name, d_in, d_out)`` weights of one block, and of the unembedding."""
    d, dm = cfg["hidden_size"], cfg["intermediate_size"]
    h, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or d // h
    block = [
        ("q_proj", d, h * hd),
        ("k_proj", d, kv * hd),
        ("v_proj", d, kv * hd),
        ("o_proj", h * hd, d),
        ("gate_proj", d, dm),
        ("up_proj", d, dm),
        ("down_proj", dm, d),
    ]
    return block, ("unembed", d, cfg["vocab_size"])


def _work(cfg: dict, rows: list[tuple[int, int]], unembed: bool) -> float:
    """GEMM FLOPs of forward passes over ``rows`` = [(query tokens, key tokens)] (padding
    included): every block's linear layers, attention's two matmuls (eager attention computes
    every query-key pair), and the unembedding if it runs."""
    block, head = _linears(cfg)
    per_token = 2 * sum(i * o for _, i, o in block) * cfg["num_hidden_layers"]
    h = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // h
    attn = 4 * h * hd * cfg["num_hidden_layers"]
    flops = 0.0
    for q, k in rows:
        flops += q * per_token + q * k * attn + (2 * q * head[1] * head[2] if unembed else 0)
    return flops


def _gemm_rate(
    m: int, shapes: list[tuple[str, int, int, int]], reps: int = 5, device: str = "cpu"
) -> dict[str, float]:
    """fp32 ``F.linear`` GFLOP/s of an ``[m, d_in]`` input at each ``(name, d_in, d_out,
    count)`` weight shape (best of ``reps``) on ``device``, and ``all``: the rate of a forward
    pass that runs each shape ``count`` times (their times summed)."""
    import time

    from benchmarks._common import sync

    out: dict[str, float] = {}
    total_f = total_t = 0.0
    for name, i, o, count in shapes:
        x, w = torch.randn(m, i, device=device), torch.randn(o, i, device=device)
        n = max(1, int(2e9 / (2 * m * i * o)))  # about 2 GFLOP a timing
        best = float("inf")
        for _ in range(reps):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                torch.nn.functional.linear(x, w)
            sync(device)
            best = min(best, (time.perf_counter() - t0) / n)
        out[name] = round(2 * m * i * o / best / 1e9, 1)
        total_f, total_t = total_f + count * 2 * m * i * o, total_t + count * best
    out["all"] = round(total_f / total_t / 1e9, 1)
    return out


def _bandwidth(mb: int = 512, reps: int = 5, device: str = "cpu") -> float:
    """Memory bandwidth (GB/s, read + write) of one ``copy_`` of ``mb`` MiB on ``device``, best
    of ``reps``."""
    import time

    from benchmarks._common import sync

    src = torch.ones(mb * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return round(2 * src.numel() * 4 / best / 1e9, 2)


def _rows(ckpt: Path, n: int, batch: int) -> dict[str, Any]:
    """The forward passes each side computes, as [(query tokens, key tokens)] per sequence:
    the official approach one whole example at a time; hlens the shared prefix once, then
    batches (shards of ``4 * batch`` examples sorted by token length, as ``bench_cett._hlens``
    and ``extract_features`` do) of the tokens after it, padded to the batch's longest."""
    import hlens.features as F
    from hlens.prompts import PromptFormat

    class _M:  # what _prefix_plan reads of a model
        def __init__(self) -> None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(ckpt)
            self.n_ctx = 10**9

    exs = examples(n)
    cfg = F.CETTConfig(regions=REGIONS, batch_size=batch, shard_size=4 * batch)
    lengths, ids, _ = F._prefix_plan(_M(), exs, PromptFormat(), cfg)
    from hlens.sampling import _MIN_PREFIX

    n_pre = len(ids) if len(ids) >= _MIN_PREFIX else 0
    hl: list[tuple[int, int]] = [(n_pre, n_pre)] if n_pre else []
    for s0 in range(0, n, cfg.shard_size):
        shard = sorted(lengths[s0 : s0 + cfg.shard_size])
        for b0 in range(0, len(shard), batch):
            w = max(shard[b0 : b0 + batch]) - n_pre
            hl += [(w, n_pre + w)] * len(shard[b0 : b0 + batch])
    return {"official": [(t, t) for t in lengths], "hlens": hl, "prefix_tokens": n_pre}


def _limits_worker(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    cfg = json.loads((Path(args.ckpt) / "config.json").read_text())
    block, head = _linears(cfg)
    blk = [(*b, cfg["num_hidden_layers"]) for b in block]
    rows = _rows(Path(args.ckpt), args.n, args.batch)
    m_off = round(sum(q for q, _ in rows["official"]) / len(rows["official"]))
    hl = [r for r in rows["hlens"][1 if rows["prefix_tokens"] else 0 :]]
    m_hl = round(sum(q for q, _ in hl) / len(hl)) * args.batch
    res = {
        "threads": torch.get_num_threads(),
        "device": args.device,
        "gemm_gflops_official_shapes": {
            "m": m_off,
            **_gemm_rate(m_off, [*blk, (*head, 1)], device=args.device),
        },
        "gemm_gflops_hlens_shapes": {"m": m_hl, **_gemm_rate(m_hl, blk, device=args.device)},
        "memory_bandwidth_gb_s": _bandwidth(device=args.device),
        "flops": {
            "official": _work(cfg, rows["official"], unembed=True),
            "hlens": _work(cfg, rows["hlens"], unembed=False),
        },
        "prefix_tokens": rows["prefix_tokens"],
        "hlens_rows_computed": sum(q for q, _ in rows["hlens"]),
        "weight_bytes": {
            "blocks": 4 * sum(i * o for _, i, o in block) * cfg["num_hidden_layers"],
            "unembed": 4 * head[1] * head[2],
        },
    }
    Path(args.out + ".json").write_text(json.dumps(res))


def _launch(
    who: str, ckpt: Path, n: int, batch: int, out: Path, memory: bool, device: str = "cpu"
) -> dict:
    from safetensors.torch import load_file

    from benchmarks.bench_cett import MEMORY_ENV

    env = {**os.environ, **(MEMORY_ENV if memory else {})}
    cmd = [sys.executable, "-m", "benchmarks.bench_extraction_real", "--worker", who]
    cmd += ["--ckpt", str(ckpt), "--n", str(n), "--batch", str(batch), "--out", str(out)]
    cmd += ["--device", device]
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    res = json.loads(Path(f"{out}.json").read_text())
    if who != "limits":
        res["features"] = load_file(f"{out}.st")
    return res


def compare(
    ckpt: Path, n: int, batch: int, sweep: tuple[int, ...] = (), device: str = "cpu"
) -> dict[str, Any]:
    """Both approaches on ``n`` examples, hlens at batch ``batch`` (the headline) and at the
    batch sizes of ``sweep`` (throughput and peak memory, each against the same official runs),
    with the machine's limits at the shapes that occur and each side's fraction of them; every
    worker runs on ``device``."""
    from benchmarks.bench_cett import _normwise

    with tempfile.TemporaryDirectory() as tmp:

        def go(who: str, b: int, name: str, memory: bool) -> dict:
            return _launch(who, ckpt, n, b, Path(tmp) / name, memory, device)

        t = {w: go(w, batch, w, False) for w in ("official", "hlens")}
        m = {w: go(w, batch, f"{w}m", True) for w in ("official", "hlens")}
        swept = {
            b: (go("hlens", b, f"h{b}", False), go("hlens", b, f"h{b}m", True))
            for b in sweep
            if b != batch
        }
        lim = go("limits", batch, "limits", False)
    err = max(_normwise(t["hlens"]["features"][r], t["official"]["features"][r]) for r in REGIONS)
    tps = {w: t[w]["tokens"] / t[w]["seconds"] for w in t}

    def ratios(tt: dict, mm: dict) -> dict[str, float]:
        e = max(_normwise(tt["features"][r], t["official"]["features"][r]) for r in REGIONS)
        return {
            "throughput_ratio": round(tt["tokens"] / tt["seconds"] / tps["official"], 3),
            "peak_memory_ratio": round(mm["peak_bytes"] / max(m["official"]["peak_bytes"], 1), 3),
            "peak_mb": round(mm["peak_bytes"] / 2**20, 1),
            "max_normwise_error": e,
        }

    gflops = {w: lim["flops"][w] / t[w]["seconds"] / 1e9 for w in t}
    limit = {
        "official": lim["gemm_gflops_official_shapes"]["all"],
        "hlens": lim["gemm_gflops_hlens_shapes"]["all"],
    }
    wb = lim["weight_bytes"]
    n_fwd = {"official": n, "hlens": -(-n // batch) + (1 if lim["prefix_tokens"] else 0)}
    read = {"official": wb["blocks"] + wb["unembed"], "hlens": wb["blocks"]}
    bw = lim["memory_bandwidth_gb_s"]
    return {
        "examples": n,
        "tokens": t["hlens"]["tokens"],
        "hlens_batch": batch,
        "shared_prefix_tokens": lim["prefix_tokens"],
        "hlens_tokens_computed": lim["hlens_rows_computed"],
        **{
            w: {
                "tokens_per_s": round(tps[w], 1),
                "seconds": round(t[w]["seconds"], 3),
                "peak_mb": round(m[w]["peak_bytes"] / 2**20, 1),
                "steady_peak_mb": round(m[w]["steady_peak_bytes"] / 2**20, 1),
                "process_maxrss_mb": round(m[w]["process_maxrss_bytes"] / 2**20, 1),
                "gemm_gflop": round(lim["flops"][w] / 1e9, 1),
                "achieved_gflops": round(gflops[w], 1),
                "gemm_limit_gflops": limit[w],
                "fraction_of_gemm_limit": round(gflops[w] / limit[w], 3),
                "weight_reads_gb": round(n_fwd[w] * read[w] / 1e9, 2),
                "fraction_of_bandwidth_time": round(
                    n_fwd[w] * read[w] / 1e9 / bw / t[w]["seconds"], 3
                ),
            }
            for w in ("official", "hlens")
        },
        "throughput_ratio": round(tps["hlens"] / tps["official"], 3),
        "peak_memory_ratio": round(
            m["hlens"]["peak_bytes"] / max(m["official"]["peak_bytes"], 1), 3
        ),
        "steady_peak_memory_ratio": round(
            m["hlens"]["steady_peak_bytes"] / max(m["official"]["steady_peak_bytes"], 1), 3
        ),
        "process_maxrss_ratio": round(
            m["hlens"]["process_maxrss_bytes"] / m["official"]["process_maxrss_bytes"], 3
        ),
        "max_normwise_error": err,
        "features_equal_1e-5": bool(err <= 1e-5),
        "calls_after_last_layer": t["hlens"]["calls_after_last_layer"],
        "no_unembedding": t["hlens"]["calls_after_last_layer"]["unembed"] == 0,
        "batch_sweep": {f"batch_{b}": ratios(tt, mm) for b, (tt, mm) in swept.items()},
        "machine_limits": {k: v for k, v in lim.items() if k not in ("flops",)},
        "targets": {"throughput_ratio": ">= 3", "peak_memory_ratio": "<= 0.5"},
    }


def run(
    quick: bool = True,
    only: tuple[str, ...] | None = None,
    n: int | None = None,
    device: str = "cpu",
) -> dict:
    n = n or (8 if quick else 64)
    res: dict[str, Any] = {}
    for key, name in MODELS.items():
        if only is not None and key not in only:
            continue
        ckpt = _checkpoint(name)
        if ckpt is None:
            res[key] = {"skipped": f"{name} is not installed (see `hlens models`)"}
            continue
        batch = 4 if quick else BATCH
        res[key] = {"model": name, **compare(ckpt, n, batch, () if quick else SWEEP, device)}
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["official", "hlens", "limits"])
    p.add_argument("--ckpt")
    p.add_argument("--n", type=int)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--out")
    p.add_argument("--only", nargs="+", choices=sorted(MODELS))
    p.add_argument("--device", default="cpu", help="where every worker runs (cpu)")
    a = p.parse_args()
    if a.worker == "limits":
        _limits_worker(a)
    elif a.worker:
        _worker(a)
    else:
        only = tuple(a.only) if a.only else None
        print(json.dumps(run(quick=False, only=only, n=a.n, device=a.device), indent=1))
