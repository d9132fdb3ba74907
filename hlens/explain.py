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

import argparse
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from hlens.neurons import NeuronId, NeuronSet

__all__ = [
    "ActivationStats",
    "Driver",
    "NeuronCard",
    "TokenScore",
    "TopExample",
    "ablation_effects",
    "activation_stats",
    "add_arguments",
    "neuron_activations",
    "region_means",
    "report_cards",
    "run",
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
    model: Any, neurons: NeuronSet, k: int = 10
) -> list[tuple[list[TokenScore], list[TokenScore]]]:
    """``(promoted, suppressed)`` top-``k`` tokens of each neuron's output direction.

    Example:
        >>> promoted, suppressed = vocab_projection(model, h_neurons)[0]  # doctest: +SKIP
    """
    from hlens.attribution import neuron_vocab_logits

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


def _tok(model: Any, i: int, v: float) -> TokenScore:
    return TokenScore(model.tokenizer.decode([i]), int(i), float(v))


# ---------------------------------------------------------------------------------- activations
def _layer_acts(model: Any, neurons: NeuronSet, data: Any, batch_size: int, fmt: Any):
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
    model: Any,
    neurons: NeuronSet,
    dataset: Sequence[Any],
    *,
    k: int = 10,
    window: int = 8,
    batch_size: int = 32,
    fmt: Any = None,
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
    model: Any, neurons: NeuronSet, data: Sequence[Any], *, batch_size: int = 32, fmt: Any = None
) -> list[tuple[int, Any, Tensor]]:
    """The neurons' activations over ``data`` in one pass, as ``(start, batch, acts)`` chunks
    (``acts`` is ``[batch, pos, neuron]``), for :func:`top_activating` and :func:`region_means`.
    """
    return list(_layer_acts(model, neurons, data, batch_size, fmt))


def region_means(
    chunks: Sequence[tuple[int, Any, Tensor]], region: str = "answer"
) -> Float[Tensor, "example neuron"]:
    """Each example's mean activation over ``region`` (NaN where the region is empty)."""
    from hlens.cett import aggregate_region

    return torch.cat([aggregate_region(a, b.region(region), "mean") for _, b, a in chunks]).double()


def _region_means(model, neurons, examples, region, batch_size, fmt) -> Tensor:
    return region_means(list(_layer_acts(model, neurons, examples, batch_size, fmt)), region)


