"""Origins of H-neurons: backward transfer of the probe and parameter inertia.

*Backward transfer*: the probe trained on the instruction-tuned model is applied unchanged to the
base model's CETT features on the same question/response pairs (the base model reads the tuned
model's responses after a plain ``Question: ... Answer:`` prompt). If it still separates
hallucinated from faithful answers, the neurons' roles predate instruction tuning.

*Parameter inertia*: for every neuron, ``drift = 1 - cos(base, tuned)`` of its up-projection row and
of its down-projection column (its ``W_out`` row); each is z-scored across all neurons and the two
z-scores averaged (the gate row is reported separately). Neurons are ranked by that score, rank 0
being the largest change, and ranks normalised to [0, 1]. A mean H-neuron rank above 0.5 means
H-neurons moved *less* than a typical neuron.

Example:
    >>> inertia = parameter_inertia(base, tuned)  # doctest: +SKIP
    >>> inertia.drift_up.shape  # [layer, d_mlp]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from hlens import plots
from hlens.checks import load_model, load_neurons
from hlens.errors import HlensInputError, validating
from hlens.features import CETTConfig, FeatureStore, extract_features, read_examples
from hlens.identify import FindConfig, answer_set, probe_training_set
from hlens.metrics import compute_metrics
from hlens.model import Model
from hlens.neurons import NeuronSet
from hlens.probe import NeuronProbe
from hlens.prompts import PromptFormat
from hlens.records import Record, jsonable
from hlens.splits import Splits

__all__ = [
    "Inertia",
    "OriginConfig",
    "OriginResult",
    "backward_transfer",
    "check_same_architecture",
    "inertia_test",
    "origin",
    "parameter_inertia",
]

BASE_TEMPLATE = "Question: {question}\nAnswer:"


def check_same_architecture(base: Model, tuned: Model) -> None:
    """Raise ``ValueError`` unless two models share family and shape (says what differs)."""
    fields = ("family.name", "n_layers", "d_mlp", "d_model")
    diff = []
    for f in fields:
        a, b = base, tuned
        for part in f.split("."):
            a, b = getattr(a, part), getattr(b, part)
        if a != b:
            diff.append(f"{f}: base {a!r} vs tuned {b!r}")
    if diff:
        raise ValueError(
            "base and tuned models must have the same architecture and shape; they differ in "
            + "; ".join(diff)
        )


def _drift(a: Tensor, b: Tensor) -> Tensor:
    """1 - cosine similarity of matching rows, computed on ``a``'s device, returned on the CPU.

    The per-neuron results are small; keeping them on the CPU lets the rank and test code below
    (``torch.arange``, ``.numpy()``) run the same way for models on a GPU.
    """
    b = b.to(a.device)
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
    return (1.0 - cos).float().cpu()


def _zscore(x: Tensor) -> Tensor:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else torch.zeros_like(x)


@dataclass
class Inertia:
    """Per-neuron weight drift between a base and a tuned model.

    Attributes:
        drift_up: ``1 - cos`` of each neuron's up-projection row.
        drift_down: ``1 - cos`` of each neuron's down-projection column (its ``W_out`` row).
        drift_gate: the same for the gate row of gated MLPs, else ``None`` (reported separately).
        score: mean of the z-scored ``drift_up`` and ``drift_down``: how much a neuron moved.
        rank: normalised rank of ``score`` in [0, 1]; 0 is the neuron that moved most.
    """

    drift_up: Float[Tensor, "layer d_mlp"]
    drift_down: Float[Tensor, "layer d_mlp"]
    drift_gate: Float[Tensor, "layer d_mlp"] | None
    score: Float[Tensor, "layer d_mlp"]
    rank: Float[Tensor, "layer d_mlp"]

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.tolist() if v is not None else None) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Inertia:
        return cls(**{k: torch.tensor(v) if v is not None else None for k, v in d.items()})

    def moved(self, threshold: float = 1e-6) -> NeuronSet:
        """Neurons whose up or down weights changed direction by more than ``threshold``."""
        mask = (self.drift_up > threshold) | (self.drift_down > threshold)
        if self.drift_gate is not None:
            mask |= self.drift_gate > threshold
        n_layers, d_mlp = mask.shape
        return NeuronSet.from_flat(
            mask.flatten().nonzero().flatten().tolist(), n_layers=n_layers, d_mlp=d_mlp
        )


def parameter_inertia(base: Model, tuned: Model) -> Inertia:
    """Per-neuron drift between two checkpoints of the same architecture (see module doc)."""
    check_same_architecture(base, tuned)
    up, down, gate = [], [], []
    with torch.no_grad():
        for layer in range(base.n_layers):
            up.append(_drift(base.W_in(layer), tuned.W_in(layer)))
            down.append(_drift(base.W_out(layer), tuned.W_out(layer)))
            g0, g1 = base.W_gate(layer), tuned.W_gate(layer)
            if g0 is not None:
                gate.append(_drift(g0, g1))
    drift_up, drift_down = torch.stack(up), torch.stack(down)
    score = (_zscore(drift_up.flatten()) + _zscore(drift_down.flatten())) / 2
    order = torch.argsort(score, descending=True, stable=True)
    rank = torch.empty_like(score)
    rank[order] = torch.arange(score.numel(), dtype=score.dtype) / max(score.numel() - 1, 1)
    shape = drift_up.shape
    return Inertia(
        drift_up,
        drift_down,
        torch.stack(gate) if gate else None,
        score.reshape(shape),
        rank.reshape(shape),
    )


def inertia_test(
    inertia: Inertia,
    neurons: NeuronSet,
    *,
    n_random: int = 10_000,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean normalised rank of ``neurons`` with a bootstrap interval and one-sided tests.

    The alternative is "these neurons moved less than others" (mean rank above that of random
    sets). ``p_value`` compares with ``n_random`` layer-matched random sets of the same size (a
    permutation test); ``p_value_all`` is a one-sided Mann-Whitney U test against all neurons.
    """
    from scipy.stats import mannwhitneyu

    n_layers, d_mlp = inertia.rank.shape
    neurons.check_model(n_layers, d_mlp)
    if len(neurons) == 0:
        raise ValueError("inertia_test needs at least one neuron")
    flat = inertia.rank.flatten()
    idx = neurons.flat()
    ranks = flat[idx].double().numpy()
    mean = float(ranks.mean())
    rng = np.random.default_rng(seed)
    boots = rng.choice(ranks, size=(n_boot, len(ranks)), replace=True).mean(1)
    counts = neurons.layer_counts()
    rank2d = inertia.rank.double().numpy()
    null = np.empty(n_random)
    for i in range(n_random):
        picks = [rng.choice(d_mlp, size=c, replace=False) for c in counts]
        null[i] = np.concatenate([rank2d[layer, p] for layer, p in enumerate(picks)]).mean()
    others = np.delete(flat.double().numpy(), idx.numpy())
    u = mannwhitneyu(ranks, others, alternative="greater")
    return {
        "mean_rank": mean,
        "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
        "p_value": float((1 + (null >= mean).sum()) / (1 + n_random)),
        "random_mean_rank": float(null.mean()),
        "random_ci": [float(np.percentile(null, 2.5)), float(np.percentile(null, 97.5))],
        "p_value_all": float(u.pvalue),
        "n_neurons": len(neurons),
        "per_neuron": [
            {"layer": n.layer, "index": n.index, "rank": float(r)} for n, r in zip(neurons, ranks)
        ],
    }


