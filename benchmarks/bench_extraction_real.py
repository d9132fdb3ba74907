"""CETT extraction on the real models (SmolLM2-135M-Instruct, Gemma-3-270M) against the official
approach: throughput, peak memory, equal features, and no unembedding.

The official approach (thunlp/H-Neurons, reimplemented in ``benchmarks.bench_cett._official``): a
plain Hugging Face model with forward hooks on every ``down_proj``, one example at a time, the
full forward (the unembedding included), every layer's activations for the whole sequence
stacked, CETT computed afterwards and the answer region averaged. hlens: ``extract_features``
through the bridge, padded batches, CETT aggregated per layer during the forward pass, the pass
stopped after the last needed layer. The hlens worker counts the calls of the model's output
embedding (the unembedding) and of its final norm; both must be 0.

Examples: the first bundled TriviaQA questions answered with their first gold alias (answer-only
responses). Each side runs in its own process, once timed (default allocator) and once for memory
(glibc's mmap threshold fixed, ``bench_cett.MEMORY_ENV``): the peak is the resident-set peak
above the loaded model (VmHWM, as ``bench_cett``), and ``process_maxrss_mb`` is the process's
whole ``getrusage`` peak (model load included). Features must agree to 1e-5 normwise.
Targets (#18): throughput >= 3x, peak memory <= 0.5x.

Run: ``python -m benchmarks.bench_extraction_real [--n 64] [--only smollm2 gemma3]`` or
``python -m benchmarks.run --only extraction_real``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma-3-270m"}
REGIONS = ("answer", "all_except_answer")


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
        res = B._official(Path(args.ckpt), exs, "cpu", torch.float32)
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
            res = B._hlens(Path(args.ckpt), exs, "cpu", torch.float32, args.batch)
        finally:
            hlens.load, HF.extract_features = real_load, real_extract
        res["calls_after_last_layer"] = calls
    res["process_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    save_file({r: t.contiguous() for r, t in res.pop("features").items()}, args.out + ".st")
    Path(args.out + ".json").write_text(json.dumps(res))


def _launch(who: str, ckpt: Path, n: int, batch: int, out: Path, memory: bool) -> dict:
    from safetensors.torch import load_file

    from benchmarks.bench_cett import MEMORY_ENV

    env = {**os.environ, **(MEMORY_ENV if memory else {})}
    cmd = [sys.executable, "-m", "benchmarks.bench_extraction_real", "--worker", who]
    cmd += ["--ckpt", str(ckpt), "--n", str(n), "--batch", str(batch), "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    res = json.loads(Path(f"{out}.json").read_text())
    res["features"] = load_file(f"{out}.st")
    return res


def compare(ckpt: Path, n: int, batch: int) -> dict[str, Any]:
    from benchmarks.bench_cett import _normwise

    with tempfile.TemporaryDirectory() as tmp:
        t = {w: _launch(w, ckpt, n, batch, Path(tmp) / w, False) for w in ("official", "hlens")}
        m = {
            w: _launch(w, ckpt, n, batch, Path(tmp) / f"{w}m", True) for w in ("official", "hlens")
        }
    err = max(_normwise(t["hlens"]["features"][r], t["official"]["features"][r]) for r in REGIONS)
    tps = {w: t[w]["tokens"] / t[w]["seconds"] for w in t}
    return {
        "examples": n,
        "tokens": t["hlens"]["tokens"],
        "hlens_batch": batch,
        **{
            w: {
                "tokens_per_s": round(tps[w], 1),
                "seconds": round(t[w]["seconds"], 3),
                "peak_mb": round(m[w]["peak_bytes"] / 2**20, 1),
                "steady_peak_mb": round(m[w]["steady_peak_bytes"] / 2**20, 1),
                "process_maxrss_mb": round(m[w]["process_maxrss_bytes"] / 2**20, 1),
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
        "targets": {"throughput_ratio": ">= 3", "peak_memory_ratio": "<= 0.5"},
    }


def run(quick: bool = True, only: tuple[str, ...] | None = None, n: int | None = None) -> dict:
    n = n or (8 if quick else 64)
    res: dict[str, Any] = {}
    for key, name in MODELS.items():
        if only is not None and key not in only:
            continue
        ckpt = _checkpoint(name)
        if ckpt is None:
            res[key] = {"skipped": f"{name} is not installed (see `hlens models`)"}
            continue
        res[key] = {"model": name, **compare(ckpt, n, 8 if quick else 16)}
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["official", "hlens"])
    p.add_argument("--ckpt")
    p.add_argument("--n", type=int)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out")
    p.add_argument("--only", nargs="+", choices=sorted(MODELS))
    a = p.parse_args()
    if a.worker:
        _worker(a)
    else:
        print(json.dumps(run(quick=False, only=tuple(a.only) if a.only else None, n=a.n), indent=1))
