"""Classification metrics with percentile-bootstrap confidence intervals.

:func:`compute_metrics` returns a :class:`ProbeMetrics`: accuracy, precision, recall, F1 and AUROC
of a binary classifier (label 1 = hallucinated), each with a seeded percentile-bootstrap interval.
The bootstrap resamples the evaluation samples with replacement ``n_boot`` times; the interval is
the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the resampled values.

Conventions: precision (and F1) is 0 when nothing is predicted positive, recall is 0 when there
are no positives (scikit-learn's ``zero_division=0``). AUROC is ``nan`` when only one class is
present; resamples with only one class are left out of the AUROC interval. Ties in the scores
count one half (the Mann-Whitney statistic, equal to scikit-learn's ``roc_auc_score``).

Example:
    >>> y = np.array([0, 0, 1, 1]); score = np.array([0.1, 0.6, 0.4, 0.9])
    >>> m = compute_metrics(y, score, score > 0.5, n_boot=200, seed=0)
    >>> m.accuracy, m.auroc
    (0.5, 0.75)
    >>> ProbeMetrics.from_dict(m.to_dict()) == m
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from jaxtyping import Shaped

__all__ = ["METRIC_NAMES", "ProbeMetrics", "auroc", "compute_metrics", "strata_control"]

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "auroc")


@dataclass(frozen=True)
class ProbeMetrics:
    """Point estimates and bootstrap intervals of a binary classifier's metrics.

    Attributes:
        accuracy: share of correct predictions.
        precision: TP / (TP + FP); 0 when nothing is predicted positive.
        recall: TP / (TP + FN); 0 when there are no positives.
        f1: harmonic mean of precision and recall; 0 when both are 0.
        auroc: area under the ROC curve of the scores; ``nan`` with a single class.
        ci: ``{metric: (low, high)}``, percentile-bootstrap intervals for the metrics above.
        n_samples: number of evaluation samples.
        n_positive: how many of them have label 1 (hallucinated).
        n_boot: bootstrap resamples (0: no intervals; ``ci`` holds ``(nan, nan)``).
        confidence: interval level, e.g. 0.95.
        seed: bootstrap seed.
    """

    accuracy: float
    precision: float
    recall: float
    f1: float
    auroc: float
    ci: dict[str, tuple[float, float]]
    n_samples: int
    n_positive: int
    n_boot: int
    confidence: float
    seed: int

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if set(self.ci) != set(METRIC_NAMES):
            raise ValueError(f"ci must have keys {list(METRIC_NAMES)}, got {sorted(self.ci)}")

    def __eq__(self, other: object) -> bool:  # nan-aware, so a round trip compares equal
        if not isinstance(other, ProbeMetrics):
            return NotImplemented
        a, b = self.to_dict(), other.to_dict()
        return json_equal(a, b)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (intervals as ``[low, high]`` lists)."""
        d = asdict(self)
        d["ci"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeMetrics:
        """Inverse of :meth:`to_dict`."""
        try:
            kw = {k: d[k] for k in (*METRIC_NAMES, "n_samples", "n_positive", "n_boot")}
            ci = {k: (float(v[0]), float(v[1])) for k, v in d["ci"].items()}
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"not a ProbeMetrics dict: got keys {sorted(d)}") from e
        return cls(
            **{k: float(kw[k]) for k in METRIC_NAMES},
            ci=ci,
            n_samples=int(kw["n_samples"]),
            n_positive=int(kw["n_positive"]),
            n_boot=int(kw["n_boot"]),
            confidence=float(d.get("confidence", 0.95)),
            seed=int(d.get("seed", 0)),
        )


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON-like values where ``nan == nan``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return a == b


def _labels(y: Any, what: str) -> np.ndarray:
    arr = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{what} must hold 0/1 labels (1 = hallucinated), got values {bad}")
    return arr.astype(bool)


