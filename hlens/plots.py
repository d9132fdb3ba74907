"""Matplotlib figures of hlens results (Agg-safe; each function returns a ``Figure``).

- :func:`h_neurons_per_layer`: how many H-neurons each layer holds;
- :func:`roc_curves`: ROC curves of probes with the chance diagonal and the random-neuron AUROC;
- :func:`c_path`: positive neurons and held-out AUROC against the regularisation strength C;
- :func:`alpha_sweep`: behaviour rates against the H-neuron scale alpha, with controls
  (from ``hlens steer``'s ``summary.json``);
- :func:`inertia_ranks`: where the H-neurons fall among all neurons' parameter-change ranks;
- :func:`effects_heatmap`: a ``[layer, unit]`` patching / attribution map.

:func:`save` writes a figure (PNG, SVG or PDF by extension). Figures are built without pyplot
(``matplotlib.figure.Figure``), so no GUI backend is needed and nothing has to be closed; Jupyter
shows them inline as usual.

Example:
    >>> fig = h_neurons_per_layer([0, 2, 5, 1])
    >>> save(fig, "per_layer.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Shaped
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from hlens.neurons import NeuronSet

__all__ = [
    "alpha_sweep",
    "c_path",
    "effects_heatmap",
    "h_neurons_per_layer",
    "inertia_ranks",
    "roc_curves",
    "save",
]

H_COLOR = "#c53030"
CONTROL_COLOR = "0.6"

Vector = Float[Tensor, " n"] | Float[np.ndarray, " n"] | Sequence[float]


def _np(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def save(fig: Figure, path: str | Path, *, dpi: int = 130) -> Path:
    """Write ``fig`` (format from the extension), close it, return the path.

    Example:
        >>> save(h_neurons_per_layer([1, 2]), "layers.png")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _close(fig)
    return path


def _close(fig: Figure) -> None:
    """Release a figure that pyplot manages (figures made here are not: nothing to do)."""
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def _subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    """A figure outside pyplot (no GUI backend, nothing to close), with its axes."""
    figsize = kw.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def h_neurons_per_layer(
    counts: NeuronSet | Sequence[int] | Mapping[Any, int],
    *,
    d_mlp: int | None = None,
    title: str = "H-neurons per layer",
) -> Figure:
    """Bar chart of the number of H-neurons in each layer.

    Args:
        counts: a :class:`~hlens.neurons.NeuronSet`, per-layer counts (``summary.json``'s
            ``h_neurons.per_layer``), or ``{layer: count}``.
        d_mlp: neurons per layer; when given, a second axis shows the share per layer.
        title: the axes title.

    Example:
        >>> fig = h_neurons_per_layer({0: 1, 3: 4})
        >>> [int(p.get_height()) for p in fig.axes[0].patches]
        [1, 0, 0, 4]
    """
    if isinstance(counts, NeuronSet):
        d_mlp = d_mlp or counts.d_mlp
        counts = counts.layer_counts()
    if isinstance(counts, Mapping):
        n = max((int(k) for k in counts), default=-1) + 1
        arr = [0] * n
        for k, v in counts.items():
            arr[int(k)] = int(v)
        counts = arr
    counts = [int(c) for c in counts]
    fig, ax = _subplots(figsize=(max(4.0, 0.28 * len(counts) + 2), 2.8))
    ax.bar(range(len(counts)), counts, color=H_COLOR)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("H-neurons")
    ax.set_title(f"{title} (total {sum(counts)})", fontsize=10)
    if len(counts) <= 40:
        ax.set_xticks(range(len(counts)))
    if d_mlp:
        sec = ax.secondary_yaxis("right", functions=(lambda c: c / d_mlp * 1e3, lambda s: s))
        sec.set_ylabel("per mille of layer")
    fig.tight_layout()
    return fig


def _roc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr, float(roc_auc_score(y, s))


