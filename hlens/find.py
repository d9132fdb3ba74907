"""Identify H-neurons: sample, judge, keep consistent questions, split, CETT, sparse probe.

``hlens find`` (and :func:`find`) runs the paper's identification pipeline end to end and writes a
run directory::

    samples.jsonl            sampled responses (resumable)      consistency_samples.jsonl (official)
    judgements.json          labels per sample, funnel          splits.json, qids_{train,test}.json
    features/                CETT features (sharded, resumable) probe/ (safetensors + JSON)
    h_neurons.json           NeuronSet of positive-weight neurons
    summary.json             counts, metrics with intervals, baselines, controls, C path

Interrupting it loses at most one sampling batch or one feature shard; rerunning resumes.

Example:
    >>> result = find(FindConfig(model="organism"), "runs/organism")  # doctest: +SKIP
    >>> result.h_neurons.count  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from hlens._deprecate import UNSET, rename_keys, renamed_kwarg
from hlens._version import __version__
from hlens.checks import load_model, load_source
from hlens.controls import CONTROLS, ControlScore, confound_controls, control_values, span_is_whole
from hlens.errors import HlensInputError, validating
from hlens.examples import Example
from hlens.features import (
    CETTConfig,
    FeatureStore,
    extract_features,
    init_distributed,
    write_examples,
)
from hlens.formats import OFFICIAL_JUDGE, ConsistencyRecord, write_consistency_samples
from hlens.judge import ConsistencyResult, Funnel, RuleJudge, consistency_filter, locate_answer
from hlens.metrics import ProbeMetrics, strata_control
from hlens.model import Model
from hlens.neurons import NeuronSet
from hlens.probe import (
    CPath,
    NeuronProbe,
    build_training_set,
    c_min,
    c_path,
    random_neuron_baseline,
    select_c,
)
from hlens.prompts import PAPER_INSTRUCTION, PROMPT_FORMATS, PromptFormat, prompt_format, prompt_ids
from hlens.records import Record, atomic_write_text, jsonable, reject_unknown
from hlens.runlock import acquire, check_free, check_settings, kill_point
from hlens.sampling import SamplingConfig, sample_to_jsonl
from hlens.sources import (
    QuestionSource,
    default_dataset,
    is_source,
    read_samples_file,
    source_sampling,
)
from hlens.spans import RuleSpanExtractor, SpanResult, WholeResponseExtractor, span_step_counts
from hlens.splits import Splits, make_splits

#: ``FindConfig.judge`` -> the judge for sources judged by rules.
JUDGES: dict[str, RuleJudge] = {"rule": RuleJudge(), "official": RuleJudge.official()}

#: ``FindConfig.spans`` -> the answer-span extractor (``None``: the judge's spans).
SPAN_EXTRACTORS: dict[str, Any] = {
    "rules": RuleSpanExtractor(),
    "whole": WholeResponseExtractor(),
    "judge": None,
    "alias": None,
}

__all__ = [
    "Evaluation",
    "FindConfig",
    "FindResult",
    "HNeuronCount",
    "Judged",
    "Judgements",
    "Labelled",
    "ProbeFit",
    "ProbeSummary",
    "RunFunnel",
    "confound_lines",
    "find",
    "probe_training_set",
]


@dataclass
class FindConfig:
    """Everything ``hlens find`` does, in one JSON-serialisable place.

    Attributes:
        model: what :func:`hlens.load` loads (bundled or known name, directory, ``.gguf`` file
            or hub id).
        dataset: a registered source (``"organism"``, ``"triviaqa"``) or a JSONL/CSV path;
            ``None`` picks the model's (the organism's world for the organism, else TriviaQA).
        limit: use only the first ``limit`` questions (``None``: all).
        sampling: how responses are sampled; ``None`` uses the paper's settings (10 samples,
            T=1, top_p 0.9, top_k 50, 50 new tokens) adjusted by the source (see
            :data:`hlens.sources.SOURCE_SAMPLING`) and by the model's :mod:`hlens.zoo` entry.
            A prompt format that ends answers at a newline makes sampling stop there.
        cett: how features are computed (paper: |z|, ||W_out||, mean over the answer tokens).
        instruction: appended to each question in the user turn (the paper's).
        prompt: the prompt format (a key of :data:`hlens.prompts.PROMPT_FORMATS`); ``None``
            uses the model's :mod:`hlens.zoo` entry, else ``"chat"`` for a tokenizer with a chat
            template and ``"fewshot_qa"`` for one without (a base model).
        judge: ``"rule"`` (whole-word alias match, echo-aware) or ``"official"`` (the official
            reproduction's substring rule) for sources judged by rules.
        spans: how the answer span of each response is marked: ``"auto"`` (the source's
            choice, else ``"rules"``), ``"rules"`` (label-blind rules, :mod:`hlens.spans`),
            ``"whole"`` (the whole response), ``"judge"`` (the judge's spans), or ``"alias"``
            (the gold alias in faithful responses, the response in hallucinated ones: this
            depends on the label and exists only to reproduce that artefact).
        samples: responses sampled elsewhere (an official ``consistency_samples.jsonl``, e.g.
            from the official scripts' vLLM sampling, or an hlens ``samples.jsonl``); sampling
            is skipped and ``sampling.n_samples`` is the file's. Without ``dataset`` the
            questions and gold answers come from the file (official layout only).
        degenerate_threshold: stop before the probe when more than this share of first
            responses is empty, or is one repeated string (a wrong prompt; see
            :func:`degenerate_outputs`); ``None`` turns the check off.
        contrast: the probe's training set (what the hallucinated answers are contrasted
            with): ``"3-vs-1"`` (the paper's: faithful answers and the other tokens of both
            classes) or ``"1-vs-1"`` (faithful answers only). ``mode=`` (and the key ``mode`` of
            a saved config) is its deprecated name, for one release.
        penalty: ``"l1"`` (paper; sparse) or ``"l2"``.
        solver: ``"torch"`` (FISTA, GPU if present) or ``"liblinear"`` (scikit-learn).
        class_weight: ``"balanced"`` (default) weighs each training class by its inverse
            frequency. The 3-vs-1 training set holds about three negatives per positive while
            the test set is balanced answers, so without it the intercept learns the training
            prior, and accuracy at the 0.5 threshold reflects the prior rather than the neurons.
            ``None`` fits unweighted, as the official script does.
        Cs: C grid as multiples of the smallest C that selects any neuron (``C_min``, computed
            by :func:`hlens.probe.c_min`; see :mod:`hlens.probe` for how C is spelled).
        c_rule: how C is picked on the validation split (``"auroc_1se"`` favours sparsity).
        test_fraction: share of balanced question ids held out for testing.
        val_fraction: share of the training ids used to pick C.
        n_random_seeds: layer-matched random-neuron baselines.
        n_boot: bootstrap resamples for intervals.
        seed: seed for splits, baselines and bootstrap.
        device: torch device for the model (default: CUDA if available).
        question_col: for a JSONL/CSV ``dataset``: the question column.
        answers_col: for a JSONL/CSV ``dataset``: the gold-answers column.
        strata_col: for a JSONL/CSV ``dataset``: a question-type column (e.g. SimpleQA's
            ``topic``) for the question-type control in ``summary.json`` (``controls.strata``).
    """

    model: str = "organism"
    dataset: str | None = None
    limit: int | None = None
    sampling: SamplingConfig | None = None
    cett: CETTConfig = field(default_factory=CETTConfig)
    instruction: str = PAPER_INSTRUCTION
    prompt: str | None = None
    judge: Literal["rule", "official"] = "rule"
    spans: Literal["auto", "rules", "whole", "judge", "alias"] = "auto"
    degenerate_threshold: float | None = 0.5
    samples: str | None = None
    contrast: Literal["3-vs-1", "1-vs-1"] = "3-vs-1"
    penalty: Literal["l1", "l2"] = "l1"
    solver: Literal["torch", "liblinear"] = "torch"
    class_weight: Literal["balanced"] | None = "balanced"
    Cs: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0)
    c_rule: Literal["best_auroc", "auroc_1se"] = "auroc_1se"
    test_fraction: float = 0.25
    val_fraction: float = 0.25
    n_random_seeds: int = 5
    n_boot: int = 1000
    seed: int = 0
    device: str | None = None
    question_col: str = "question"
    answers_col: str = "answers"
    strata_col: str | None = None
    # deprecated keyword for `contrast`, for one release (init-only: not a field, not saved)
    mode: InitVar[Any] = UNSET

    def __post_init__(self, mode: Any) -> None:
        self.contrast = renamed_kwarg(
            "FindConfig", "mode", "contrast", mode, self.contrast, "3-vs-1", stacklevel=5
        )
        if self.dataset is None:
            self.dataset = "samples" if self.samples else default_dataset(self.model)
        if self.judge not in JUDGES:
            raise ValueError(
                f"FindConfig.judge must be one of {sorted(JUDGES)}, got {self.judge!r}"
            )
        if self.spans not in ("auto", *SPAN_EXTRACTORS):
            raise ValueError(
                f"FindConfig.spans must be 'auto' or one of {sorted(SPAN_EXTRACTORS)}, got "
                f"{self.spans!r}"
            )
        if self.prompt is not None and self.prompt not in PROMPT_FORMATS:
            raise ValueError(
                f"FindConfig.prompt must be one of {sorted(PROMPT_FORMATS)} or None, got "
                f"{self.prompt!r}"
            )
        self.Cs = tuple(float(c) for c in self.Cs)
        if not self.Cs or min(self.Cs) <= 1.0:
            raise ValueError(f"Cs are multiples of C_min and must all be > 1, got {self.Cs}")
        for name in ("test_fraction", "val_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                raise ValueError(f"FindConfig.{name} must be in (0, 1), got {v}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"FindConfig.limit must be positive or None, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sampling"], d["cett"], d["Cs"] = (
            self.sampling.to_dict() if self.sampling is not None else None,
            self.cett.to_dict(),
            list(self.Cs),
        )
        return d

    @classmethod
    def upgrade_dict(cls, d: dict[str, Any], *, warn: bool = False) -> dict[str, Any]:
        """A saved config's dict with its pre-rename keys renamed (``mode`` -> ``contrast``,
        ``cett.method`` -> ``cett.aggregation``); silent by default, for comparing a run
        directory's ``config.json`` with a new config (resuming a run made before the rename)."""
        d = rename_keys(d, {"mode": "contrast"}, "FindConfig", warn=warn)
        if isinstance(d.get("cett"), dict):
            d["cett"] = CETTConfig.upgrade_dict(d["cett"], warn=warn)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FindConfig:
        """The config of a :meth:`to_dict` dict; unknown fields raise ``ValueError``; the keys
        of older files (``mode``, ``cett.method``) load with a :class:`DeprecationWarning`."""
        d = cls.upgrade_dict(d, warn=True)
        reject_unknown("FindConfig", d, [f.name for f in fields(cls)])
        if isinstance(d.get("sampling"), dict):
            d["sampling"] = SamplingConfig.from_dict(d["sampling"])
        if isinstance(d.get("cett"), dict):
            d["cett"] = CETTConfig.from_dict(d["cett"])
        if "Cs" in d:
            d["Cs"] = tuple(float(c) for c in d["Cs"])
        return cls(**d)


@dataclass
class HNeuronCount(Record):
    """How many H-neurons, as a share of all MLP neurons, and per layer."""

    count: int
    fraction: float
    per_layer: list[int]


@dataclass
class ProbeSummary(Record):
    """The selected probe: its C (and the path's smallest), the rule, and whether it converged.

    A ``summary.json`` written before the renames (keys ``C_min`` and ``mode``) loads, with a
    :class:`DeprecationWarning`, as ``c_min`` and ``contrast``.
    """

    C: float
    c_min: float
    c_rule: str
    contrast: str
    penalty: str
    solver: str
    n_nonzero: int
    converged: bool | None = None
    convergence: dict[str, Any] | None = None

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        return rename_keys(d, {"C_min": "c_min", "mode": "contrast"}, "ProbeSummary")


@dataclass(frozen=True)
class RunFunnel(Record, Funnel):
    """The consistency funnel (:class:`hlens.judge.Funnel`) and what the run did after it:
    questions without an answer span, the split, truncated samples, degenerate responses."""

    n_span_not_found: int = 0
    n_train: int = 0
    n_test: int = 0
    n_truncated_samples: int = 0
    n_samples_total: int = 0
    degenerate: dict[str, Any] | None = None


@dataclass
class FindResult(Record):
    """What ``hlens find`` measured (``summary.json``): counts, test metrics with intervals,
    random-neuron baselines, confound controls, the C path, the funnel and the spans.

    Example:
        >>> r = FindResult.load("runs/organism/summary.json")  # doctest: +SKIP
        >>> r.h_neurons.count, r.metrics["test"]["auroc"]  # doctest: +SKIP
    """

    hlens_version: str
    model: str
    dataset: str
    n_layers: int
    d_mlp: int
    h_neurons: HNeuronCount
    metrics: dict[str, dict[str, Any]]
    baselines: dict[str, Any]
    controls: dict[str, Any]
    probe: ProbeSummary
    c_path: dict[str, Any]
    funnel: RunFunnel
    spans: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    judge: str = "rule"
    ood: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def confound_lines(self) -> list[str]:
        """The funnel, span and confound-control lines ``hlens find`` prints."""
        return confound_lines(self)


# -- stages ---------------------------------------------------------------------------------------
def _file_columns(cfg: FindConfig) -> dict[str, Any]:
    """The column options, for a file dataset; an error if they are set for a registered source."""
    cols = {"question_col": cfg.question_col, "answers_col": cfg.answers_col}
    cols["strata_col"] = cfg.strata_col
    if is_source(cfg.dataset):
        default = FindConfig()
        changed = [k for k, v in cols.items() if v != getattr(default, k)]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} apply to JSONL/CSV datasets, but dataset {cfg.dataset!r} "
                "is a registered source"
            )
        return {}
    return cols


