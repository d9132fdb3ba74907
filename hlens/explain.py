"""Neuron report cards, and the ``hlens explain`` subcommand.

A :class:`NeuronCard` gathers the evidence about one neuron, each part optional:

- *vocabulary*: its output direction (``W_out`` row through the norm weights onto ``W_U``), the
  top tokens it promotes and suppresses;
- *top examples*: the dataset examples where it fires most, with the position and token context;
- *faithful vs hallucinated*: its mean activation over answer tokens in each group, with Cohen's
  d and a bootstrap confidence interval;
- *ablation*: a user ``evaluate(model) -> {metric: value}`` run with the neuron zero-ablated,
  against the unablated baseline;
- *drivers*: the upstream neurons and heads that drive it (gradient x activation with its own
  activation as the metric, i.e. AtP against a zero baseline; or AtP against corrupted prompts).

Cards are data (``to_dict``, ``records()`` rows for a DataFrame, a plain-text ``summary()``);
rendering them is left to the views.

Example:
    >>> from hlens.explain import report_cards
    >>> cards = report_cards(model, h_neurons, dataset=prompts)  # doctest: +SKIP
    >>> print(cards[0].summary())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hlens.attribution import _capture_metric, _ranks, attribution_patching, neuron_vocab_logits
from hlens.contribution import aggregate_region
from hlens.interventions import ablate_neurons
from hlens.model import Model
from hlens.neurons import NeuronId, NeuronSet
from hlens.patching import _right_aligned, hook_name, neuron_activation, reduce_units
from hlens.prompts import PromptFormat
from hlens.records import atomic_write_text, read_json, reject_unknown

__all__ = [
    "ActivationStats",
    "Driver",
    "NeuronCard",
    "TokenScore",
    "TopExample",
    "ablation_effects",
    "activation_stats",
    "neuron_activations",
    "read_cards",
    "region_means",
    "report_cards",
    "save_cards",
    "top_activating",
    "upstream_drivers",
    "vocab_projection",
    "zero_ablation",
]

Evaluate = Callable[[Any], dict[str, float]]


@dataclass
class TokenScore:
    """A vocabulary token and the logit a neuron's output direction gives it."""

    token: str
    token_id: int
    logit: float


@dataclass
class TopExample:
    """Where a neuron fires most in one example.

    Attributes:
        example: index in the dataset; ``example_id`` its id.
        position: token position (in the example's own tokens, from its first token).
        activation: the activation there.
        token: that token's text; ``context`` the tokens around it, ``focus`` its index there.
        label: the example's label (``faithful`` / ``hallucinated``), if it has one.
    """

    example: int
    example_id: str | None
    position: int
    activation: float
    token: str
    context: list[str]
    focus: int
    label: str | None = None

    @property
    def text(self) -> str:
        """The context with the token marked ``[[like this]]``."""
        parts = list(self.context)
        parts[self.focus] = f"[[{parts[self.focus]}]]"
        return "".join(parts)


@dataclass
class ActivationStats:
    """A neuron's mean activation over a region, faithful vs hallucinated answers.

    ``effect_size`` is Cohen's d of hallucinated minus faithful (pooled std); ``ci`` its bootstrap
    95% interval (``n_boot`` resamples of each group).
    """

    region: str
    n_faithful: int
    n_hallucinated: int
    mean_faithful: float
    std_faithful: float
    mean_hallucinated: float
    std_hallucinated: float
    effect_size: float
    ci_low: float
    ci_high: float
    n_boot: int


@dataclass
class Driver:
    """An upstream unit's attribution to a neuron: ``kind`` is ``"neuron"`` or ``"head"``."""

    kind: str
    layer: int
    index: int
    score: float