def roc_curves(
    y_true: Shaped[Tensor, " sample"] | Shaped[np.ndarray, " sample"] | Sequence[int],
    scores: Mapping[str, Vector],
    *,
    random_auroc: float | None = None,
    random_ci: Sequence[float] | None = None,
    title: str = "ROC on the test split",
) -> Figure:
    """ROC curves of one or more scorers on the same labels, with the chance diagonal.

    Args:
        y_true: labels, 1 = hallucinated.
        scores: ``{name: decision values}``; the first is drawn in the H-neuron color, the rest
            (e.g. random-neuron probes) in grey.
        random_auroc: the random-neuron baseline's AUROC (e.g. ``summary.json``'s
            ``baselines.random_neurons.auroc``), shown in the legend.
        random_ci: its interval.
        title: the axes title.

    Example:
        >>> fig = roc_curves([0, 0, 1, 1], {"H-neurons": [0.1, 0.4, 0.35, 0.8]}, random_auroc=0.55)
        >>> fig.axes[0].get_legend_handles_labels()[1][0]
        'H-neurons (AUROC 0.750)'
    """
    y = _np(y_true).astype(int)
    fig, ax = _subplots(figsize=(3.8, 3.6))
    for k, (name, s) in enumerate(scores.items()):
        fpr, tpr, a = _roc(y, _np(s))
        first = k == 0
        ax.plot(
            fpr,
            tpr,
            color=H_COLOR if first else CONTROL_COLOR,
            lw=2 if first else 1,
            label=f"{name} (AUROC {a:.3f})",
            zorder=3 if first else 2,
        )
    label = "chance"
    if random_auroc is not None and math.isfinite(random_auroc):
        label = f"chance; random neurons: AUROC {random_auroc:.3f}"
        if random_ci is not None:
            label += f" [{random_ci[0]:.3f}, {random_ci[1]:.3f}]"
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label=label)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def c_path(path: Any, *, selected_C: float | None = None, title: str = "C path") -> Figure:
    """Positive neurons and held-out AUROC (with its standard error) against C, log x axis.

    Args:
        path: a :class:`~hlens.probe.CPath` or its dict (``summary.json``'s ``c_path``).
        selected_C: the chosen C (``summary.json``'s ``probe.C``), marked by a vertical line.
        title: the axes title.

    Example:
        >>> d = {"Cs": [0.1, 1.0, 10.0], "n_positive": [1, 5, 20], "auroc": [0.7, 0.8, 0.79],
        ...      "auroc_se": [0.02, 0.02, 0.02]}
        >>> len(c_path(d, selected_C=1.0).axes)
        2
    """
    d = path.to_dict() if hasattr(path, "to_dict") else dict(path)
    Cs = _np(d["Cs"])
    fig, ax = _subplots(figsize=(4.6, 3.2))
    ax.plot(Cs, d["n_positive"], "o-", color=H_COLOR, label="positive neurons")
    ax.set_xscale("log")
    if max(d["n_positive"], default=0) > 50:
        ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("C (inverse regularisation)")
    ax.set_ylabel("positive neurons", color=H_COLOR)
    ax2 = ax.twinx()
    auc = _np(d["auroc"])
    se = _np(d.get("auroc_se", [math.nan] * len(auc)))
    ax2.fill_between(Cs, auc - se, auc + se, color="C0", alpha=0.2, lw=0)
    ax2.plot(Cs, auc, "s-", color="C0", ms=4, label="validation AUROC")
    ax2.set_ylabel("validation AUROC", color="C0")
    if selected_C is not None:
        ax.axvline(selected_C, color="0.3", ls=":", lw=1)
        ax.annotate(
            f"C={selected_C:.3g}",
            (selected_C, 0.98),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            ha="left",
            va="top",
        )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _alpha_keys(by_alpha: Mapping[str, Any]) -> list[tuple[float, str]]:
    return sorted(((float(k), k) for k in by_alpha), key=lambda x: x[0])