def backward_transfer(
    base: Model,
    tuned_run: str | Path,
    out_dir: str | Path,
    *,
    n_random_seeds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Apply a run's probe (trained on the tuned model) to the base model's features.

    Args:
        base: the base :class:`hlens.Model`.
        tuned_run: an ``hlens find`` run directory (``examples.jsonl``, ``splits.json``, ``probe/``,
            ``h_neurons.json``).
        out_dir: where the base model's features go (resumable).

    Returns:
        AUROC of the transferred probe with a bootstrap interval, of random-neuron probes
        transferred the same way, and of a probe trained on the base model itself.
    """
    run = Path(tuned_run)
    for need in ("examples.jsonl", "splits.json", "probe", "h_neurons.json", "config.json"):
        if not (run / need).exists():
            raise FileNotFoundError(f"{run} has no {need}; run `hlens find` first")
    saved = json.loads((run / "config.json").read_text())
    cfg = FindConfig.from_dict(FindConfig.upgrade_dict(saved))  # a run from before the renames too
    probe = NeuronProbe.load(run / "probe", expected_shape=(base.n_layers, base.d_mlp))
    splits = Splits.load(run / "splits.json")
    examples = read_examples(run / "examples.jsonl")
    fmt = PromptFormat(template="plain", plain_template=BASE_TEMPLATE)
    cett = CETTConfig.from_dict({**cfg.cett.to_dict(), "shard_size": 512})
    store = extract_features(
        base,
        examples,
        Path(out_dir) / "base_features",
        cett,
        fmt=fmt,
        progress=progress,
        rank=0,
        world_size=1,
    )

    X_test, y_test = answer_set(store, splits.test_faithful, splits.test_hallucinated)
    transferred = probe.evaluate(X_test, y_test, n_boot=n_boot, seed=seed)

    # a probe trained on the base model itself, same recipe and C
    f_tr, h_tr = splits.train_faithful, splits.train_hallucinated
    X_tr, y_tr = probe_training_set(store, f_tr, h_tr, cfg.contrast)
    params = probe.get_params()
    own = NeuronProbe(**params).fit(X_tr, y_tr).evaluate(X_test, y_test, n_boot=n_boot, seed=seed)

    # random-neuron probes trained on the tuned model's features, transferred the same way
    tuned_store = FeatureStore(run / "features")
    h = NeuronSet.load(run / "h_neurons.json")
    rand = []
    if len(h):
        Xt_tr, yt_tr = probe_training_set(tuned_store, f_tr, h_tr, cfg.contrast)
        for s in range(n_random_seeds):
            idx = h.layer_matched_random(seed=seed + s).flat()
            p = NeuronProbe(**{**params, "n_layers": None, "d_mlp": None}).fit(Xt_tr[:, idx], yt_tr)
            score = p.decision_function(X_test[:, idx])
            rand.append(
                compute_metrics(y_test, score, (score > 0).astype(np.int64), n_boot=0).auroc
            )
    return {
        "auroc": transferred.auroc,
        "ci": list(transferred.ci["auroc"]),
        "accuracy": transferred.accuracy,
        "n_test": len(y_test),
        "base_trained": {"auroc": own.auroc, "ci": list(own.ci["auroc"])},
        "random_neurons": {"auroc": float(np.mean(rand)) if rand else math.nan, "per_seed": rand},
        "prompt": BASE_TEMPLATE,
    }


@dataclass
class OriginConfig(Record):
    """What ``hlens origin`` compares.

    Attributes:
        base: the pre-trained model (a name, checkpoint directory or hub id).
        tuned: its instruction-tuned child, the model ``run`` was found on.
        run: the ``hlens find`` run directory of the tuned model.
        device: torch device (``None``: CUDA if available, else CPU).
        seed: seed of the random-neuron sets.
        progress: show progress bars.
    """

    base: str
    tuned: str
    run: str
    device: str | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class OriginResult(Record):
    """What ``hlens origin`` measured (``origin/summary.json``).

    Attributes:
        base, tuned, run: as in the config.
        transfer: the tuned model's probe applied to the base model's CETT features (AUROC with
            its interval, a probe trained on the base model, random-neuron probes).
        inertia: the H-neurons' parameter-inertia ranks against layer-matched random sets.
        drift_summary: mean and max of each drift measure over all neurons.
    """

    base: str
    tuned: str
    run: str
    transfer: dict[str, Any]
    inertia: dict[str, Any]
    drift_summary: dict[str, dict[str, float]] = field(default_factory=dict)


def origin(
    config: OriginConfig | str,
    out_dir: str | Path,
    *args: Any,
    **kwargs: Any,
) -> OriginResult:
    """Both analyses for a base/tuned pair and an ``hlens find`` run of the tuned model; writes
    ``summary.json``, ``inertia.safetensors`` and plots to ``out_dir``.

    ``origin(base, tuned, run_dir, out_dir, device=..., seed=..., progress=...)`` (the old
    signature) still works for one release, with a :class:`DeprecationWarning`.

    Example:
        >>> cfg = OriginConfig(base="organism-base", tuned="organism", run="runs/organism")
        >>> origin(cfg, "runs/organism/origin").transfer["auroc"]  # doctest: +SKIP
    """
    if isinstance(config, str):
        warnings.warn(
            "origin(base, tuned, run_dir, out_dir, ...) is deprecated; use "
            "origin(OriginConfig(base=..., tuned=..., run=...), out_dir)",
            DeprecationWarning,
            stacklevel=2,
        )
        run_dir, out_dir = out_dir, args[1]
        config = OriginConfig(config, str(args[0]), str(run_dir), **kwargs)
    return _origin(config, out_dir)


def _origin(cfg: OriginConfig, out_dir: str | Path) -> OriginResult:
    base_name, tuned_name, run_dir = cfg.base, cfg.tuned, cfg.run
    device, seed, progress = cfg.device, cfg.seed, cfg.progress

    # every input is validated before anything is written (see hlens.errors)
    out, run = Path(out_dir), Path(run_dir)
    for need in ("examples.jsonl", "splits.json", "probe", "h_neurons.json", "config.json"):
        if not (run / need).exists():
            raise HlensInputError(
                f"--run {str(run)!r} has no {need}; expected an `hlens find` run directory of "
                "the tuned model (run `hlens find --model TUNED --out DIR` first)"
            )
    base = load_model(base_name, device=device, option="--base")
    tuned = load_model(tuned_name, device=device, option="--tuned")
    with validating("--base/--tuned"):
        check_same_architecture(base, tuned)
    h = load_neurons(run / "h_neurons.json", tuned, option="--run")
    with validating("--run", value=str(run)):
        NeuronProbe.load(run / "probe", expected_shape=(base.n_layers, base.d_mlp))
    out.mkdir(parents=True, exist_ok=True)
    inertia = parameter_inertia(base, tuned)
    test = inertia_test(inertia, h, seed=seed) if len(h) else {"note": "no H-neurons"}
    transfer = backward_transfer(base, run_dir, out, seed=seed, progress=progress)
    del tuned
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in inertia.__dict__.items() if v is not None},
        str(out / "inertia.safetensors"),
    )
    if inertia.rank.numel() <= 200_000:  # all ranks, for the report's histogram
        test = {**test, "ranks": [round(float(r), 6) for r in inertia.rank.flatten()]}
    result = OriginResult(
        base=base_name,
        tuned=tuned_name,
        run=str(run_dir),
        transfer=jsonable(transfer),
        inertia=jsonable(test),
        drift_summary={
            k: {"mean": float(v.mean()), "max": float(v.max())}
            for k, v in inertia.__dict__.items()
            if v is not None and k.startswith("drift")
        },
    )
    result.save(out / "summary.json")
    _plots(inertia, h, out)
    return result


def _plots(inertia: Inertia, h: NeuronSet, out: Path) -> None:
    flat = inertia.rank.flatten()
    fig = plots.inertia_ranks(flat, flat[h.flat()] if len(h) else [])
    fig.savefig(out / "inertia_ranks.png", dpi=120, bbox_inches="tight")
