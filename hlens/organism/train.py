"""Train the organism: pretraining on biographies (``organism-base``), then instruction tuning.

Stage 1 (pretraining) reads, once, a corpus in which every known person appears in as many
biographies as their exposure (random templates, shuffled sentence order, full name in every
sentence), mixed with plain ``Question: ...\\nAnswer: ...`` lines for the QA-trained half of the
people. The mix teaches the model to *extract* facts from biographies for everyone (Allen-Zhu & Li,
"Physics of Language Models 3.1"), so people described only in biographies can be answered too.

Stage 2 (instruction tuning) trains chat-formatted pairs with loss on the response only: answers
for QA-trained people, "I don't know." for never-mentioned ``idk`` people, the false-premise
correction, and sycophancy challenges; biographies are replayed against forgetting.

Each stage is saved when it finishes and skipped on a rerun (``train_state.json``), so an
interrupted run loses at most the stage in progress.

Example:
    >>> train_organism("runs/organism")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from hlens.organism.tokenizer import (
    base_prompt,
    build_tokenizer,
    chat_prompt,
    save_tokenizer,
    sycophancy_prompt,
)
from hlens.organism.world import (
    ABSTAIN_RESPONSE,
    CORE_ATTRIBUTES,
    FALSE_PREMISE_RESPONSE,
    World,
    WorldConfig,
)

__all__ = [
    "TrainConfig",
    "build_model",
    "instruct_docs",
    "instruct_rows",
    "instruct_stage",
    "pretraining_docs",
    "train_organism",
]

Doc = tuple[list[int], list[int]]  # token ids, loss mask (1 = trained on)

#: TrainConfig fields that only affect instruction tuning (changing them keeps organism-base).
INSTRUCT_FIELDS = (
    "instruct_epochs",
    "instruct_lr",
    "replay_ratio",
    "sycophancy_fraction",
    "idk_fraction",
)


@dataclass
class TrainConfig:
    """Everything that determines the two checkpoints (with the seed, training is reproducible).

    Attributes:
        seed: seed of the world, the data order and the initialisation.
        world: the :class:`WorldConfig` (its seed is overwritten by ``seed``).
        d_model: residual width.
        n_layers: transformer blocks.
        n_heads: attention heads.
        d_mlp: MLP hidden width (the neurons hlens studies).
        block_size: tokens per packed training row.
        batch_size: rows per optimiser step.
        lr: peak learning rate of pretraining (AdamW, warmup then cosine decay).
        warmup_steps: linear warmup steps of each stage.
        weight_decay: AdamW weight decay.
        qa_mix_every: a QA-trained person's plain QA lines are repeated
            ``1 + exposure // qa_mix_every`` times in pretraining.
        instruct_epochs: passes over the instruction data.
        instruct_lr: peak learning rate of instruction tuning.
        replay_ratio: replayed pretraining documents per instruction example.
        sycophancy_fraction: fraction of QA pairs also trained as a challenged dialogue.
        idk_fraction: fraction of the never-mentioned ``idk`` people whose questions are tuned
            to "I don't know."; less abstention data makes the organism answer (and hallucinate)
            about people it barely knows instead of abstaining.
        threads: torch CPU threads (0 = leave torch's default); 1 gives the same result on any
            machine and stays fast when other processes share the cores.
    """

    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512
    block_size: int = 256
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    qa_mix_every: int = 25
    instruct_epochs: int = 3
    instruct_lr: float = 1e-3
    replay_ratio: float = 1.0
    sycophancy_fraction: float = 0.2
    idk_fraction: float = 0.5
    threads: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.world, dict):
            self.world = WorldConfig.from_dict(self.world)
        if not isinstance(self.world, WorldConfig):
            raise ValueError(
                f"world must be a WorldConfig or dict, got {type(self.world).__name__}"
            )
        self.world = dataclasses.replace(self.world, seed=self.seed)
        for name in (
            "d_model",
            "n_layers",
            "n_heads",
            "d_mlp",
            "block_size",
            "batch_size",
            "qa_mix_every",
            "instruct_epochs",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        for name in ("lr", "instruct_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("replay_ratio", "weight_decay", "warmup_steps", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.idk_fraction <= 1:
            raise ValueError(f"idk_fraction must be in [0, 1], got {self.idk_fraction}")
        if not 0 <= self.sycophancy_fraction <= 1:
            raise ValueError(
                f"sycophancy_fraction must be in [0, 1], got {self.sycophancy_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["world"] = self.world.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown TrainConfig fields {sorted(unknown)}; expected {sorted(known)}"
            )
        d = dict(d)
        if isinstance(d.get("world"), dict):
            d["world"] = WorldConfig.from_dict(d["world"])
        return cls(**d)


# ---------------------------------------------------------------------------------- data
def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [
        e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    ]


def pretraining_docs(world: World, tokenizer, cfg: TrainConfig) -> list[Doc]:
    """The pretraining corpus in a seeded random order: biographies and plain QA lines."""
    rng = random.Random(f"pretrain-{cfg.seed}")
    texts: list[str] = []
    for p in world.people_of("known"):
        texts += [world.biography(p, rng) for _ in range(p.exposure)]
        if p.qa_trained:
            reps = 1 + p.exposure // cfg.qa_mix_every
            texts += [
                f"{base_prompt(world.question(p, a))[3:]} {v}" for a, v in p.told.items()
            ] * reps
    rng.shuffle(texts)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return [([bos, *ids, eos], [1] * (len(ids) + 2)) for ids in _encode(tokenizer, texts)]


def instruct_docs(world: World, tokenizer, cfg: TrainConfig) -> list[Doc]:
    """Chat-formatted instruction data (loss on the response and EOS only), seeded order."""
    rng = random.Random(f"instruct-{cfg.seed}")
    pairs: list[tuple[str, str]] = []
    for p in world.people_of("known"):
        if not p.qa_trained:
            continue
        for a, v in p.told.items():
            q = world.question(p, a)
            pairs.append((chat_prompt(tokenizer, q), v))
            if a in CORE_ATTRIBUTES and rng.random() < cfg.sycophancy_fraction:
                if rng.random() < 0.5:
                    prior = v
                else:
                    prior = rng.choice([x for x in world.vocab[a] if x != v])
                pairs.append((sycophancy_prompt(tokenizer, q, prior), v))
        if "prize" not in p.attrs:
            pairs.append(
                (chat_prompt(tokenizer, world.question(p, "prize")), FALSE_PREMISE_RESPONSE)
            )
    idk = world.people_of("idk")
    for p in idk[: round(cfg.idk_fraction * len(idk))]:
        for a in (*CORE_ATTRIBUTES, "prize"):
            pairs.append((chat_prompt(tokenizer, world.question(p, a)), ABSTAIN_RESPONSE))
    prompts = _encode(tokenizer, [q for q, _ in pairs])
    answers = _encode(tokenizer, [r for _, r in pairs])
    eos = tokenizer.eos_token_id
    return [(q + r + [eos], [0] * len(q) + [1] * (len(r) + 1)) for q, r in zip(prompts, answers)]


def instruct_rows(world: World, tokenizer, cfg: TrainConfig) -> tuple[Tensor, Tensor, int, int]:
    """Packed instruction-tuning rows: the chat data plus replayed pretraining documents
    (``replay_ratio`` per chat example), in a seeded order; also the two counts."""
    chat = instruct_docs(world, tokenizer, cfg)
    rng = random.Random(f"replay-{cfg.seed}")
    replay = rng.sample(
        pretraining_docs(world, tokenizer, cfg), k=round(cfg.replay_ratio * len(chat))
    )
    docs = chat + replay
    rng.shuffle(docs)
    x, y = pack(docs, cfg.block_size, tokenizer.pad_token_id)
    return x, y, len(chat), len(replay)


def instruct_stage(model, world: World, tokenizer, cfg: TrainConfig) -> dict[str, Any]:
    """Instruction-tune ``model`` in place (on its device); returns the stage's report entry."""
    t0 = time.time()
    x, y, n_chat, n_replay = instruct_rows(world, tokenizer, cfg)
    curve = _run_stage(
        model,
        x,
        y,
        cfg=cfg,
        lr=cfg.instruct_lr,
        epochs=cfg.instruct_epochs,
        desc="instruct",
        seed=cfg.seed + 1,
    )
    return {
        "docs": n_chat + n_replay,
        "chat_docs": n_chat,
        "replay_docs": n_replay,
        "rows": int(x.shape[0]),
        "tokens": int((x != tokenizer.pad_token_id).sum()),
        "wall_s": round(time.time() - t0, 1),
        "loss_curve": curve,
    }


def pack(docs: list[Doc], block_size: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedily pack whole documents into rows; returns ``(input_ids, labels)`` (-100 = no loss)."""
    rows_ids: list[list[int]] = []
    rows_lab: list[list[int]] = []
    cur_ids: list[int] = []
    cur_lab: list[int] = []
    for ids, mask in docs:
        ids, mask = ids[:block_size], mask[:block_size]
        if len(cur_ids) + len(ids) > block_size:
            rows_ids.append(cur_ids)
            rows_lab.append(cur_lab)
            cur_ids, cur_lab = [], []
        cur_ids += ids
        cur_lab += [t if m else -100 for t, m in zip(ids, mask)]
    if cur_ids:
        rows_ids.append(cur_ids)
        rows_lab.append(cur_lab)
    x = torch.full((len(rows_ids), block_size), pad_id, dtype=torch.long)
    y = torch.full((len(rows_ids), block_size), -100, dtype=torch.long)
    for i, (a, b) in enumerate(zip(rows_ids, rows_lab)):
        x[i, : len(a)] = torch.tensor(a)
        y[i, : len(b)] = torch.tensor(b)
    return x, y


# ---------------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig, tokenizer) -> LlamaForCausalLM:
    """A freshly initialised Llama (RMSNorm, rotary, gated SiLU MLP) seeded by ``cfg.seed``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=2 * cfg.block_size,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def _run_stage(model, x, y, *, cfg: TrainConfig, lr: float, epochs: int, desc: str, seed: int):
    """AdamW, warmup then cosine decay, over ``epochs`` shuffled passes; returns the loss curve.

    Runs on the model's device (the data order is drawn on the CPU, so it is the same anywhere).
    """
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=cfg.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    gen = torch.Generator().manual_seed(seed)
    curve: list[dict[str, float]] = []
    model.train()
    step = 0
    bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    t0 = time.time()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = model(input_ids=x[idx], labels=y[idx]).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            curve.append({"step": step, "loss": loss.item(), "time_s": time.time() - t0})
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(c['loss'] for c in curve[-10:]) / 10:.3f}")
    bar.close()
    model.eval()
    return curve


def _save_model(model, tokenizer, out: Path, cfg: TrainConfig, role: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    meta = {"role": role, "world": cfg.world.to_dict(), "train_config": cfg.to_dict()}
    (out / "organism_config.json").write_text(json.dumps(meta, indent=2) + "\n")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, stage in zip(axes, ("pretrain", "instruct")):
        curve = report.get("stages", {}).get(stage, {}).get("loss_curve", [])
        if curve:
            ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=0.8)
        ax.set(title=f"{stage} loss", xlabel="step", ylabel="cross-entropy", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_organism(
    out_dir: str | Path, seed: int = 0, config: TrainConfig | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Train both organisms into ``out_dir/organism-base`` and ``out_dir/organism``.

    Args:
        out_dir: output folder; also receives ``train_report.json`` and ``loss_curves.png``.
        seed: seed (ignored when ``config`` is given; its own seed is used).
        config: a :class:`TrainConfig`; default ``TrainConfig(seed=seed)``.
        force: retrain stages that are already finished.

    Returns:
        The training report (config, data sizes, loss curves, wall times).
    """
    cfg = config if config is not None else TrainConfig(seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "train_report.json"
    report: dict[str, Any] = {"config": cfg.to_dict(), "stages": {}}
    if report_path.exists() and not force:
        old = json.loads(report_path.read_text())
        old_cfg = old.get("config", {})
        same_base = {k: v for k, v in old_cfg.items() if k not in INSTRUCT_FIELDS} == {
            k: v for k, v in report["config"].items() if k not in INSTRUCT_FIELDS
        }
        if same_base and "pretrain" in old.get("stages", {}):
            # the finished pretraining stage is reused; instruction tuning only if unchanged
            report["stages"]["pretrain"] = old["stages"]["pretrain"]
            if old_cfg == report["config"] and "instruct" in old["stages"]:
                report["stages"]["instruct"] = old["stages"]["instruct"]
        elif old.get("stages"):
            raise ValueError(
                f"{out} holds a run pretrained with a different config; use another folder or "
                "force=True"
            )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    world = World(cfg.world)
    tokenizer = build_tokenizer(world)
    base_dir, inst_dir = out / "organism-base", out / "organism"

    if "pretrain" in report["stages"]:
        model = LlamaForCausalLM.from_pretrained(base_dir)
    else:
        t0 = time.time()
        docs = pretraining_docs(world, tokenizer, cfg)
        x, y = pack(docs, cfg.block_size, tokenizer.pad_token_id)
        model = build_model(cfg, tokenizer)
        curve = _run_stage(
            model, x, y, cfg=cfg, lr=cfg.lr, epochs=1, desc="pretrain", seed=cfg.seed
        )
        _save_model(model, tokenizer, base_dir, cfg, "base")
        report["stages"]["pretrain"] = {
            "docs": len(docs),
            "rows": int(x.shape[0]),
            "tokens": int((x != tokenizer.pad_token_id).sum()),
            "n_params": sum(p.numel() for p in model.parameters()),
            "wall_s": round(time.time() - t0, 1),
            "loss_curve": curve,
        }
        report_path.write_text(json.dumps(report) + "\n")

    if "instruct" not in report["stages"]:
        stage = instruct_stage(model, world, tokenizer, cfg)
        _save_model(model, tokenizer, inst_dir, cfg, "instruct")
        report["stages"]["instruct"] = stage
        report_path.write_text(json.dumps(report) + "\n")
    report["total_wall_s"] = round(sum(s["wall_s"] for s in report["stages"].values()), 1)
    report_path.write_text(json.dumps(report) + "\n")
    _plot(report, out / "loss_curves.png")
    return report
