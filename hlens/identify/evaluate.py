"""The evaluation stages of ``hlens find``: test metrics with intervals, layer-matched
random-neuron baselines, question-type and confound controls, out-of-distribution questions,
and the run's :class:`~hlens.identify.config.FindResult`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from hlens._version import __version__
from hlens.controls import ControlScore, confound_controls, control_values
from hlens.examples import Example
from hlens.features import CETTConfig, extract_features
from hlens.identify.config import FindConfig, FindResult
from hlens.identify.fit import PROBE_TOL, ProbeFit
from hlens.identify.stages import (
    Judged,
    Labelled,
    _judge_all,
    _labelled_examples,
    _sample,
    _span_method,
)
from hlens.metrics import ProbeMetrics, strata_control
from hlens.model import Model
from hlens.neurons import NeuronSet
from hlens.probe import NeuronProbe, random_neuron_baseline
from hlens.prompts import PromptFormat
from hlens.records import jsonable
from hlens.sampling import SamplingConfig
from hlens.sources import QuestionSource
from hlens.splits import Splits

__all__ = ["Evaluation"]


def _probe_meta(cfg: FindConfig, source: QuestionSource) -> dict[str, Any]:
    """What the saved probe records about how its features were made."""
    return {
        "model_id": cfg.model,
        "dataset": source.name,
        "cett": cfg.cett.score_options(),
        "regions": list(cfg.cett.regions),
        "contrast": cfg.contrast,
    }


@dataclass(frozen=True)
class Evaluation:
    """The probe on the test split, and both splits' feature sets (:func:`find`'s test stage).

    Attributes:
        metrics: test metrics with bootstrap intervals.
        scores: the probe's decision values on ``X_test``.
    """

    X_train: Float[Tensor, "train neuron"]
    y_train: Int[np.ndarray, " train"]
    X_test: Float[Tensor, "test neuron"]
    y_test: Int[np.ndarray, " test"]
    metrics: ProbeMetrics
    scores: np.ndarray


def _evaluate(fit: ProbeFit, splits: Splits, cfg: FindConfig) -> Evaluation:
    """The probe's test metrics (with bootstrap intervals), and both splits' feature sets."""
    X_test, y_test = fit.answer_set(splits.test_faithful, splits.test_hallucinated)
    metrics = fit.probe.evaluate(X_test, y_test, n_boot=cfg.n_boot, seed=cfg.seed)
    X_train, y_train = fit.training_set(splits.train_faithful, splits.train_hallucinated)
    scores = fit.probe.decision_function(X_test)
    return Evaluation(X_train, y_train, X_test, y_test, metrics, scores)


def _random_baseline(
    fit: ProbeFit, h: NeuronSet, ev: Evaluation, cfg: FindConfig
) -> dict[str, Any]:
    """Probes on layer-matched random neurons, as many as the H-neurons (summary.json's
    ``baselines.random_neurons``)."""
    if len(h) == 0:
        return {"note": "no H-neurons selected"}
    params = dict(
        penalty=cfg.penalty,
        solver=cfg.solver,
        C=fit.C,
        max_iter=5000,
        tol=PROBE_TOL,
        n_layers=h.n_layers,
        d_mlp=h.d_mlp,
        random_state=cfg.seed,
        class_weight=cfg.class_weight,
    )
    b = random_neuron_baseline(
        ev.X_train,
        ev.y_train,
        ev.X_test,
        ev.y_test,
        h,
        n_seeds=cfg.n_random_seeds,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        **params,
    )
    return {
        "accuracy": b.mean["accuracy"],
        "auroc": b.mean["auroc"],
        "ci": b.ci,
        "h_neurons_only": b.reference.to_dict(),
        "seeds": list(b.seeds),
        "per_seed": [m.to_dict() for m in b.random],
    }


def _controls(
    model: Model,
    fmt: PromptFormat,
    records: dict[str, dict[str, Any]],
    splits: Splits,
    labelled: Labelled,
    ev: Evaluation,
    source: QuestionSource,
    out: Path,
    cfg: FindConfig,
) -> dict[str, Any]:
    """How much of the probe's AUROC the question type alone explains (``strata``), and one
    number per example against the probe on the same test split (``confounds``)."""
    controls: dict[str, Any] = {"strata": None}
    if source.strata:
        train_ids = [*splits.train_faithful, *splits.train_hallucinated]
        test_ids = [*splits.test_faithful, *splits.test_hallucinated]
        controls["strata"] = strata_control(
            np.array([0] * len(splits.train_faithful) + [1] * len(splits.train_hallucinated)),
            [source.strata[i] for i in train_ids],
            ev.y_test,
            ev.scores,
            [source.strata[i] for i in test_ids],
        )
    by_id = {e.id: e for e in labelled.examples}
    controls["confounds"] = _confounds(
        model, fmt, records, splits, by_id, ev.scores, controls, out, cfg
    )
    return controls


def _confounds(
    model: Model,
    fmt: PromptFormat,
    records: dict[str, dict[str, Any]],
    splits: Splits,
    by_id: dict[str, Example],
    test_scores: np.ndarray,
    controls: dict[str, Any],
    out: Path,
    cfg: FindConfig,
) -> dict[str, Any]:
    """Confound controls on the probe's test split (values cached in ``control_values.json``)."""
    train_ids = [*splits.train_faithful, *splits.train_hallucinated]
    test_ids = [*splits.test_faithful, *splits.test_hallucinated]
    ids = train_ids + test_ids
    y = np.array(
        [0] * len(splits.train_faithful)
        + [1] * len(splits.train_hallucinated)
        + [0] * len(splits.test_faithful)
        + [1] * len(splits.test_hallucinated)
    )
    cache = out / "control_values.json"
    values: dict[str, np.ndarray] | None = None
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("ids") == ids:
                values = {k: np.array(v, dtype=np.float64) for k, v in stored["values"].items()}
        except (json.JSONDecodeError, KeyError, TypeError):
            values = None
    if values is None:
        values = control_values(
            model,
            [by_id[i] for i in ids],
            fmt,
            truncated=[bool(records[i]["truncated"][0]) for i in ids],
            batch_size=cfg.cett.batch_size,
        )
        payload = {"ids": ids, "values": {k: v.tolist() for k, v in values.items()}}
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(cache)
    extra = []
    strata = controls.get("strata")
    if strata:  # the question type is a one-number control too
        nan = float("nan")
        extra.append(
            ControlScore("question_type", float(strata["strata_only_auroc"]), nan, False, nan, nan)
        )
    n_train = len(train_ids)
    return confound_controls(
        values, y, slice(0, n_train), slice(n_train, len(ids)), test_scores, extra=extra
    ).to_dict()