def alpha_sweep(summary: Mapping[str, Any], *, suites: Sequence[str] | None = None) -> Figure:
    """Rates against alpha per suite: H-neurons with their interval, random controls in grey.

    Args:
        summary: ``hlens steer``'s summary (``results[suite][set][alpha] = {rate, ci}`` and
            optionally ``slopes[suite][set] = {slope, ci}``); the set ``"h_neurons"`` is the
            H-neuron set, every other set a control.
        suites: which suites to draw (default all).

    Example:
        >>> cell = lambda r: {"rate": r, "ci": [r - 0.1, r + 0.1]}
        >>> s = {"results": {"compliance": {"h_neurons": {"0": cell(0.2), "2": cell(0.6)},
        ...                                 "random_seed0": {"0": cell(0.4), "2": cell(0.4)}}}}
        >>> len(alpha_sweep(s).axes)
        1
    """
    results = summary["results"]
    suites = list(suites or results)
    if not suites:
        raise ValueError("alpha_sweep: the summary has no suites in 'results'")
    ncol = min(4, len(suites))
    nrow = math.ceil(len(suites) / ncol)
    fig, axes = _subplots(nrow, ncol, figsize=(3.3 * ncol, 2.9 * nrow), squeeze=False)
    slopes = summary.get("slopes", {})
    for ax, suite in zip(axes.flat, suites):
        sets = results[suite]
        first_control = True
        for name, by_alpha in sets.items():
            keys = _alpha_keys(by_alpha)
            xs = [a for a, _ in keys]
            ys = [by_alpha[k]["rate"] for _, k in keys]
            if name == "h_neurons":
                cis = [by_alpha[k].get("ci") or [math.nan, math.nan] for _, k in keys]
                ax.fill_between(
                    xs, [c[0] for c in cis], [c[1] for c in cis], color=H_COLOR, alpha=0.2, lw=0
                )
                ax.plot(xs, ys, "o-", color=H_COLOR, label="H-neurons", zorder=3)
            else:
                ax.plot(
                    xs,
                    ys,
                    ".-",
                    color=CONTROL_COLOR,
                    lw=1,
                    label="random (controls)" if first_control else None,
                )
                first_control = False
        ax.axvline(1.0, color="0.8", lw=0.8, zorder=0)
        sl = slopes.get(suite, {}).get("h_neurons")
        sub = f"\nslope {sl['slope']:+.3f} [{sl['ci'][0]:+.3f}, {sl['ci'][1]:+.3f}]" if sl else ""
        ax.set_title(f"{suite}{sub}", fontsize=8)
        ax.set_xlabel("alpha (scale of the neurons)")
        stat = next(iter(next(iter(sets.values())).values())).get("statistic")
        ax.set_ylabel("perplexity" if stat == "perplexity" else "rate")
    for ax in list(axes.flat)[len(suites) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def inertia_ranks(
    ranks: Float[Tensor, " neuron"] | Float[np.ndarray, " neuron"] | Sequence[float],
    h_ranks: Float[Tensor, " h"] | Float[np.ndarray, " h"] | Sequence[float],
    *,
    bins: int = 40,
    title: str = "parameter inertia",
) -> Figure:
    """Histogram of all neurons' normalised inertia ranks, with the H-neurons marked.

    Ranks follow :func:`hlens.parameter_inertia`: 0 is the neuron whose parameters changed most
    between the base and the tuned model, 1 the one that changed least; H-neurons piling up near 1
    means their parameters are unusually inert.

    Args:
        ranks: every neuron's normalised rank in ``[0, 1]``.
        h_ranks: the H-neurons' normalised ranks.
        bins: histogram bins.
        title: the axes title.

    Example:
        >>> fig = inertia_ranks(np.linspace(0, 1, 100), [0.05, 0.1])
        >>> [float(x) for x in fig.axes[0].get_xlim()]
        [0.0, 1.0]
    """
    r, h = _np(ranks), _np(h_ranks)
    fig, ax = _subplots(figsize=(4.6, 3.0))
    ax.hist(r, bins=bins, range=(0, 1), density=True, color="0.75", label="all neurons")
    ax.set_xlim(0, 1)
    if len(h):
        top = ax.get_ylim()[1]
        ax.vlines(h, 0, top * 0.25, color=H_COLOR, lw=1, label=f"H-neurons (n={len(h)})")
        ax.axvline(
            float(np.mean(h)),
            color=H_COLOR,
            ls="--",
            lw=1.2,
            label=f"H-neuron mean {np.mean(h):.3f}",
        )
    ax.axvline(0.5, color="0.3", ls=":", lw=1, label="expected mean 0.5")
    ax.set_xlabel("normalised rank of parameter change (0 = least changed)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def effects_heatmap(
    effects: Float[Tensor, "layer unit"] | Float[np.ndarray, "layer unit"],
    *,
    layers: Sequence[int] | None = None,
    unit: str = "neuron",
    title: str | None = None,
) -> Figure:
    """A diverging ``[layer, unit]`` heatmap of patching or attribution effects.

    Example:
        >>> fig = effects_heatmap(np.random.default_rng(0).normal(size=(3, 8)), unit="head")
        >>> fig.axes[0].get_ylabel()
        'layer'
    """
    x = _np(effects)
    if x.ndim != 2:
        raise ValueError(f"effects must be [layer, unit], got shape {x.shape}")
    m = float(np.nanmax(np.abs(x))) if x.size else 1.0
    m = m if m > 0 and math.isfinite(m) else 1.0
    fig, ax = _subplots(figsize=(min(10.0, 3 + 0.05 * x.shape[1] + 0.3), 0.3 * len(x) + 1.6))
    im = ax.imshow(x, aspect="auto", cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
    layers = list(layers) if layers is not None else list(range(len(x)))
    ax.set_yticks(range(len(x)), [str(v) for v in layers])
    ax.set_ylabel("layer")
    ax.set_xlabel(unit)
    fig.colorbar(im, ax=ax, label="effect", fraction=0.04)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
