"""Confound controls: would one number about each example separate the classes as well as the probe?

A probe on CETT features can score well for reasons that have nothing to do with what the model
knows: hallucinated answers may be longer, sit later in the response, be truncated more often, or
be less confident. Each of those is one number per example, and if that number alone separates
faithful from hallucinated answers about as well as the probe, the probe's AUROC is not evidence
of hallucination neurons. This module computes those numbers and their AUROCs on the same test
split as the probe:

- ``span_tokens``: tokens in the answer span;
- ``response_tokens``: tokens in the response;
- ``truncated``: the response hit the token limit;
- ``span_start``: index of the answer's first token within the response;
- ``span_is_whole``: the answer span covers the whole response;
- ``answer_logprob``: the model's mean log-probability of the answer tokens (its confidence);
- ``answer_entropy``: entropy of the next-token distribution where the answer starts.

Each control's direction is fitted on the training split (a control that is higher for faithful
answers is flipped), then its AUROC is measured on the test split, so it competes with the probe
on equal terms. The probe's AUROC within bins of answer-span length says whether it still works
among answers of the same length. :data:`MARGIN` is the rule for the verdict: a control within
0.05 of the probe explains the probe's result as well, and :func:`confound_controls` says so. A
probe below :data:`MIN_SIGNAL` (0.6) has nothing to explain, and a control below it explains
nothing.

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = np.array([0, 1] * 50)
    >>> length = y * 3.0 + rng.normal(size=100)          # length alone explains the label
    >>> probe = y + 0.5 * rng.normal(size=100)
    >>> rep = confound_controls({"span_tokens": length}, y, slice(0, 50), slice(50, 100),
    ...                         probe[50:])
    >>> rep.flagged
    ['span_tokens']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Shaped

from hlens.examples import Example
from hlens.metrics import auroc, strata_control
from hlens.prompts import PromptFormat, tokenize_examples
from hlens.spans import WholeResponseExtractor

if TYPE_CHECKING:
    from hlens.model import Model

__all__ = [
    "CONTROLS",
    "MARGIN",
    "MIN_SIGNAL",
    "ConfoundReport",
    "ControlScore",
    "answer_confidence",
    "confound_controls",
    "control_values",
    "length_bin",
    "span_is_whole",
]

#: A one-number control whose test AUROC is within this of the probe's explains it as well.
MARGIN = 0.05

#: Below this AUROC a probe or a control carries no signal worth explaining (or explaining with).
MIN_SIGNAL = 0.6

#: name -> what it measures (in summary.json, the CLI and the report).
CONTROLS: dict[str, str] = {
    "span_tokens": "answer-span length (tokens)",
    "response_tokens": "response length (tokens)",
    "truncated": "response truncated at the token limit",
    "span_start": "position of the answer in the response (tokens)",
    "span_is_whole": "answer span is the whole response",
    "answer_logprob": "model confidence: mean log-probability of the answer tokens",
    "answer_entropy": "model confidence: next-token entropy where the answer starts",
    "question_type": "question type (training hallucination rate of its type)",
}


@dataclass(frozen=True)
class ControlScore:
    """One control's separation of the test set.

    Attributes:
        name: the control (a key of :data:`CONTROLS`).
        auroc: test AUROC with the direction fitted on the training split.
        train_auroc: training AUROC of the raw values (below 0.5: higher means faithful).
        flipped: whether the direction was flipped.
        mean_faithful: mean value over faithful test examples.
        mean_hallucinated: mean value over hallucinated test examples.
    """

    name: str
    auroc: float
    train_auroc: float
    flipped: bool
    mean_faithful: float
    mean_hallucinated: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ConfoundReport:
    """Every control beside the probe, and the verdict.

    Attributes:
        probe_auroc: the probe's test AUROC.
        controls: one :class:`ControlScore` per control.
        length_bins: the probe within answer-span-length bins (``within_strata_auroc``) and the
            bins alone (``strata_only_auroc``), as :func:`hlens.metrics.strata_control` gives.
        flagged: controls within :data:`MARGIN` of the probe.
        margin: the margin used.
    """

    probe_auroc: float
    controls: list[ControlScore]
    length_bins: dict[str, Any] | None
    flagged: list[str] = field(default_factory=list)
    margin: float = MARGIN

    @property
    def best(self) -> ControlScore | None:
        """The control with the highest test AUROC."""
        ok = [c for c in self.controls if not math.isnan(c.auroc)]
        return max(ok, key=lambda c: c.auroc) if ok else None

    def verdict(self) -> str:
        """One plain sentence for the CLI and the report."""
        strong = [c for c in self.controls if c.auroc >= MIN_SIGNAL]
        if not self.probe_auroc >= MIN_SIGNAL:
            text = (
                f"no finding: the probe does not separate the test set (AUROC "
                f"{self.probe_auroc:.3f}, below {MIN_SIGNAL}), so there is no signal for a control "
                "to explain"
            )
            if strong:
                best = max(strong, key=lambda c: c.auroc)
                text += (
                    f"; {CONTROLS.get(best.name, best.name)} alone reaches {best.auroc:.3f}, so "
                    "the model carries the information in a form this probe does not read"
                )
            return text
        if self.flagged:
            parts = ", ".join(
                f"{CONTROLS.get(c.name, c.name)} ({c.auroc:.3f})"
                for c in self.controls
                if c.name in self.flagged
            )
            return (
                f"NOT A FINDING: {parts} separates the test set within {self.margin:.2f} of the "
                f"probe's AUROC {self.probe_auroc:.3f}, so the probe's result is explained as "
                "well by that one number."
            )
        best = self.best
        if best is None:
            return "no control could be computed"
        return (
            f"the best one-number control, {CONTROLS.get(best.name, best.name)}, reaches AUROC "
            f"{best.auroc:.3f}, more than {self.margin:.2f} below the probe's "
            f"{self.probe_auroc:.3f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe_auroc": self.probe_auroc,
            "controls": {c.name: c.to_dict() for c in self.controls},
            "length_bins": self.length_bins,
            "flagged": list(self.flagged),
            "margin": self.margin,
            "verdict": self.verdict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConfoundReport:
        known = {"probe_auroc", "controls", "length_bins", "flagged", "margin", "verdict"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ConfoundReport fields {sorted(unknown)}")
        return cls(
            probe_auroc=float(d["probe_auroc"]),
            controls=[ControlScore(**c) for c in d["controls"].values()],
            length_bins=d.get("length_bins"),
            flagged=list(d.get("flagged", [])),
            margin=float(d.get("margin", MARGIN)),
        )


def length_bin(n_tokens: int) -> str:
    """The answer-span length bin of ``n_tokens`` tokens: ``1``, ``2``, ``3``, ``4-5``, ``6+``.

    Example:
        >>> [length_bin(n) for n in (1, 2, 3, 5, 9)]
        ['1', '2', '3', '4-5', '6+']
    """
    if n_tokens <= 3:
        return str(max(1, n_tokens))
    return "4-5" if n_tokens <= 5 else "6+"


def _oriented(name: str, values: np.ndarray, y: np.ndarray, train: Any, test: Any) -> ControlScore:
    v_tr, y_tr, v_te, y_te = values[train], y[train], values[test], y[test]
    finite_tr, finite_te = np.isfinite(v_tr), np.isfinite(v_te)
    ok_tr = finite_tr.all() and len(set(y_tr.tolist())) == 2
    raw = auroc(y_tr, v_tr) if ok_tr else float("nan")
    flipped = bool(raw < 0.5) if not math.isnan(raw) else False
    score = -v_te if flipped else v_te
    ok_te = finite_te.all() and len(set(y_te.tolist())) == 2
    a = auroc(y_te, score) if ok_te else float("nan")
    mf = float(v_te[y_te == 0].mean()) if (y_te == 0).any() else float("nan")
    mh = float(v_te[y_te == 1].mean()) if (y_te == 1).any() else float("nan")
    return ControlScore(name, a, raw, flipped, mf, mh)


def confound_controls(
    values: Mapping[str, Shaped[np.ndarray, " sample"]],
    y: Shaped[np.ndarray, " sample"],
    train: Any,
    test: Any,
    probe_scores: Shaped[np.ndarray, " test"],
    *,
    span_tokens: Shaped[np.ndarray, " sample"] | None = None,
    extra: Sequence[ControlScore] = (),
    margin: float = MARGIN,
) -> ConfoundReport:
    """Each control's AUROC on the test split beside the probe's, and which come within ``margin``.

    Args:
        values: control name -> one value per example (all examples, train and test).
        y: 0/1 labels (1 = hallucinated), one per example.
        train: index (slice, mask or index array) of the training examples.
        test: index of the test examples, in the order of ``probe_scores``.
        probe_scores: the probe's test scores (higher = hallucinated).
        span_tokens: answer-span lengths, for the within-length-bin AUROC (default:
            ``values["span_tokens"]`` when present).
        extra: controls scored elsewhere on the same test split (the question type, from
            :func:`hlens.metrics.strata_control`), judged by the same rule.
        margin: see :data:`MARGIN`.

    Raises:
        ValueError: when the lengths do not match.
    """
    y = np.asarray(y).astype(np.int64)
    scores = np.asarray(probe_scores, dtype=np.float64)
    if scores.shape[0] != y[test].shape[0]:
        raise ValueError(
            f"probe_scores has {scores.shape[0]} entries but the test index selects "
            f"{y[test].shape[0]} examples"
        )
    probe = auroc(y[test], scores) if len(set(y[test].tolist())) == 2 else float("nan")
    out = []
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        if v.shape != y.shape:
            raise ValueError(f"control {name!r} has {v.shape[0]} values for {y.shape[0]} examples")
        out.append(_oriented(name, v, y, train, test))
    out.extend(extra)
    lengths = span_tokens if span_tokens is not None else values.get("span_tokens")
    bins = None
    if lengths is not None:
        lengths = np.asarray(lengths)
        bins = strata_control(
            y[train],
            [length_bin(int(n)) for n in lengths[train]],
            y[test],
            scores,
            [length_bin(int(n)) for n in lengths[test]],
        )
    flagged = [
        c.name for c in out if probe >= MIN_SIGNAL and c.auroc >= max(probe - margin, MIN_SIGNAL)
    ]
    return ConfoundReport(probe, out, bins, flagged, margin)


@torch.no_grad()
def answer_confidence(
    model: Model,
    examples: Sequence[Example],
    fmt: PromptFormat | None = None,
    *,
    batch_size: int = 8,
) -> tuple[Float[np.ndarray, " batch"], Float[np.ndarray, " batch"]]:
    """The model's confidence in each example's answer.

    Returns:
        ``(mean_logprob, entropy)``: the mean log-probability of the answer tokens given what
        precedes them, and the entropy (nats) of the next-token distribution at the position that
        predicts the first answer token.
    """
    lp_out: list[float] = []
    ent_out: list[float] = []
    hf = model.hf_model
    for s in range(0, len(examples), batch_size):
        batch = tokenize_examples(
            examples[s : s + batch_size],
            model.tokenizer,
            fmt,
            padding_side="right",
            max_length=model.n_ctx,
            require_answer=True,
        )
        ans = batch.regions["answer"]
        # position p predicts token p + 1: keep the logits before each answer token
        pred = torch.zeros_like(ans)
        pred[:, :-1] = ans[:, 1:]
        keep = pred.any(0).nonzero()[:, 0]
        tokens = batch.tokens.to(model.device)
        out = hf(
            input_ids=tokens,
            attention_mask=batch.attention_mask.to(model.device),
            logits_to_keep=keep.to(model.device),
        )
        logp = torch.log_softmax(out.logits.double(), -1).cpu()  # [batch, len(keep), vocab]
        nxt = batch.tokens[:, keep + 1]
        tok_lp = logp.gather(-1, nxt[..., None])[..., 0]
        for b in range(len(batch)):
            rows = pred[b, keep]
            lp_out.append(float(tok_lp[b, rows].mean()))
            first = int(rows.nonzero()[0, 0])
            p = logp[b, first].exp()
            ent_out.append(float(-(p * logp[b, first]).nan_to_num().sum()))
    return np.array(lp_out), np.array(ent_out)


def span_is_whole(example: Example) -> bool:
    """Whether the example's answer span is its whole response (less quotes and punctuation).

    Example:
        >>> span_is_whole(Example("Q?", "Paris.").with_answer("Paris"))
        True
    """
    whole = WholeResponseExtractor()(example.question, example.response).span
    return (
        whole is not None
        and example.answer_span is not None
        and (tuple(example.answer_span) == whole)
    )


def control_values(
    model: Model,
    examples: Sequence[Example],
    fmt: PromptFormat | None = None,
    *,
    truncated: Sequence[bool] | None = None,
    confidence: bool = True,
    batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """Every control of :data:`CONTROLS` (but the question type) for each example.

    Args:
        model: the model (token counts use its tokenizer; confidence runs it).
        examples: examples with responses and answer spans.
        fmt: how they were rendered.
        truncated: whether each response was truncated (omitted when ``None``).
        confidence: also compute ``answer_logprob`` and ``answer_entropy`` (a forward pass).
        batch_size: examples per forward pass.
    """
    span, resp, start = [], [], []
    for s in range(0, len(examples), 64):
        batch = tokenize_examples(
            examples[s : s + 64], model.tokenizer, fmt, max_length=model.n_ctx
        )
        a, r = batch.regions["answer"], batch.regions["response"]
        for b in range(len(batch)):
            r_idx = r[b].nonzero()[:, 0]
            a_idx = a[b].nonzero()[:, 0]
            span.append(len(a_idx))
            resp.append(len(r_idx))
            first = int(a_idx[0]) if len(a_idx) else 0
            start.append(int((r_idx < first).sum()))
    out = {
        "span_tokens": np.array(span, dtype=np.float64),
        "response_tokens": np.array(resp, dtype=np.float64),
        "span_start": np.array(start, dtype=np.float64),
        "span_is_whole": np.array([float(span_is_whole(ex)) for ex in examples]),
    }
    if truncated is not None:
        out["truncated"] = np.array([float(t) for t in truncated], dtype=np.float64)
    if confidence:
        lp, ent = answer_confidence(model, examples, fmt, batch_size=batch_size)
        out["answer_logprob"], out["answer_entropy"] = lp, ent
    return out
