"""Shared benchmark helpers: random checkpoints, a word-level tokenizer, peak-memory probes."""

from __future__ import annotations

import json
import os
import platform
import random
import re
from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %} <|end|>{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer over ``w0 ... w{n}`` (one token per word, exact offsets)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]
    words = special + [f"w{i}" for i in range(vocab_size - len(special))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def random_llama(
    out: Path,
    *,
    n_layers: int,
    d_model: int,
    d_mlp: int,
    vocab: int,
    n_heads: int,
    n_kv: int | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    """Save a random Llama-architecture checkpoint with a matching tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv or n_heads,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(out)
    word_tokenizer(vocab).save_pretrained(out)
    return out


def qa_examples(n: int, vocab: int, *, min_words: int = 20, max_words: int = 90, seed: int = 0):
    """``n`` examples of random words with a 1-4 word answer inside the response."""
    from hlens import Example

    rng = random.Random(seed)
    word = lambda: f"w{rng.randrange(vocab - 7)}"  # noqa: E731
    out = []
    for i in range(n):
        q = " ".join(word() for _ in range(rng.randrange(8, 20)))
        resp = [word() for _ in range(rng.randrange(min_words, max_words))]
        a0 = rng.randrange(len(resp) - 4)
        a1 = a0 + rng.randrange(1, 5)
        start = len(" ".join(resp[:a0])) + (1 if a0 else 0)
        end = len(" ".join(resp[:a1]))
        out.append(Example(q, " ".join(resp), answer_span=(start, end), id=f"b{i}"))
    return out


def machine() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", cpu)
        info["cpu"] = m.group(1) if m else None
    except OSError:
        pass
    return info


def sync(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work: CUDA runs asynchronously, and timings must not."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def process_peak_rss() -> int:
    """This process's resident-set peak since it started, model load included (bytes).

    ``getrusage``'s ``ru_maxrss`` would not do: Linux carries it across ``fork`` and ``execve``,
    so a worker started by a large benchmark process reports its parent's peak. ``VmHWM`` is
    the process's own, but :class:`PeakMemory` resets it; the peaks it saw before each reset are
    kept in :attr:`PeakMemory.process_peak`."""
    return max(PeakMemory.process_peak, PeakMemory._rss("VmHWM"))


class PeakMemory:
    """Peak memory above the level at entry: process RSS on CPU (VmHWM, reset through
    ``/proc/self/clear_refs``), allocated bytes on CUDA."""

    #: the highest VmHWM seen before a reset (see :func:`process_peak_rss`)
    process_peak = 0

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _rss(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} not found in /proc/self/status")

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            PeakMemory.process_peak = max(PeakMemory.process_peak, self._rss("VmHWM"))
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.start = self._rss("VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak_bytes = self._rss("VmHWM") - self.start


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1))


def load_known(name: str) -> Any:
    """``hlens.load(name)`` on the CPU when hlens knows the model and its packages are installed
    (the converted checkpoint is cached); else ``None``."""
    try:
        from hlens.zoo import get_known, missing_packages
    except ImportError:
        return None
    entry = get_known(name)
    if entry is None or missing_packages(entry):
        return None
    import hlens

    return hlens.load(name, device="cpu")


def liblinear_l1(X: Any, y: Any, C: float, tol: float, class_weight: Any, seed: int = 0):
    """scikit-learn's liblinear L1 logistic regression fitted on ``(X, y)``, and its seconds:
    the reference the torch probe solver is checked against."""
    import time

    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    m = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", tol=tol, max_iter=100_000,
                           class_weight=class_weight, random_state=seed).fit(X, y)  # fmt: skip
    return m, time.perf_counter() - t0