def _headline(m: ProbeMetrics) -> dict[str, Any]:
    d = m.to_dict()
    out = {k: d[k] for k in ("accuracy", "precision", "recall", "f1", "auroc") if k in d}
    ci = d.get("ci", {})
    out |= {f"{k}_ci": ci[k] for k in ("accuracy", "auroc") if k in ci}
    return out


def _pick(ood: dict[str, Any]) -> dict[str, Any]:
    return {k: ood[k] for k in ("accuracy", "auroc") if k in ood} or {
        "note": ood.get("note", "n/a")
    }


def _ood(
    model: Model,
    source: QuestionSource,
    probe: NeuronProbe,
    out: Path,
    cfg: FindConfig,
    fmt: PromptFormat,
    progress: bool,
) -> dict[str, Any]:
    if not source.ood_questions:
        return {"available": False}
    sampling = SamplingConfig.from_dict({**cfg.sampling.to_dict(), "n_samples": 1})
    cfg_ood = FindConfig.from_dict({**cfg.to_dict(), "sampling": sampling.to_dict()})
    records = _sample(model, source.ood_questions, out, cfg_ood, fmt, "ood_samples.jsonl", progress)
    labels, spans = _judge_all(source.ood_judge, source.ood_questions, records)
    kept = {q: ls[0] for q, ls in labels.items() if ls[0] != "uncertain"}
    how = _span_method(cfg, source)
    examples, skipped, _ = _labelled_examples(
        source.ood_questions, records, labels, spans, kept, how
    )
    counts = {lab: sum(e.label == lab for e in examples) for lab in ("faithful", "hallucinated")}
    result: dict[str, Any] = {
        "available": True,
        "n_questions": len(source.ood_questions),
        "n_uncertain": len(labels) - len(kept),
        "n_span_not_found": len(skipped),
        **{f"n_{k}": v for k, v in counts.items()},
    }
    if min(counts.values()) == 0:
        result["note"] = "one class is empty: AUROC undefined"
        return result
    store = extract_features(
        model,
        examples,
        out / "ood_features",
        CETTConfig.from_dict({**cfg.cett.to_dict(), "regions": ["answer"]}),
        fmt=fmt,
        progress=progress,
        rank=0,
        world_size=1,
    )
    X = store.load("answer", [e.id for e in examples], flat=True)
    y = np.array([int(e.label == "hallucinated") for e in examples])
    m = probe.evaluate(X, y, n_boot=cfg.n_boot, seed=cfg.seed)
    result |= {"accuracy": m.accuracy, "auroc": m.auroc, "metrics": m.to_dict()}
    return result


def _summary(
    cfg: FindConfig,
    model: Model,
    source: QuestionSource,
    judged: Judged,
    labelled: Labelled,
    splits: Splits,
    fit: ProbeFit,
    h: NeuronSet,
    ev: Evaluation,
    baseline: dict[str, Any],
    controls: dict[str, Any],
    ood: dict[str, Any],
    prompt_name: str,
    fmt: PromptFormat,
    seconds: float,
) -> FindResult:
    """The run's :class:`FindResult` (``summary.json``) from its stages."""
    probe = fit.probe
    summary = {
        "hlens_version": __version__,
        "model": cfg.model,
        "dataset": source.name,
        "n_layers": model.n_layers,
        "d_mlp": model.d_mlp,
        "h_neurons": {"count": len(h), "fraction": h.fraction(), "per_layer": h.layer_counts()},
        "metrics": {"test": {**_headline(ev.metrics), "n": len(ev.y_test)}, "ood": _pick(ood)},
        "baselines": {"random_neurons": baseline},
        "controls": controls,
        "probe": {
            "C": fit.C,
            "c_min": fit.c_min,
            "c_rule": cfg.c_rule,
            "contrast": cfg.contrast,
            "penalty": cfg.penalty,
            "solver": cfg.solver,
            "n_nonzero": int((probe.coef_ != 0).sum()),
            "converged": getattr(probe, "converged_", None),
            "convergence": getattr(probe, "convergence_", None),
        },
        "c_path": fit.path.to_dict(),
        "funnel": {
            **judged.consistency.funnel.to_dict(),
            "n_span_not_found": len(labelled.skipped),
            "n_train": len(splits.train_ids),
            "n_test": len(splits.test_ids),
            "n_truncated_samples": labelled.n_truncated_samples,
            "n_samples_total": labelled.n_samples_total,
            "degenerate": labelled.degenerate,
        },
        "spans": labelled.span_info,
        "prompt": {"name": prompt_name, "format": fmt.to_dict()},
        "judge": cfg.judge,
        "ood": ood,
        "source": source.info,
        "seconds": round(seconds, 1),
    }
    return FindResult.from_dict(jsonable(summary))
