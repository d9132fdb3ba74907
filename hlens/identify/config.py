"""What ``hlens find`` is asked and what it returns: :class:`FindConfig`, the typed
:class:`FindResult` (saved as ``summary.json``) and the lines that print its confound controls."""

from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass, field, fields
from typing import Any, Literal

from hlens._deprecate import UNSET, rename_keys, renamed_kwarg
from hlens.controls import CONTROLS
from hlens.features import CETTConfig
from hlens.judge import Funnel, RuleJudge
from hlens.prompts import PAPER_INSTRUCTION, PROMPT_FORMATS
from hlens.records import Record, reject_unknown
from hlens.sampling import SamplingConfig
from hlens.sources import default_dataset
from hlens.spans import RuleSpanExtractor, WholeResponseExtractor

__all__ = [
    "JUDGES",
    "SPAN_EXTRACTORS",
    "FindConfig",
    "FindResult",
    "HNeuronCount",
    "ProbeSummary",
    "RunFunnel",
    "confound_lines",
]


#: ``FindConfig.judge`` -> the judge for sources judged by rules.
JUDGES: dict[str, RuleJudge] = {"rule": RuleJudge(), "official": RuleJudge.official()}


#: ``FindConfig.spans`` -> the answer-span extractor (``None``: the judge's spans).
SPAN_EXTRACTORS: dict[str, Any] = {
    "rules": RuleSpanExtractor(),
    "whole": WholeResponseExtractor(),
    "judge": None,
    "alias": None,
}


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
        if isinstance(d.get("sampling"), dict):
            # a field SamplingConfig gained since the file was written takes its default, as
            # SamplingConfig.from_dict reads it (``noise``: the generators it was sampled with)
            d["sampling"] = {**SamplingConfig().to_dict(), **d["sampling"]}
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