@dataclass
class NeuronCard:
    """Everything known about one neuron (parts that were not computed are empty or None)."""

    neuron: NeuronId
    weight: float | None = None
    w_out_norm: float | None = None
    promoted: list[TokenScore] = field(default_factory=list)
    suppressed: list[TokenScore] = field(default_factory=list)
    top_examples: list[TopExample] = field(default_factory=list)
    stats: ActivationStats | None = None
    ablation: dict[str, dict[str, float]] | None = None
    drivers: list[Driver] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    correlations: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["neuron"] = {"layer": self.neuron.layer, "index": self.neuron.index}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeuronCard:
        """The card of a :meth:`to_dict` dict; unknown fields raise ``ValueError``."""
        reject_unknown("NeuronCard", d, [f.name for f in fields(cls)])
        return cls(
            NeuronId(int(d["neuron"]["layer"]), int(d["neuron"]["index"])),
            d.get("weight"),
            d.get("w_out_norm"),
            [TokenScore(**x) for x in d.get("promoted", [])],
            [TokenScore(**x) for x in d.get("suppressed", [])],
            [TopExample(**x) for x in d.get("top_examples", [])],
            ActivationStats(**d["stats"]) if d.get("stats") else None,
            d.get("ablation"),
            [Driver(**x) for x in d.get("drivers", [])],
            dict(d.get("meta", {})),
            dict(d.get("correlations", {})),
        )

    def records(self) -> dict[str, Any]:
        """One flat row (DataFrame-ready) with the headline numbers."""
        row: dict[str, Any] = {
            "layer": self.neuron.layer,
            "index": self.neuron.index,
            "weight": self.weight,
            "w_out_norm": self.w_out_norm,
            "promoted": " ".join(t.token for t in self.promoted[:5]),
            "suppressed": " ".join(t.token for t in self.suppressed[:5]),
        }
        if self.stats is not None:
            row |= {f"stats_{k}": v for k, v in asdict(self.stats).items()}
        for metric, delta in ((self.ablation or {}).get("delta") or {}).items():
            row[f"ablation_delta_{metric}"] = delta
        if self.drivers:
            d = self.drivers[0]
            row["top_driver"] = f"{d.kind} L{d.layer}.{d.index} ({d.score:+.3g})"
        row |= {f"corr_{k}": v for k, v in self.correlations.items()}
        return row

    def summary(self) -> str:
        """A few plain-text lines."""
        n = self.neuron
        lines = [
            f"neuron L{n.layer}.{n.index}" + (f" weight={self.weight:.4g}" if self.weight else "")
        ]
        if self.promoted:
            lines.append("  promotes:   " + ", ".join(repr(t.token) for t in self.promoted[:8]))
            lines.append("  suppresses: " + ", ".join(repr(t.token) for t in self.suppressed[:8]))
        for ex in self.top_examples[:3]:
            tag = f" ({ex.label})" if ex.label else ""
            lines.append(f"  fires {ex.activation:+.3g}{tag} on {ex.text!r}")
        if self.correlations:
            lines.append(
                "  correlation with: "
                + ", ".join(f"{k} {v:+.2f}" for k, v in self.correlations.items())
            )
        if self.stats is not None:
            s = self.stats
            lines.append(
                f"  {s.region}: hallucinated {s.mean_hallucinated:.3g} vs faithful "
                f"{s.mean_faithful:.3g}, d={s.effect_size:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"
            )
        if self.ablation:
            delta = ", ".join(f"{k} {v:+.3g}" for k, v in self.ablation["delta"].items())
            lines.append(f"  zero-ablated: {delta}")
        if self.drivers:
            lines.append(
                "  driven by: "
                + ", ".join(
                    f"{d.kind} L{d.layer}.{d.index} {d.score:+.3g}" for d in self.drivers[:5]
                )
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ vocabulary
def vocab_projection(
    model: Model, neurons: NeuronSet, k: int = 10
) -> list[tuple[list[TokenScore], list[TokenScore]]]:
    """``(promoted, suppressed)`` top-``k`` tokens of each neuron's output direction.

    Example:
        >>> promoted, suppressed = vocab_projection(model, h_neurons)[0]  # doctest: +SKIP
    """
    logits = neuron_vocab_logits(model, neurons)
    out = []
    for row in logits:
        kk = min(k, row.numel())
        up, down = row.topk(kk), (-row).topk(kk)
        out.append(
            (
                [_tok(model, i, v) for v, i in zip(up.values.tolist(), up.indices.tolist())],
                [_tok(model, i, -v) for v, i in zip(down.values.tolist(), down.indices.tolist())],
            )
        )
    return out


def _tok(model: Model, i: int, v: float) -> TokenScore:
    return TokenScore(model.tokenizer.decode([i]), int(i), float(v))


# ---------------------------------------------------------------------------------- activations
def _layer_acts(
    model: Model, neurons: NeuronSet, data: Any, batch_size: int, fmt: PromptFormat | None
):
    """Yield ``(rows, batch, acts [b, pos, n_neurons])`` over ``data`` in chunks."""
    layers = sorted(neurons.by_layer())
    slot = {la: i for i, la in enumerate(layers)}
    li = torch.tensor([slot[n.layer] for n in neurons])
    ni = torch.tensor([n.index for n in neurons])
    data = list(data)
    for start in range(0, len(data), batch_size):
        chunk = data[start : start + batch_size]
        batch = model.as_batch(chunk, fmt=fmt) if fmt is not None else model.as_batch(chunk)
        cache = model.neuron_cache(batch, layers=layers)
        yield start, batch, cache.activations[:, :, li, ni]


def top_activating(
    model: Model,
    neurons: NeuronSet,
    dataset: Sequence[Any],
    *,
    k: int = 10,
    window: int = 8,
    batch_size: int = 32,
    fmt: PromptFormat | None = None,
    region: str | None = None,
    chunks: Sequence[tuple[int, Any, Tensor]] | None = None,
) -> list[list[TopExample]]:
    """The ``k`` examples where each neuron fires most (one position per example: its maximum).

    Args:
        dataset: texts or :class:`~hlens.Example` objects.
        window: tokens of context on each side.
        region: look only inside this region (e.g. ``"answer"``: the answer tokens); examples
            with an empty region are skipped. ``None``: every real token.
        chunks: the activations of ``dataset`` already computed by :func:`neuron_activations`.

    Example:
        >>> tops = top_activating(model, h_neurons, prompts, k=5)  # doctest: +SKIP
        >>> tops[0][0].text  # doctest: +SKIP
    """
    best: list[list[tuple[float, int, int]]] = [[] for _ in neurons]
    tokens: dict[int, list[int]] = {}
    if chunks is None:
        chunks = list(_layer_acts(model, neurons, dataset, batch_size, fmt))
    for start, batch, acts in chunks:
        mask = batch.attention_mask.bool()
        where = mask & batch.region(region) if region is not None else mask
        acts = acts.masked_fill(~where[:, :, None], -torch.inf)
        vals, pos = acts.max(1)  # [b, n]
        for b in range(acts.shape[0]):
            if not bool(where[b].any()):
                continue
            real = batch.tokens[b][mask[b]].tolist()
            offset = int(mask[b].long().argmax())  # first real token (left padding)
            tokens[start + b] = real
            for j in range(len(neurons)):
                best[j].append((float(vals[b, j]), start + b, int(pos[b, j]) - offset))
        for j in range(len(neurons)):
            best[j] = sorted(best[j], reverse=True)[:k]
    out = []
    for rows in best:
        cards = []
        for v, ex, p in rows:
            toks = tokens[ex]
            lo, hi = max(0, p - window), min(len(toks), p + window + 1)
            ctx = [model.tokenizer.decode([t]) for t in toks[lo:hi]]
            item = dataset[ex]
            ex_id, label = getattr(item, "id", None), getattr(item, "label", None)
            cards.append(TopExample(ex, ex_id, p, v, ctx[p - lo], ctx, p - lo, label))
        out.append(cards)
    return out


def neuron_activations(
    model: Model,
    neurons: NeuronSet,
    data: Sequence[Any],
    *,
    batch_size: int = 32,
    fmt: PromptFormat | None = None,
) -> list[tuple[int, Any, Tensor]]:
    """The neurons' activations over ``data`` in one pass, as ``(start, batch, acts)`` chunks
    (``acts`` is ``[batch, pos, neuron]``), for :func:`top_activating` and :func:`region_means`.
    """
    return list(_layer_acts(model, neurons, data, batch_size, fmt))


def region_means(
    chunks: Sequence[tuple[int, Any, Tensor]], region: str = "answer"
) -> Float[Tensor, "example neuron"]:
    """Each example's mean activation over ``region`` (NaN where the region is empty)."""
    return torch.cat([aggregate_region(a, b.region(region), "mean") for _, b, a in chunks]).double()


def _region_means(model, neurons, examples, region, batch_size, fmt) -> Tensor:
    return region_means(list(_layer_acts(model, neurons, examples, batch_size, fmt)), region)


def activation_stats(
    model: Model,
    neurons: NeuronSet,
    faithful: Sequence[Any],
    hallucinated: Sequence[Any],
    *,
    region: str = "answer",
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    fmt: PromptFormat | None = None,
) -> list[ActivationStats]:
    """Each neuron's mean activation over ``region`` in faithful vs hallucinated examples.

    Examples whose region is empty (no answer span) are dropped.

    Example:
        >>> s = activation_stats(model, h_neurons, right, wrong)[0]  # doctest: +SKIP
        >>> s.effect_size, (s.ci_low, s.ci_high)  # doctest: +SKIP
    """
    f = _region_means(model, neurons, faithful, region, batch_size, fmt)
    h = _region_means(model, neurons, hallucinated, region, batch_size, fmt)
    return _stats(f, h, region, n_boot, seed)


def _stats(f: Tensor, h: Tensor, region: str, n_boot: int, seed: int) -> list[ActivationStats]:
    f, h = f[~f.isnan().any(1)], h[~h.isnan().any(1)]
    if len(f) < 2 or len(h) < 2:
        raise ValueError(
            f"activation_stats needs at least 2 examples with a non-empty {region!r} region in "
            f"each group; got {len(f)} faithful and {len(h)} hallucinated"
        )
    gen = torch.Generator().manual_seed(seed)
    bf = f[torch.randint(len(f), (n_boot, len(f)), generator=gen)]
    bh = h[torch.randint(len(h), (n_boot, len(h)), generator=gen)]
    d, boot = _cohen(f, h), _cohen(bf, bh, dim=1)
    lo, hi = boot.nanquantile(0.025, dim=0), boot.nanquantile(0.975, dim=0)
    return [
        ActivationStats(
            region,
            len(f),
            len(h),
            float(f[:, j].mean()),
            float(f[:, j].std()),
            float(h[:, j].mean()),
            float(h[:, j].std()),
            float(d[j]),
            float(lo[j]),
            float(hi[j]),
            n_boot,
        )
        for j in range(f.shape[1])
    ]


def _spearman(x: Tensor, y: Tensor) -> float:
    ok = ~(x.isnan() | y.isnan())
    if int(ok.sum()) < 3:
        return float("nan")
    rx, ry = _ranks(x[ok]), _ranks(y[ok])
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def _correlations(
    means: Tensor, data: Sequence[Any], controls: Mapping[str, Sequence[float]]
) -> list[dict[str, float]]:
    """Per neuron, Spearman's rho of its region mean with each control (and the label)."""
    for k, v in controls.items():
        if len(v) != len(data):
            raise ValueError(f"control {k!r} has {len(v)} values for {len(data)} examples")
    cols: dict[str, Tensor] = {}
    labels = [getattr(x, "label", None) for x in data]
    if all(lab in ("faithful", "hallucinated") for lab in labels):
        cols["hallucinated"] = torch.tensor([lab == "hallucinated" for lab in labels]).double()
    cols |= {k: torch.as_tensor(list(v), dtype=torch.double) for k, v in controls.items()}
    return [{k: _spearman(means[:, j], v) for k, v in cols.items()} for j in range(means.shape[1])]


def _cohen(f: Tensor, h: Tensor, dim: int = 0) -> Tensor:
    nf, nh = f.shape[dim], h.shape[dim]
    pooled = ((nf - 1) * f.var(dim) + (nh - 1) * h.var(dim)) / (nf + nh - 2)
    return (h.mean(dim) - f.mean(dim)) / pooled.sqrt().clamp_min(1e-12)


# ------------------------------------------------------------------------------------- ablation
@contextmanager
def zero_ablation(model: Model, neurons: NeuronSet) -> Iterator[None]:
    """Deprecated: use :func:`hlens.interventions.ablate_neurons` (``mode="zero"``), the one
    zero ablation in hlens."""
    warnings.warn(
        "hlens.explain.zero_ablation is deprecated; use hlens.ablate_neurons(model, neurons)",
        DeprecationWarning,
        stacklevel=3,
    )
    with ablate_neurons(model, neurons):
        yield


def ablation_effects(
    model: Model,
    neurons: NeuronSet,
    evaluate: Evaluate,
    *,
    baseline: dict[str, float] | None = None,
) -> list[dict[str, dict[str, float]]]:
    """``evaluate(model)`` with each neuron zero-ablated: ``{baseline, ablated, delta}`` each.

    Example:
        >>> ev = lambda m: {"acc": accuracy(m)}  # doctest: +SKIP
        >>> effects = ablation_effects(model, h_neurons, ev)  # doctest: +SKIP
    """
    base = dict(baseline) if baseline is not None else dict(evaluate(model))
    out = []
    for n in neurons:
        with ablate_neurons(model, NeuronSet((n,), neurons.n_layers, neurons.d_mlp)):
            abl = dict(evaluate(model))
        out.append(
            {
                "baseline": base,
                "ablated": abl,
                "delta": {k: abl[k] - base[k] for k in base if k in abl},
            }
        )
    return out


# -------------------------------------------------------------------------------------- drivers
def upstream_drivers(
    model: Model,
    neuron: NeuronId,
    inputs: Any,
    *,
    corrupt: Any = None,
    k: int = 10,
    position: Literal["last", "mean"] = "last",
) -> list[Driver]:
    """The upstream neurons and heads that drive ``neuron``'s activation, by attribution.

    With ``corrupt=None`` a unit's score is ``activation x d(neuron)/d(activation)`` summed over
    positions and averaged over ``inputs``: AtP against a zero baseline (minus the first-order
    effect of zero-ablating the unit). With corrupted prompts it is AtP of patching the corrupted
    activation into the clean run (``direction="corrupt_to_clean"``).

    Example:
        >>> upstream_drivers(model, NeuronId(3, 17), prompts, k=5)  # doctest: +SKIP
    """
    metric = neuron_activation(model, neuron, position)
    rows: list[tuple[str, int, Tensor]] = []
    if corrupt is not None:
        for kind, target, layers in (
            ("neuron", "neurons", range(neuron.layer)),
            ("head", "heads", range(neuron.layer + 1)),
        ):
            if not layers:
                continue
            res = attribution_patching(
                model, inputs, corrupt, metric, target=target, layers=list(layers),
                direction="corrupt_to_clean",
            )  # fmt: skip
            rows += [(kind, la, res.scores[i]) for i, la in enumerate(layers)]
    else:
        batch = _right_aligned(model.as_batch(inputs))
        names = {("neuron", la): hook_name(model, "neurons", la) for la in range(neuron.layer)}
        names |= {("head", la): hook_name(model, "heads", la) for la in range(neuron.layer + 1)}
        m, acts = _capture_metric(model, batch, metric, list(names.values()), grad=True)
        live = [n for n in names.values() if n in acts]
        grads = dict(zip(live, torch.autograd.grad(m.sum(), [acts[n] for n in live])))
        for (kind, la), nm in names.items():
            prod = (acts[nm].detach() * grads[nm]).to(model.score_dtype)
            score = reduce_units("neurons" if kind == "neuron" else "heads", prod).mean(0)
            rows.append((kind, la, score.cpu()))
    drivers = [
        Driver(kind, la, j, float(s))
        for kind, la, scores in rows
        for j, s in enumerate(scores.tolist())
    ]
    return sorted(drivers, key=lambda d: -abs(d.score))[:k]


# ---------------------------------------------------------------------------------------- cards
def report_cards(
    model: Model,
    neurons: NeuronSet,
    *,
    dataset: Sequence[Any] | None = None,
    faithful: Sequence[Any] | None = None,
    hallucinated: Sequence[Any] | None = None,
    evaluate: Evaluate | None = None,
    driver_inputs: Any = None,
    driver_corrupt: Any = None,
    k: int = 10,
    region: str = "answer",
    n_boot: int = 1000,
    fmt: PromptFormat | None = None,
    top_region: str | None = None,
    controls: Mapping[str, Sequence[float]] | None = None,
    timings: dict[str, float] | None = None,
) -> list[NeuronCard]:
    """A :class:`NeuronCard` per neuron; each part is computed when its inputs are given.

    Args:
        model: an :class:`hlens.Model`.
        neurons: the neurons (weights, if any, go on the cards).
        dataset: texts or examples to find top-activating examples in.
        faithful: examples with faithful answers (answer spans marked).
        hallucinated: examples with hallucinated answers.
        evaluate: ``evaluate(model) -> {metric: value}`` run with each neuron zero-ablated.
        driver_inputs: prompts for :func:`upstream_drivers`; ``driver_corrupt`` their pairs.
        k: tokens, examples and drivers per card.
        region: region for the faithful/hallucinated statistics.
        n_boot: bootstrap resamples.
        fmt: prompt format for examples.
        top_region: restrict top examples to this region (``"answer"``: answer tokens only).
        controls: one-number controls per ``dataset`` example (``name -> values``, e.g.
            :func:`hlens.controls.control_values`); each card gets the Spearman correlation of
            its mean ``region`` activation with each, and with the label (hallucinated = 1)
            where examples have one.
        timings: if given, filled with the seconds each part took.

    Example:
        >>> cards = report_cards(model, h_neurons, dataset=prompts, evaluate=ev)  # doctest: +SKIP
    """
    neurons.check_model(model.n_layers, model.d_mlp, what="model")
    clock = _Clock(timings)
    norms = model.W_out_norms()
    cards = [
        NeuronCard(
            n,
            weight=neurons.weights[i] if neurons.weights is not None else None,
            w_out_norm=float(norms[n.layer, n.index]),
        )
        for i, n in enumerate(neurons)
    ]
    for card, (up, down) in zip(cards, vocab_projection(model, neurons, k)):
        card.promoted, card.suppressed = up, down
    clock("vocabulary")
    data = list(dataset or [])
    chunks = neuron_activations(model, neurons, data, fmt=fmt) if data else None
    if chunks is not None:
        tops = top_activating(model, neurons, data, k=k, fmt=fmt, region=top_region, chunks=chunks)
        for card, t in zip(cards, tops):
            card.top_examples = t
    pos = {id(x): i for i, x in enumerate(data)}
    inside = bool(faithful) and all(id(x) in pos for x in [*faithful, *(hallucinated or [])])
    means = None
    if chunks is not None and (inside or controls):
        means = region_means(chunks, region)
    if faithful and hallucinated:
        if means is not None and inside:
            # the examples are in the dataset: one activation pass serves both parts
            f = means[[pos[id(x)] for x in faithful]]
            h = means[[pos[id(x)] for x in hallucinated]]
            stats = _stats(f, h, region, n_boot, 0)
        else:
            stats = activation_stats(
                model, neurons, faithful, hallucinated, region=region, n_boot=n_boot, fmt=fmt
            )
        for card, st in zip(cards, stats):
            card.stats = st
    if controls and means is not None:
        for card, corr in zip(cards, _correlations(means, data, controls)):
            card.correlations = corr
    clock("activations")
    if evaluate is not None:
        for card, eff in zip(cards, ablation_effects(model, neurons, evaluate)):
            card.ablation = eff
        clock("ablation")
    if driver_inputs is not None:
        for card in cards:
            card.drivers = upstream_drivers(
                model, card.neuron, driver_inputs, corrupt=driver_corrupt, k=k
            )
        clock("drivers")
    return cards


class _Clock:
    """Records the seconds since the last call under each name (a no-op without a dict)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        import time

        self.into, self.time, self.last = into, time.perf_counter, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = self.time()
        if self.into is not None:
            self.into[name] = round(now - self.last, 2)
        self.last = now


def save_cards(cards: Sequence[NeuronCard], out: str | Path) -> Path:
    """Write ``cards.json`` (full cards) and ``cards_table.json`` (one row per card) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # NaN (an undefined correlation) stays NaN here, as Python's json writes and reads it
    atomic_write_text(out / "cards.json", json.dumps([c.to_dict() for c in cards], indent=1))
    atomic_write_text(out / "cards_table.json", json.dumps([c.records() for c in cards], indent=1))
    return out


def read_cards(out: str | Path) -> list[NeuronCard]:
    """The cards :func:`save_cards` wrote to ``out`` (``cards.json``).

    Raises:
        ValueError: the file is not valid JSON, or a card has a field :class:`NeuronCard` lacks.
    """
    return [NeuronCard.from_dict(d) for d in read_json(Path(out) / "cards.json")]