def _check_imported(
    path: str, records: dict[str, dict[str, Any]], questions: list[Example]
) -> dict[str, dict[str, Any]]:
    """The records of ``questions`` from a samples file, or an error naming a missing id."""
    missing = [q.id for q in questions if q.id not in records]
    if missing:
        raise HlensInputError(
            f"--samples {path}: {len(missing)} of {len(questions)} questions have no responses "
            f"there (e.g. id {missing[0]!r}); expected a file holding every question's id"
        )
    return {q.id: records[q.id] for q in questions}


def _store_imported(records: dict[str, dict[str, Any]], out: Path, name: str) -> None:
    """Copy imported records into the run's sample store ``name`` (once, atomically)."""
    store = out / name
    if store.exists():
        return
    tmp = store.with_name(store.name + ".tmp")
    with tmp.open("w") as f:
        for qid, r in records.items():
            rec = {"id": qid, "responses": r["responses"], "truncated": r["truncated"]}
            f.write(json.dumps(rec) + "\n")
    tmp.replace(store)


def _sample(
    model: Model,
    questions: list[Example],
    out: Path,
    cfg: FindConfig,
    fmt: PromptFormat,
    name: str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    prompts = [prompt_ids(q, model.tokenizer, fmt) for q in questions]
    ids = [q.id for q in questions]
    sampling = cfg.sampling
    if fmt.cut_at_newline and not sampling.stop_at_newline:
        sampling = SamplingConfig.from_dict({**sampling.to_dict(), "stop_at_newline": True})
    recs = sample_to_jsonl(
        out / name, model.hf_model, model.tokenizer, prompts, ids, sampling, progress=progress
    )
    return {r["id"]: r for r in recs}


def _judge_all(source_judge: Any, questions: list[Example], records: dict[str, dict[str, Any]]):
    labels: dict[str, list[str]] = {}
    spans: dict[str, list[Any]] = {}
    for q in questions:
        js = [source_judge(q, r) for r in records[q.id]["responses"]]
        labels[q.id] = [j.label for j in js]
        spans[q.id] = [j.span for j in js]
    return labels, spans


def _labelled_examples(questions, records, labels, spans, kept: dict[str, str], how: str):
    """One example per kept question: its first response, labelled, with its answer span.

    ``how`` names the span extractor (see :data:`SPAN_EXTRACTORS`). Every extractor but
    ``"alias"`` marks the span without looking at the label, so the span means the same thing in
    both classes. Examples whose span cannot be found are reported, never kept with a guess.

    Returns:
        ``(examples, skipped, steps)``: ``steps[id]`` is the extractor step that marked it.
    """
    extractor = SPAN_EXTRACTORS[how]
    out, skipped, steps = [], [], {}
    for q in questions:
        if q.id not in kept:
            continue
        response = records[q.id]["responses"][0]
        if extractor is not None:
            res: SpanResult = extractor(q.question, response)
            span, step = res.span, res.step
        else:
            span, step = spans[q.id][0], "judge"
            if span is None and how == "alias":
                span = locate_answer(response, q.answers if kept[q.id] == "faithful" else None)
                step = "alias" if kept[q.id] == "faithful" else "answer_only"
        steps[q.id] = step if span is not None else "none"
        if span is None:
            skipped.append({"id": q.id, "label": kept[q.id], "reason": "answer span not found"})
            continue
        out.append(q.replace(response=response, answer_span=span, label=kept[q.id]))
    return out, skipped, steps


def degenerate_outputs(
    records: dict[str, dict[str, Any]], *, threshold: float = 0.5, min_questions: int = 20
) -> dict[str, Any]:
    """Whether a model's responses are degenerate: mostly empty, or mostly one repeated string.

    A wrong prompt (Gemma without its ``<bos>`` answers ``""`` or ``"A:\nA:"`` everywhere) makes
    every answer "hallucinated"; such a run must stop before the probe, not feed it.

    Example:
        >>> recs = {str(i): {"responses": ["A:"]} for i in range(30)}
        >>> degenerate_outputs(recs)["degenerate"]
        True
    """
    first = [r["responses"][0].strip() for r in records.values() if r["responses"]]
    n = len(first)
    empty = sum(not x for x in first) / n if n else 0.0
    top, top_n = ("", 0)
    if n:
        from collections import Counter

        top, top_n = Counter(first).most_common(1)[0]
    share_top = top_n / n if n else 0.0
    bad = n >= min_questions and (empty > threshold or share_top > threshold)
    return {
        "degenerate": bool(bad),
        "share_empty": round(empty, 4),
        "most_common_response": top,
        "share_most_common": round(share_top, 4),
        "threshold": threshold,
    }


def _flat(store: FeatureStore, region: str, ids: list[str]) -> torch.Tensor:
    return store.load(region, ids, flat=True) if ids else torch.empty(0, math.prod(store.shape))


def _finite_rows(X: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(X).all(dim=1)


def probe_training_set(
    store: FeatureStore,
    faithful: Sequence[str],
    hallucinated: Sequence[str],
    contrast: Literal["3-vs-1", "1-vs-1"] = "3-vs-1",
    *,
    mode: Any = UNSET,
) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
    """The probe's training set from stored features, as ``hlens find`` builds it.

    Answer features of the ``faithful`` and ``hallucinated`` ids; with ``contrast="3-vs-1"``
    also their ``all_except_answer`` features as negatives (rows without such tokens are
    dropped). ``mode=`` is the deprecated name of ``contrast``, for one release.
    """
    contrast = renamed_kwarg("probe_training_set", "mode", "contrast", mode, contrast, "3-vs-1")

    faithful, hallucinated = list(faithful), list(hallucinated)
    f, h = _flat(store, "answer", faithful), _flat(store, "answer", hallucinated)
    other = None
    if contrast == "3-vs-1":
        other = _flat(store, "all_except_answer", faithful + hallucinated)
        other = other[_finite_rows(other)]
    return build_training_set(f, h, other, contrast=contrast)


#: stopping tolerance of the L1 probe fits (the C path, the final fit, the random baselines). At
#: NeuronProbe's default 1e-4 the support had not settled on real SmolLM2 features: H-neuron
#: Jaccard 0.85 with liblinear at tol 1e-8; at 1e-5 it is 1.0, for 0.19 s instead of 0.16 s
#: (``python -m benchmarks.bench_probe_real``).
PROBE_TOL = 1e-5


def _answer_set(
    store: FeatureStore, faithful: Sequence[str], hallucinated: Sequence[str]
) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
    faithful, hallucinated = list(faithful), list(hallucinated)
    X = torch.cat([_flat(store, "answer", faithful), _flat(store, "answer", hallucinated)])
    y = np.array([0] * len(faithful) + [1] * len(hallucinated), dtype=np.int64)
    return X, y


@dataclass(frozen=True)
class ProbeFit:
    """The fitted probe of a run and the C path that chose its C (:func:`find`'s probe stage).

    Attributes:
        probe: the probe refit on the whole training split at ``C``.
        path: held-out quality and sparsity along the C grid (on a validation split of train).
        C: the selected C (``FindConfig.c_rule`` on ``path``).
        c_min: the smallest C that selects any neuron (``1.0`` for an L2 penalty); the grid is
            ``c_min * FindConfig.Cs``.
        store: the CETT features the sets below are read from.
        contrast: the training set's contrast (``"3-vs-1"`` or ``"1-vs-1"``).
    """

    probe: NeuronProbe
    path: CPath
    C: float
    c_min: float
    store: FeatureStore
    contrast: str

    def training_set(
        self, faithful: Sequence[str], hallucinated: Sequence[str]
    ) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
        """The probe's training set of these ids (:func:`probe_training_set`)."""
        return probe_training_set(self.store, list(faithful), list(hallucinated), self.contrast)

    def answer_set(
        self, faithful: Sequence[str], hallucinated: Sequence[str]
    ) -> tuple[Float[Tensor, "sample neuron"], Int[np.ndarray, " sample"]]:
        """The answer-region features of these ids, faithful first (label 0) then hallucinated
        (label 1): what the probe is evaluated on."""
        return _answer_set(self.store, faithful, hallucinated)

    def h_neurons(self, model: str, dataset: str) -> NeuronSet:
        """The probe's H-neurons (positive weights); their meta names the model, data and C."""
        h = self.probe.h_neurons_
        meta = {**h.meta, "model": model, "dataset": dataset, "C": self.C}
        return type(h)(h.neurons, h.n_layers, h.d_mlp, h.weights, meta)


def _fit_probe(
    store: FeatureStore,
    splits: Splits,
    groups: dict[str, str] | None,
    cfg: FindConfig,
    meta: dict[str, Any],
) -> ProbeFit:
    """The C path on a validation split of train, then the probe refit on train at the chosen C."""
    n_layers, d_mlp = store.shape
    val = make_splits(
        splits.train_faithful,
        splits.train_hallucinated,
        test_fraction=cfg.val_fraction,
        seed=cfg.seed + 1,
        balance=False,
        groups={i: groups[i] for i in splits.train_ids} if groups else None,
    )
    params = dict(
        penalty=cfg.penalty,
        solver=cfg.solver,
        n_layers=n_layers,
        d_mlp=d_mlp,
        random_state=cfg.seed,
        max_iter=5000,
        tol=PROBE_TOL,
        class_weight=cfg.class_weight,
    )
    X_fit, y_fit = probe_training_set(
        store, list(val.train_faithful), list(val.train_hallucinated), cfg.contrast
    )
    X_val, y_val = _answer_set(store, val.test_faithful, val.test_hallucinated)
    cmin = c_min(X_fit, y_fit, cfg.class_weight) if cfg.penalty == "l1" else 1.0
    Cs = [cmin * m for m in cfg.Cs]
    path = c_path(X_fit, y_fit, X_val, y_val, Cs, **params)
    C = select_c(path, cfg.c_rule)
    X_train, y_train = probe_training_set(
        store, list(splits.train_faithful), list(splits.train_hallucinated), cfg.contrast
    )
    probe = NeuronProbe(C=C, metadata=meta, **params).fit(X_train, y_train)
    return ProbeFit(probe, path, C, cmin, store, cfg.contrast)


@dataclass(frozen=True)
class Judged:
    """Every question's judgements (:func:`find`'s judge stage): the label and span of each
    sampled response, and which questions the consistency filter keeps."""

    labels: dict[str, list[str]]
    spans: dict[str, list[Any]]
    consistency: ConsistencyResult


@dataclass(frozen=True)
class Labelled:
    """One labelled example per kept question, with its answer span (:func:`find`'s span stage),
    and what was seen on the way: questions without a span, degenerate or truncated responses.

    Attributes:
        examples: the first response of each kept question whose answer span was found.
        skipped: the kept questions without an answer span (id, label, reason).
        span_method: the span extractor (a key of :data:`SPAN_EXTRACTORS`).
        span_info: per class, the extractor steps and the whole-response share (summary.json's
            ``spans``).
        degenerate: :func:`degenerate_outputs` of all first responses.
        n_truncated_samples: sampled responses cut at the token limit.
        n_samples_total: all sampled responses.
    """

    examples: list[Example]
    skipped: list[dict[str, Any]]
    span_method: str
    span_info: dict[str, Any]
    degenerate: dict[str, Any]
    n_truncated_samples: int
    n_samples_total: int

    def ids(self, label: str) -> list[str]:
        """The ids of the examples labelled ``label``, in order."""
        return [e.id for e in self.examples if e.label == label]


@dataclass
class Judgements(Record):
    """``judgements.json``: the labels of every sample, the consistency filter, the questions
    without an answer span, the degenerate-output check and the span summary."""

    labels: dict[str, list[str]]
    consistency: dict[str, Any]
    skipped: list[dict[str, Any]]
    degenerate: dict[str, Any]
    spans: dict[str, Any]

    @classmethod
    def of(cls, judged: Judged, labelled: Labelled) -> Judgements:
        return cls(
            judged.labels,
            judged.consistency.to_dict(),
            labelled.skipped,
            labelled.degenerate,
            labelled.span_info,
        )

    def save(self, path: str | Path) -> Path:
        """Write ``judgements.json`` as it always was (``indent=0``; an undefined share stays
        ``NaN``, not ``null``), atomically."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        return atomic_write_text(path, json.dumps(raw, indent=0))


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


def _responses(
    model: Model,
    source: QuestionSource,
    imported: dict[str, dict[str, Any]] | None,
    out: Path,
    cfg: FindConfig,
    fmt: PromptFormat,
    rank: int,
    world: int,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Sample every question's responses on rank 0 (or take those sampled elsewhere); the other
    ranks read the finished store."""
    main = rank == 0
    if imported is not None:
        records = imported
        if main:
            _store_imported(records, out, "samples.jsonl")
    elif main:
        records = _sample(model, source.questions, out, cfg, fmt, "samples.jsonl", progress)
    _barrier(world)
    if imported is None and not main:  # the store is complete: this reads it, generating nothing
        records = _sample(model, source.questions, out, cfg, fmt, "samples.jsonl", False)
    return records


def _judge(source: QuestionSource, records: dict[str, dict[str, Any]], cfg: FindConfig) -> Judged:
    """Judge every sampled response; keep the questions judged the same in every sample."""
    labels, spans = _judge_all(source.judge, source.questions, records)
    consistency = consistency_filter(labels, n_samples=cfg.sampling.n_samples)
    return Judged(labels, spans, consistency)


def _write_official_samples(
    source: QuestionSource,
    records: dict[str, dict[str, Any]],
    judged: Judged,
    cfg: FindConfig,
    out: Path,
) -> None:
    """``consistency_samples.jsonl``: the responses and labels in the official scripts' layout."""
    official = [
        ConsistencyRecord(
            q.id,
            q.question + cfg.instruction,
            records[q.id]["responses"],
            [OFFICIAL_JUDGE[x] for x in judged.labels[q.id]],
            list(q.answers),
        )
        for q in source.questions
    ]
    write_consistency_samples(official, out / "consistency_samples.jsonl")


def _label(
    source: QuestionSource, records: dict[str, dict[str, Any]], judged: Judged, cfg: FindConfig
) -> Labelled:
    """One example per kept question (its first response) with its answer span, and the checks
    on the responses (degenerate, truncated)."""
    how = _span_method(cfg, source)
    kept = judged.consistency.kept
    examples, skipped, steps = _labelled_examples(
        source.questions, records, judged.labels, judged.spans, kept, how
    )
    return Labelled(
        examples=examples,
        skipped=skipped,
        span_method=how,
        span_info=_span_summary(how, examples, kept, steps),
        degenerate=degenerate_outputs(records, threshold=cfg.degenerate_threshold or 1.0),
        n_truncated_samples=sum(sum(r["truncated"]) for r in records.values()),
        n_samples_total=sum(len(r["truncated"]) for r in records.values()),
    )


def _check_degenerate(labelled: Labelled, judged: Judged, cfg: FindConfig, prompt: str) -> None:
    """Stop before the probe when the responses are degenerate (see :func:`degenerate_outputs`)."""
    degenerate = labelled.degenerate
    if degenerate["degenerate"] and cfg.degenerate_threshold is not None:
        raise HlensInputError(
            f"the model's responses are degenerate ({100 * degenerate['share_empty']:.0f}% empty, "
            f"{100 * degenerate['share_most_common']:.0f}% are "
            f"{degenerate['most_common_response']!r}); the probe would learn nothing. Check the "
            f"prompt format ({prompt!r}; --prompt) and that the tokenizer adds the model's "
            f"special tokens. Funnel: {judged.consistency.funnel.to_dict()}"
        )


def _split(
    labelled: Labelled, judged: Judged, source: QuestionSource, cfg: FindConfig
) -> tuple[Splits, dict[str, str] | None]:
    """Balanced, disjoint train/test splits (by group when the source has groups), and the
    groups of the labelled examples."""
    faithful, halluc = labelled.ids("faithful"), labelled.ids("hallucinated")
    if min(len(faithful), len(halluc)) < 4:
        raise HlensInputError(
            f"too few consistent questions to fit a probe: {len(faithful)} faithful, {len(halluc)} "
            f"hallucinated (funnel: {judged.consistency.funnel.to_dict()}); use more questions"
        )
    groups = {e.id: source.groups[e.id] for e in labelled.examples} if source.groups else None
    splits = make_splits(
        faithful, halluc, test_fraction=cfg.test_fraction, seed=cfg.seed, groups=groups
    )
    return splits, groups


def _probe_meta(cfg: FindConfig, source: QuestionSource) -> dict[str, Any]:
    """What the saved probe records about how its features were made."""
    return {
        "model_id": cfg.model,
        "dataset": source.name,
        "cett": cfg.cett.score_options(),
        "regions": list(cfg.cett.regions),
        "contrast": cfg.contrast,
    }


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


def _resolve(config: FindConfig) -> tuple[FindConfig, dict[str, dict[str, Any]] | None]:
    """The config with its sampling settled (the source's defaults, or the responses file's
    sample count), and the responses sampled elsewhere (``--samples``), if any."""
    cfg = config
    if cfg.sampling is None:
        sampling = source_sampling(cfg.dataset, model=cfg.model)
        cfg = FindConfig.from_dict({**cfg.to_dict(), "sampling": sampling.to_dict()})
    imported: dict[str, dict[str, Any]] | None = None  # responses sampled elsewhere
    if cfg.samples is not None:  # the file's responses decide how many samples there are
        with validating("--samples", "an official consistency_samples.jsonl or an hlens store"):
            imported = read_samples_file(cfg.samples)
        if not imported:
            raise HlensInputError(f"--samples {cfg.samples}: the file holds no records")
        n_file = len(next(iter(imported.values()))["responses"])
        sampling = {**cfg.sampling.to_dict(), "n_samples": n_file}
        cfg = FindConfig.from_dict({**cfg.to_dict(), "sampling": sampling})
    return cfg, imported


def find(config: FindConfig, out_dir: str | Path, *, progress: bool = True) -> FindResult:
    """Run the identification pipeline; returns (and writes, ``summary.json``) its
    :class:`FindResult`. See the module doc.

    The stages, each a function returning a small typed result: settle the config; validate
    the inputs and load the model and the source; sample (:func:`_responses`); judge and keep
    consistent questions (:class:`Judged`); label one example per question with its answer span
    (:class:`Labelled`, ``judgements.json``); split (:class:`~hlens.splits.Splits`); CETT
    features (:class:`~hlens.features.FeatureStore`); the probe (:class:`ProbeFit`); test
    metrics (:class:`Evaluation`); random-neuron baselines and confound controls; out of
    distribution; the summary (:class:`FindResult`).
    """
    t0 = time.time()
    cfg, imported = _resolve(config)
    out = Path(out_dir)
    # under torchrun: rank 0 samples; every rank extracts its share of feature shards
    rank, world, dist_device = init_distributed()
    main = rank == 0
    # every input is validated (options, run directory, model, dataset) before anything is written
    with validating():
        columns = _file_columns(cfg)  # before loading the model: a wrong option fails fast
    if main:  # another run in `out`, or one with other options, fails before the model loads
        check_free(out)
        check_settings(
            out / "config.json",
            cfg.to_dict(),
            command="hlens find",
            ignore=["device"],
            upgrade=FindConfig.upgrade_dict,
        )
    model = load_model(cfg.model, device=dist_device or cfg.device)
    source = load_source(
        cfg.dataset,
        model_name=cfg.model,
        limit=cfg.limit,
        judge=JUDGES[cfg.judge],
        samples=cfg.samples,
        **columns,
    )
    if imported is not None:
        imported = _check_imported(cfg.samples, imported, source.questions)
    _lock = acquire(out) if main else None  # one writer, until find returns or the process exits
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    prompt_name = _prompt_name(cfg, model)
    fmt = prompt_format(prompt_name, model.tokenizer, cfg.instruction)

    # 1. sample (or read responses sampled elsewhere), 2. judge, 3. keep consistent questions
    records = _responses(model, source, imported, out, cfg, fmt, rank, world, progress)
    judged = _judge(source, records, cfg)
    if main:
        _write_official_samples(source, records, judged, cfg, out)
    labelled = _label(source, records, judged, cfg)
    if main:
        Judgements.of(judged, labelled).save(out / "judgements.json")
    _check_degenerate(labelled, judged, cfg, prompt_name)

    # 4. balanced, disjoint splits (by group when the source has groups)
    splits, groups = _split(labelled, judged, source, cfg)
    by_id = {e.id: e for e in labelled.examples}
    used = [by_id[i] for i in (*splits.train_ids, *splits.test_ids)]
    if main:
        splits.save(out / "splits.json")
        splits.to_official(out)
        write_examples(used, out / "examples.jsonl")

    # 5. CETT features of every example that is in a split (each rank its own shards)
    store = extract_features(
        model, used, out / "features", cfg.cett, fmt=fmt, progress=progress and main
    )
    if store is None:  # a rank other than 0: its shards are written, rank 0 does the rest
        return {}

    # 6. probe: C path on a validation split of train, refit on train, evaluate on test
    fit = _fit_probe(store, splits, groups, cfg, _probe_meta(cfg, source))
    fit.probe.save(out / "probe")
    h = fit.h_neurons(cfg.model, source.name)
    h.save(out / "h_neurons.json")
    kill_point("baselines")  # test-only (HLENS_TEST_KILL_AT): after the probe, before baselines
    ev = _evaluate(fit, splits, cfg)

    # 7. controls: random neurons of the same count, the question type, one-number confounds
    baseline = _random_baseline(fit, h, ev, cfg)
    controls = _controls(model, fmt, records, splits, labelled, ev, source, out, cfg)

    # 8. out of distribution (the organism's never-seen people)
    ood = _ood(model, source, fit.probe, out, cfg, fmt, progress)

    result = _summary(
        cfg, model, source, judged, labelled, splits, fit, h, ev, baseline, controls, ood,
        prompt_name, fmt, time.time() - t0,
    )  # fmt: skip
    result.save(out / "summary.json")
    return result


def _prompt_name(cfg: FindConfig, model: Model) -> str:
    """The prompt format's name: the config's, the known model's, or by the chat template."""
    if cfg.prompt is not None:
        return cfg.prompt
    known = getattr(model, "known", None)
    if known is not None:
        return known.prompt
    return "chat" if getattr(model.tokenizer, "chat_template", None) else "fewshot_qa"


def _span_method(cfg: FindConfig, source: QuestionSource) -> str:
    if cfg.spans != "auto":
        return cfg.spans
    return source.spans or "rules"


def _span_summary(
    how: str, examples: list[Example], kept: dict[str, str], steps: dict[str, str]
) -> dict[str, Any]:
    """Per class: how many spans each extractor step marked, and the whole-response share."""
    by_class: dict[str, Any] = {}
    for label in ("faithful", "hallucinated"):
        ids = [q for q, lab in kept.items() if lab == label]
        exs = [e for e in examples if e.label == label]
        whole = [span_is_whole(e) for e in exs]
        lengths = [e.answer_span[1] - e.answer_span[0] for e in exs]
        by_class[label] = {
            "steps": span_step_counts(steps[q] for q in ids if q in steps),
            "n_kept": len(exs),
            "share_whole_response": float(np.mean(whole)) if whole else float("nan"),
            "mean_span_chars": float(np.mean(lengths)) if lengths else float("nan"),
        }
    f, h = by_class["faithful"], by_class["hallucinated"]
    diff = abs(f["share_whole_response"] - h["share_whole_response"])
    return {
        "extractor": how,
        "label_blind": how != "alias",
        "by_class": by_class,
        "whole_response_share_gap": diff,
    }


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


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


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


def _f3(x: float | None, digits: int = 3) -> str:
    """``x`` to ``digits`` decimals; an undefined value (NaN, written as ``null``) as ``nan``."""
    return "nan" if x is None else f"{x:.{digits}f}"


def confound_lines(result: FindResult) -> list[str]:
    """The funnel, span and confound-control lines ``hlens find`` prints after its metrics."""
    lines = []
    f = result.funnel
    lines.append(
        f"funnel: {f.n_questions} questions -> {f.n_consistent_faithful} consistently "
        f"faithful, {f.n_consistent_hallucinated} consistently hallucinated ({f.n_mixed} "
        f"mixed, {f.n_with_uncertain} with an abstention); {f.n_span_not_found} without an "
        f"answer span; {f.n_train} train / {f.n_test} test"
    )
    sp = result.spans
    if sp:
        bc = sp["by_class"]
        lines.append(
            f"answer spans ({sp['extractor']}): whole response in "
            f"{_f3(bc['faithful']['share_whole_response'], 2)} of faithful and "
            f"{_f3(bc['hallucinated']['share_whole_response'], 2)} of hallucinated examples"
        )
    conf = result.controls.get("confounds")
    if conf:
        lines.append(
            f"confound controls (test AUROC of one number alone; probe {_f3(conf['probe_auroc'])}):"
        )
        for name, c in conf["controls"].items():
            flag = "  <-- within 0.05 of the probe" if name in conf["flagged"] else ""
            lines.append(f"  {CONTROLS.get(name, name):<62} {_f3(c['auroc'])}{flag}")
        bins = conf.get("length_bins")
        if bins:
            lines.append(
                f"  probe within answer-length bins: AUROC {_f3(bins['within_strata_auroc'])} "
                f"(length bins alone {_f3(bins['strata_only_auroc'])})"
            )
        lines.append(("WARNING: " if conf["flagged"] else "") + conf["verdict"])
    return lines