def _counts_metrics(counts: np.ndarray, yt: np.ndarray, yp: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion-matrix metrics for each row of sample multiplicities ``counts`` (B x n)."""
    tp = counts @ (yt & yp)
    fp = counts @ (~yt & yp)
    fn = counts @ (yt & ~yp)
    total = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = (total - fp - fn) / total
        prec = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        rec = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0)
    return {"accuracy": acc, "precision": prec, "recall": rec, "f1": f1}


def _counts_auroc(counts: np.ndarray, yt: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC for each row of sample multiplicities ``counts`` (B x n)."""
    order = np.argsort(score, kind="stable")
    s, pos = score[order], yt[order]
    c = counts[:, order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups
    g_pos = np.add.reduceat(c * pos, starts, axis=1)
    g_neg = np.add.reduceat(c * ~pos, starts, axis=1)
    below = np.cumsum(g_neg, axis=1) - g_neg
    num = (g_pos * (below + 0.5 * g_neg)).sum(axis=1)
    den = g_pos.sum(axis=1) * g_neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auroc(y_true: Shaped[np.ndarray, " sample"], y_score: Shaped[np.ndarray, " sample"]) -> float:
    """Area under the ROC curve (ties count one half); ``nan`` with a single class.

    Example:
        >>> auroc(np.array([0, 1, 1]), np.array([0.2, 0.3, 0.1]))
        0.5
    """
    yt = _labels(y_true, "y_true")
    score = np.asarray(y_score, dtype=np.float64)
    return float(_counts_auroc(np.ones((1, yt.size)), yt, score)[0])


def compute_metrics(
    y_true: Shaped[np.ndarray, " sample"],
    y_score: Shaped[np.ndarray, " sample"],
    y_pred: Shaped[np.ndarray, " sample"],
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ProbeMetrics:
    """Accuracy, precision, recall, F1 and AUROC with percentile-bootstrap intervals.

    Args:
        y_true: 0/1 labels (1 = hallucinated).
        y_score: scores for AUROC (probabilities or decision values; higher = more likely 1).
        y_pred: 0/1 (or boolean) predictions for the thresholded metrics.
        n_boot: bootstrap resamples; 0 skips the intervals.
        confidence: interval level.
        seed: seed of the resampling.

    Returns:
        A :class:`ProbeMetrics`.
    """
    yt, yp = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    score = np.asarray(y_score, dtype=np.float64)
    if not yt.shape == yp.shape == score.shape:
        raise ValueError(
            f"y_true, y_score and y_pred must have one entry per sample, got shapes "
            f"{yt.shape}, {score.shape}, {yp.shape}"
        )
    if yt.size == 0:
        raise ValueError("compute_metrics needs at least one sample, got 0")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    n = yt.size
    ones = np.ones((1, n))
    point = {k: float(v[0]) for k, v in _counts_metrics(ones, yt, yp).items()}
    point["auroc"] = float(_counts_auroc(ones, yt, score)[0])

    ci: dict[str, tuple[float, float]] = {k: (np.nan, np.nan) for k in METRIC_NAMES}
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boot: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_NAMES}
        block = max(1, min(n_boot, (1 << 22) // n))
        for start in range(0, n_boot, block):
            b = min(block, n_boot - start)
            idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
            counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
            for k, v in _counts_metrics(counts, yt, yp).items():
                boot[k].append(v)
            boot["auroc"].append(_counts_auroc(counts, yt, score))
        lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
        for k, parts in boot.items():
            vals = np.concatenate(parts)
            vals = vals[~np.isnan(vals)]
            if vals.size:
                ci[k] = (float(np.percentile(vals, lo_q)), float(np.percentile(vals, hi_q)))
    return ProbeMetrics(
        **point,
        ci=ci,
        n_samples=int(n),
        n_positive=int(yt.sum()),
        n_boot=int(n_boot),
        confidence=float(confidence),
        seed=int(seed),
    )


def strata_control(
    y_train: Shaped[np.ndarray, " train"],
    strata_train: Sequence[str],
    y_test: Shaped[np.ndarray, " test"],
    y_score: Shaped[np.ndarray, " test"],
    strata_test: Sequence[str],
) -> dict[str, Any]:
    """How much of a probe's test AUROC the question type (the stratum) alone explains.

    When one kind of question (say, birth years) is hallucinated more often than another, a probe
    can score well by recognising the kind of question instead of the model's knowledge. Two
    numbers expose that:

    * ``strata_only_auroc``: the AUROC of scoring each test example by the hallucination rate of
      its stratum among the training examples (a stratum absent from training gets the overall
      rate). This is what a predictor that sees only the stratum achieves.
    * ``within_strata_auroc``: the probe's AUROC computed inside each stratum, averaged with
      weights equal to the number of (hallucinated, faithful) pairs the stratum contributes;
      ``nan`` when no stratum holds both classes. A probe that only recognises the stratum
      scores 0.5 here.

    Args:
        y_train: 0/1 training labels (1 = hallucinated).
        strata_train: the stratum of each training example.
        y_test: 0/1 test labels.
        y_score: the probe's test scores (higher = more likely hallucinated).
        strata_test: the stratum of each test example.

    Returns:
        ``{"strata_only_auroc", "within_strata_auroc", "n_strata", "per_stratum"}``;
        ``per_stratum`` maps each test stratum to ``{"n", "n_positive", "train_rate", "auroc"}``.

    Example:
        >>> y_tr = np.array([1, 1, 0, 0]); s_tr = ["year", "year", "city", "city"]
        >>> y_te = np.array([1, 0, 1, 0]); s_te = ["year", "year", "city", "city"]
        >>> c = strata_control(y_tr, s_tr, y_te, np.array([0.9, 0.8, 0.2, 0.1]), s_te)
        >>> c["strata_only_auroc"], c["within_strata_auroc"]
        (0.5, 1.0)
    """
    yt_train, yt = _labels(y_train, "y_train"), _labels(y_test, "y_test")
    score = np.asarray(y_score, dtype=np.float64)
    strata_train, strata_test = [str(s) for s in strata_train], [str(s) for s in strata_test]
    if len(strata_train) != yt_train.size:
        raise ValueError(
            f"strata_train needs one stratum per training label: got {len(strata_train)} strata "
            f"for {yt_train.size} labels"
        )
    if not len(strata_test) == yt.size == score.size:
        raise ValueError(
            f"y_test, y_score and strata_test need one entry per test example, got "
            f"{yt.size}, {score.size} and {len(strata_test)}"
        )
    if yt_train.size == 0 or yt.size == 0:
        raise ValueError("strata_control needs at least one training and one test example")
    overall = float(yt_train.mean())
    rate = {s: float(yt_train[[t == s for t in strata_train]].mean()) for s in set(strata_train)}
    base = np.array([rate.get(s, overall) for s in strata_test])
    per: dict[str, dict[str, Any]] = {}
    num = den = 0.0
    for s in sorted(set(strata_test)):
        m = np.array([t == s for t in strata_test])
        n_pos, n_neg = int(yt[m].sum()), int((~yt[m]).sum())
        a = auroc(yt[m], score[m]) if n_pos and n_neg else float("nan")
        per[s] = {"n": int(m.sum()), "n_positive": n_pos, "train_rate": rate.get(s), "auroc": a}
        if n_pos and n_neg:
            num += a * n_pos * n_neg
            den += n_pos * n_neg
    return {
        "strata_only_auroc": auroc(yt, base),
        "within_strata_auroc": num / den if den else float("nan"),
        "n_strata": len(per),
        "per_stratum": per,
    }