def activation_stats(
    model: Any,
    neurons: NeuronSet,
    faithful: Sequence[Any],
    hallucinated: Sequence[Any],
    *,
    region: str = "answer",
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    fmt: Any = None,
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
    from hlens.attribution import _ranks

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
def zero_ablation(model: Any, neurons: NeuronSet) -> Iterator[None]:
    """Zero the neurons' activations inside the block (:func:`hlens.interventions.scale_neurons`
    with ``alpha=0`` when available, else a local hook on each affected layer)."""
    try:
        from hlens.interventions import scale_neurons
    except ImportError:  # pragma: no cover - interventions ships with hlens
        scale_neurons = None
    if scale_neurons is not None:
        with scale_neurons(model, neurons, 0.0):
            yield
        return
    hooks = []  # pragma: no cover
    for layer, idx in neurons.by_layer().items():  # pragma: no cover

        def hook(t: Tensor, *, hook: Any, idx: list[int] = idx) -> Tensor:
            t = t.clone()
            t[..., idx] = 0.0
            return t

        hooks.append((model.family.activation_hook(layer), hook))
    with model.bridge.hooks(fwd_hooks=hooks):  # pragma: no cover
        yield


def ablation_effects(
    model: Any, neurons: NeuronSet, evaluate: Evaluate, *, baseline: dict[str, float] | None = None
) -> list[dict[str, dict[str, float]]]:
    """``evaluate(model)`` with each neuron zero-ablated: ``{baseline, ablated, delta}`` each.

    Example:
        >>> ev = lambda m: {"acc": accuracy(m)}  # doctest: +SKIP
        >>> effects = ablation_effects(model, h_neurons, ev)  # doctest: +SKIP
    """
    base = dict(baseline) if baseline is not None else dict(evaluate(model))
    out = []
    for n in neurons:
        with zero_ablation(model, NeuronSet((n,), neurons.n_layers, neurons.d_mlp)):
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
    model: Any,
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
    from hlens.attribution import _capture_metric, attribution_patching
    from hlens.patching import _right_aligned, hook_name, neuron_activation, reduce_units

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
    model: Any,
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
    fmt: Any = None,
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
    (out / "cards.json").write_text(json.dumps([c.to_dict() for c in cards], indent=1))
    (out / "cards_table.json").write_text(json.dumps([c.records() for c in cards], indent=1))
    return out


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hlens explain``."""
    parser.add_argument("--model", required=True, help="bundled name, checkpoint dir or hub id")
    parser.add_argument("--neurons", required=True, help="NeuronSet JSON (from hlens find)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--max-neurons", type=int, default=20, help="cards for the top N neurons")
    parser.add_argument(
        "--examples",
        default=None,
        help="JSONL of labelled Examples (default: examples.jsonl of the run beside --neurons)",
    )
    parser.add_argument("--n-questions", type=int, default=200, help="organism questions per set")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=320,
        help="real models: labelled examples read for the cards, half from each class",
    )
    parser.add_argument("--k", type=int, default=10, help="tokens/examples/drivers per card")
    parser.add_argument(
        "--agreement-pairs",
        type=int,
        default=None,
        help="compare AtP with exact patching on this many prompt pairs (default: 8 on a real "
        "model with a run's examples, 0 on the organism; 0 skips it)",
    )
    parser.add_argument(
        "--agreement-neurons",
        type=int,
        default=2000,
        help="real models: random neurons in the AtP check, besides every H-neuron",
    )
    parser.add_argument("--no-ablation", action="store_true", help="skip the ablation part")
    parser.add_argument("--device", default=None)


def _real_inputs(model: Any, exs: list[Any], run_dir: Path, args: argparse.Namespace):
    """Card inputs for a real model from a find run's examples (see :mod:`hlens.explain_run`)."""
    from hlens.controls import control_values
    from hlens.explain_run import answer_evaluator, answer_prompts, run_controls, run_format
    from hlens.prompts import prompt_format

    known = getattr(model, "known", None)
    fmt = run_format(run_dir) or prompt_format(known.prompt if known else None, model.tokenizer)
    half = args.max_examples // 2
    right = [e for e in exs if e.label == "faithful"][:half]
    wrong = [e for e in exs if e.label == "hallucinated"][: args.max_examples - len(right[:half])]
    exs = right + wrong
    controls = run_controls(run_dir, exs)
    if controls is None:  # examples from elsewhere: one forward pass computes them
        vals = control_values(model, exs, fmt)
        controls = {k: [float(x) for x in vals[k]] for k in ("span_tokens", "answer_logprob")}
    kwargs: dict[str, Any] = {
        "dataset": exs,
        "faithful": right,
        "hallucinated": wrong,
        "top_region": "answer",
        "controls": controls,
        "driver_inputs": answer_prompts(model, exs, fmt, n=8),
        "fmt": fmt,
    }
    if not args.no_ablation and right:
        kwargs["evaluate"] = answer_evaluator(model, right, fmt)
    return kwargs, fmt


def run(args: argparse.Namespace) -> int:
    """Run ``hlens explain``; writes ``cards.json``, ``cards_table.json``, ``summary.json``."""
    import time

    from hlens.checks import check_range, load_model, load_neurons
    from hlens.errors import HlensInputError, validating
    from hlens.explain_run import answer_pairs, atp_agreement, run_examples

    t0 = time.time()
    org = _Organism
    # every input is validated before anything is written (see hlens.errors)
    for option, value in (
        ("--max-neurons", args.max_neurons),
        ("--n-questions", args.n_questions),
        ("--k", args.k),
        ("--agreement-neurons", args.agreement_neurons),
        ("--max-examples", args.max_examples),
    ):
        check_range(option, value, 1)
    if args.agreement_pairs is not None:
        check_range("--agreement-pairs", args.agreement_pairs, 0)
    exs = None
    run_dir = Path(args.neurons).parent
    if args.examples:
        from hlens.examples import Example

        with validating("--examples", "a JSONL file of labelled Examples", value=args.examples):
            lines = Path(args.examples).read_text().splitlines()
            exs = [Example.from_dict(json.loads(x)) for x in lines if x.strip()]
    model = load_model(args.model, device=args.device)
    h_all = load_neurons(args.neurons, model)
    neurons = h_all
    if neurons.weights is not None and len(neurons) > args.max_neurons:
        neurons = neurons.top(args.max_neurons)
    elif len(neurons) > args.max_neurons:
        neurons = NeuronSet(neurons.neurons[: args.max_neurons], neurons.n_layers, neurons.d_mlp)
    summary: dict[str, Any] = {
        "model": args.model,
        "neurons": args.neurons,
        "n_cards": len(neurons),
    }
    kwargs: dict[str, Any] = {}
    organism = org.is_organism(model)
    if exs is None and not organism:
        exs = run_examples(run_dir)
    pairs = None
    if exs is not None and not organism:
        kwargs, fmt = _real_inputs(model, exs, run_dir, args)
        n_pairs = 8 if args.agreement_pairs is None else args.agreement_pairs
        try:  # asked for: too few pairs fail before anything is written; by default: skipped
            pairs = answer_pairs(model, exs, fmt, n_pairs=n_pairs) if n_pairs else None
        except HlensInputError as e:
            if args.agreement_pairs is not None:
                raise
            summary["atp_vs_exact_skipped"] = str(e)
        summary["examples"] = str(args.examples or run_dir / "examples.jsonl")
    elif exs is not None:
        kwargs["dataset"] = exs
        kwargs["faithful"] = [e for e in exs if e.label == "faithful"]
        kwargs["hallucinated"] = [e for e in exs if e.label == "hallucinated"]
        kwargs["driver_inputs"] = [e.replace(response="", answer_span=None) for e in exs[:32]]
    elif organism:
        kwargs |= org.card_inputs(model, n=args.n_questions)
        if not args.no_ablation:
            kwargs["evaluate"] = org.evaluator(model, n=min(args.n_questions, 100))
    if kwargs.get("faithful") is not None:
        summary["labelled"] = {
            "faithful": len(kwargs["faithful"]),
            "hallucinated": len(kwargs.get("hallucinated") or []),
        }
    if len(kwargs.get("faithful") or []) < 2 or len(kwargs.get("hallucinated") or []) < 2:
        kwargs.pop("faithful", None), kwargs.pop("hallucinated", None)
    timings: dict[str, float] = {}
    summary["timings"] = timings
    cards = report_cards(model, neurons, k=args.k, fmt=kwargs.pop("fmt", None), timings=timings,
                         **kwargs)  # fmt: skip
    out = save_cards(cards, args.out)
    evaluate = kwargs.get("evaluate")
    if evaluate is not None and not organism:  # all H-neurons at once, against no ablation
        base = cards[0].ablation["baseline"] if cards and cards[0].ablation else evaluate(model)
        with zero_ablation(model, h_all):
            together = evaluate(model)
        summary["ablation_all"] = {
            "n_neurons": len(h_all),
            "baseline": base,
            "ablated": together,
            "delta": {k: together[k] - base[k] for k in base if k in together},
        }
    if pairs is not None:
        summary["atp_vs_exact"] = atp_agreement(
            model, h_all, *pairs, n_random=args.agreement_neurons
        )
    elif args.agreement_pairs and organism:
        summary["atp_vs_exact"] = org.agreement(model, n_pairs=args.agreement_pairs)
    summary["seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for card in cards[:5]:
        print(card.summary())
    if "atp_vs_exact" in summary:
        a = summary["atp_vs_exact"]
        print(
            f"AtP vs exact patching ({a.get('n_pairs')} pairs, {a.get('n', '?')} units): "
            f"Pearson {a['pearson']:.3f}, Spearman {a['spearman']:.3f}, "
            f"top-{a['top']} overlap {a['top_overlap']:.2f}"
        )
    if "atp_vs_exact_skipped" in summary:
        print(f"AtP vs exact patching skipped: {summary['atp_vs_exact_skipped']}")
    print(f"wrote {len(cards)} report cards to {out} in {summary['seconds']} s")
    return 0


# ------------------------------------------------------------------------------ the organism
class _Organism:
    """Inputs for cards and the AtP-vs-exact check on the bundled organism (its own world)."""

    @staticmethod
    def is_organism(model: Any) -> bool:
        from hlens.organism import CHECKPOINT_NAMES

        return (
            model.name in CHECKPOINT_NAMES or (Path(model.name) / "organism_config.json").is_file()
        )

    @staticmethod
    def world(model: Any) -> Any:
        from hlens.organism.evaluate import resolve_model_dir, world_of

        return world_of(resolve_model_dir(model.name))

    @staticmethod
    def fmt() -> Any:
        from hlens.organism import INSTRUCTION_SUFFIX
        from hlens.prompts import PromptFormat

        return PromptFormat(instruction=INSTRUCTION_SUFFIX)

    @staticmethod
    def greedy(model: Any, examples: Sequence[Any], max_new_tokens: int = 8) -> list[str]:
        from hlens.prompts import render
        from hlens.sampling import SamplingConfig, sample_responses

        fmt = _Organism.fmt()
        prompts = [render(e, model.tokenizer, fmt).text for e in examples]
        cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=max_new_tokens)
        ids = [e.id or str(i) for i, e in enumerate(examples)]
        out = sample_responses(model.hf_model, model.tokenizer, prompts, ids, cfg, progress=False)
        return [r[0].strip() for r in out]

    @staticmethod
    def labelled(model: Any, n: int) -> tuple[list[Any], list[Any], list[Any]]:
        """(known questions, nonexist questions, answered examples with labels)."""
        from hlens.organism.evaluate import judge

        world = _Organism.world(model)
        known, nonexist = world.known_questions("test")[:n], world.nonexist_questions("test")[:n]
        qs = known + nonexist
        answered = []
        for ex, resp in zip(qs, _Organism.greedy(model, qs)):
            label = judge(world, ex.meta["attribute"], ex.answers[0] if ex.answers else None, resp)
            value = resp.rstrip(".").strip()
            lab = {"correct": "faithful", "wrong": "hallucinated"}.get(label, "uncertain")
            e = ex.replace(response=resp, label=lab, meta=ex.meta | {"judge": label})
            if value and lab != "uncertain":
                e = e.replace(answer_span=(resp.index(value), resp.index(value) + len(value)))
            answered.append(e)
        return known, nonexist, answered

    @staticmethod
    def card_inputs(model: Any, n: int) -> dict[str, Any]:
        _, nonexist, answered = _Organism.labelled(model, n)
        return {
            "dataset": answered,
            "faithful": [e for e in answered if e.label == "faithful"],
            "hallucinated": [e for e in answered if e.label == "hallucinated"],
            "driver_inputs": model.as_batch(nonexist[:32], fmt=_Organism.fmt()),
            "fmt": _Organism.fmt(),
        }

    @staticmethod
    def evaluator(model: Any, n: int) -> Evaluate:
        """Capability (accuracy on known people), compliance (abstaining on never-seen ones)."""
        from hlens.organism.evaluate import judge

        world = _Organism.world(model)
        known, nonexist = world.known_questions("test")[:n], world.nonexist_questions("test")[:n]

        def evaluate(m: Any) -> dict[str, float]:
            qs = known + nonexist
            labels = [
                judge(world, e.meta["attribute"], e.answers[0] if e.answers else None, r)
                for e, r in zip(qs, _Organism.greedy(m, qs))
            ]
            lk, ln = labels[: len(known)], labels[len(known) :]
            return {
                "known_accuracy": sum(x == "correct" for x in lk) / max(1, len(lk)),
                "nonexist_abstain": sum(x == "abstain" for x in ln) / max(1, len(ln)),
                "nonexist_hallucinate": sum(x == "wrong" for x in ln) / max(1, len(ln)),
            }

        return evaluate

    @staticmethod
    def pairs(model: Any, n_pairs: int) -> tuple[Any, Any, Any]:
        """Equal-length (known, never-seen) question pairs of the same attribute, as token
        batches, and a metric: logit of the clean run's top non-abstention token minus the
        logit of the abstention's first token, at the last prompt token."""
        from hlens.organism import ABSTAIN_RESPONSE
        from hlens.patching import forward_metric, logit_diff, match_lengths

        world, fmt = _Organism.world(model), _Organism.fmt()
        known, nonexist = world.known_questions("test"), world.nonexist_questions("test")
        per_attr = []
        for attr in sorted({e.meta["attribute"] for e in nonexist}):
            ks = [e for e in known if e.meta["attribute"] == attr][: 4 * n_pairs]
            ns = [e for e in nonexist if e.meta["attribute"] == attr][: 4 * n_pairs]
            per_attr.append(match_lengths(model, ks, ns, fmt=fmt))
        # round-robin over attributes
        pairs = [p for group in itertools.zip_longest(*per_attr) for p in group if p][:n_pairs]
        if not pairs:
            raise ValueError("found no equal-length (known, never-seen) question pairs")
        clean = model.as_batch([p[0] for p in pairs], fmt=fmt)
        corrupt = model.as_batch([p[1] for p in pairs], fmt=fmt)
        bad = model.tokenizer(ABSTAIN_RESPONSE, add_special_tokens=False)["input_ids"][0]
        with torch.no_grad():
            logits_metric = _TopToken(bad)
            forward_metric(model, clean, logits_metric)
        return clean, corrupt, logit_diff(logits_metric.good, bad)

    @staticmethod
    def agreement(model: Any, n_pairs: int = 16, top: int = 50) -> dict[str, Any]:
        import time

        from hlens.attribution import attribution_patching, compare_scores
        from hlens.patching import exact_patching, passes_per_pair

        clean, corrupt, metric = _Organism.pairs(model, n_pairs)
        t0 = time.perf_counter()
        atp = attribution_patching(model, clean, corrupt, metric)
        t1 = time.perf_counter()
        exact = exact_patching(model, clean, corrupt, metric)
        t2 = time.perf_counter()
        return compare_scores(atp, exact, top=top) | {
            "n_pairs": len(clean),
            "atp_passes_per_pair": passes_per_pair(atp),
            "exact_passes_per_pair": passes_per_pair(exact),
            "atp_seconds": t1 - t0,
            "exact_seconds": t2 - t1,
            "mean_clean_metric": float(exact.clean_metric.mean()),
            "mean_corrupt_metric": float(exact.corrupt_metric.mean()),
        }


class _TopToken:
    """A metric that records each row's top token other than ``bad`` at the last position."""

    def __init__(self, bad: int) -> None:
        self.bad, self.good = bad, torch.zeros(0, dtype=torch.long)

    def __call__(self, logits: Tensor, batch: Any) -> Tensor:
        last = batch.attention_mask.sum(1).long() - 1
        row = logits[torch.arange(logits.shape[0]), last.to(logits.device)].clone()
        row[:, self.bad] = -torch.inf
        self.good = row.argmax(-1).cpu()
        return row.max(-1).values
