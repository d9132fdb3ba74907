"""Report-card inputs from a finished ``hlens find`` run, and the AtP-vs-exact check.

``hlens explain`` on a real model reads the run that wrote the neuron file (its directory):

- :func:`run_examples`: the labelled, span-marked examples the probe was fitted on
  (``examples.jsonl``), for the top-activating answers of both classes and the faithful vs
  hallucinated statistics;
- :func:`run_controls`: the run's one-number controls per example (``control_values.json``: answer
  length, response length, the model's mean answer log-prob and its entropy at the answer start),
  so each card says how much the neuron tracks length and confidence;
- :func:`answer_evaluator`: the cost of zero-ablating a neuron, teacher-forced so that it is one
  forward pass per neuron: the perplexity of hlens's held-out sentences, and on faithful answers
  the mean answer log-prob and the share of answers whose every token stays the model's top
  choice (``answer_kept``; with the same prefix, greedy decoding would then still produce the
  answer);
- :func:`answer_pairs` and :func:`atp_agreement`: attribution patching against exact patching on
  (faithful, hallucinated) prompt pairs of equal length, over a seeded random sample of neurons
  plus every H-neuron. Both patch at the last prompt token (``patch_at="last"``): exact patching
  then needs one cached decode step per neuron, so thousands of neurons fit in a minute on a CPU.

Example:
    >>> import hlens
    >>> from hlens.explain_run import answer_pairs, atp_agreement, run_examples
    >>> model = hlens.load("smollm2-135m-instruct")  # doctest: +SKIP
    >>> exs = run_examples("runs/smollm2")  # doctest: +SKIP
    >>> clean, corrupt, metric = answer_pairs(model, exs, n_pairs=8)  # doctest: +SKIP
    >>> atp_agreement(model, h, clean, corrupt, metric)["spearman"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from hlens.attribution import attribution_patching, compare_scores
from hlens.checks import check_range, load_model, load_neurons
from hlens.controls import control_values
from hlens.errors import HlensInputError, validating
from hlens.examples import Example
from hlens.explain import report_cards, save_cards
from hlens.interventions import ablate_neurons
from hlens.model import Model
from hlens.neurons import NeuronId, NeuronSet
from hlens.patching import exact_patching, logit_diff, passes_per_pair
from hlens.prompts import PromptFormat, TokenBatch, prompt_format
from hlens.records import Record
from hlens.registry import kind_plugin
from hlens.suite_registry import fluency_sentences
from hlens.suites import PerplexitySuite

__all__ = [
    "AGREEMENT_CONTROLS",
    "CardProvider",
    "ExplainConfig",
    "ExplainResult",
    "answer_evaluator",
    "answer_pairs",
    "answer_prompts",
    "atp_agreement",
    "explain",
    "ids_batch",
    "run_controls",
    "run_examples",
    "run_format",
]

#: the controls each card correlates its activation with (names of ``control_values.json``)
AGREEMENT_CONTROLS = ("span_tokens", "response_tokens", "answer_logprob", "answer_entropy")


def run_examples(run_dir: str | Path) -> list[Example] | None:
    """The run's labelled examples (``examples.jsonl``), or ``None`` if it has none."""
    path = Path(run_dir) / "examples.jsonl"
    if not path.is_file():
        return None
    try:
        lines = path.read_text().splitlines()
        return [Example.from_dict(json.loads(x)) for x in lines if x.strip()]
    except (ValueError, KeyError, TypeError) as e:
        raise HlensInputError(
            f"{path}: expected the examples.jsonl written by hlens find ({type(e).__name__}: {e})"
        ) from e


def run_format(run_dir: str | Path) -> PromptFormat | None:
    """The prompt format the run rendered its examples with (``summary.json``), if recorded."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    fmt = (json.loads(path.read_text()).get("prompt") or {}).get("format")
    return PromptFormat.from_dict(fmt) if fmt else None


def run_controls(run_dir: str | Path, examples: Sequence[Example]) -> dict[str, list[float]] | None:
    """The run's cached control values, aligned with ``examples`` (``None`` if any is missing)."""
    path = Path(run_dir) / "control_values.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    where = {str(i): k for k, i in enumerate(d.get("ids", []))}
    if any(str(ex.id) not in where for ex in examples):
        return None
    rows = [where[str(ex.id)] for ex in examples]
    values = d.get("values", {})
    return {c: [float(values[c][r]) for r in rows] for c in AGREEMENT_CONTROLS if c in values}


def _answer_start(model: Model, examples: Sequence[Example], fmt: PromptFormat | None):
    """Per example: its tokens and the position of its first answer token (``None``: no span)."""
    batch = model.as_batch(list(examples), fmt=fmt)
    out = []
    for b in range(len(batch)):
        real = batch.attention_mask[b].bool()
        toks = batch.tokens[b][real].tolist()
        ans = batch.regions["answer"][b][real].nonzero()[:, 0]
        out.append((toks, int(ans[0]) if len(ans) else None, ans.tolist()))
    return out


def _logits_at(model: Model, batch: TokenBatch, where: torch.Tensor) -> torch.Tensor:
    """Next-token logits at the positions before each ``where`` token (``where`` is
    ``[batch, pos - 1]``), computing the unembedding there only. Hooks on the bridge apply."""
    hf = model.hf_model
    out = hf.get_decoder()(input_ids=batch.tokens.to(model.device),
                           attention_mask=batch.attention_mask.to(model.device))  # fmt: skip
    hidden = out.last_hidden_state[:, :-1][where.to(model.device)]
    logits = hf.get_output_embeddings()(hidden)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def answer_evaluator(
    model: Model,
    faithful: Sequence[Example],
    fmt: PromptFormat | None = None,
    *,
    n_answers: int = 16,
    n_sentences: int = 16,
) -> Callable[[Model], dict[str, float]]:
    """``evaluate(model)``: perplexity of held-out text and the model's grip on right answers.

    Teacher-forced on the first ``n_answers`` faithful examples (the model's own right answers):
    ``answer_logprob`` (mean log-prob of the answer tokens) and ``answer_kept`` (the share whose
    every answer token stays the top choice). ``perplexity``: the first ``n_sentences`` sentences
    of ``hlens/data/fluency_text.txt``.
    """
    answers = [ex for ex in faithful if ex.answer_span is not None][:n_answers]
    if not answers:
        raise HlensInputError("explain: no faithful examples with an answer span to evaluate on")
    batch = model.as_batch(answers, fmt=fmt)
    region = batch.regions["answer"][:, 1:]  # token t is predicted at t - 1
    target = batch.tokens[:, 1:]
    ppl = PerplexitySuite("fluency_ppl", fluency_sentences()[:n_sentences],
                          prefix=model.tokenizer.bos_token or "")  # fmt: skip

    rows = region.nonzero()[:, 0]  # which answer each scored token belongs to
    n_tok = region.sum(1).clamp_min(1).double()

    @torch.no_grad()
    def evaluate(m: Model) -> dict[str, float]:
        # the unembedding only where an answer token is predicted: it is the largest matmul
        logp = _logits_at(m, batch, region).float().log_softmax(-1).cpu()
        want = target[region]
        tok_lp = logp.gather(-1, want.unsqueeze(-1)).squeeze(-1).double()
        missed = (logp.argmax(-1) != want).double()
        mean_lp = torch.zeros(len(answers), dtype=torch.double).index_add_(0, rows, tok_lp) / n_tok
        miss = torch.zeros(len(answers), dtype=torch.double).index_add_(0, rows, missed)
        return {
            "perplexity": float(ppl.run(m).rate),
            "answer_logprob": float(mean_lp.mean()),
            "answer_kept": float((miss == 0).double().mean()),
        }

    return evaluate


def ids_batch(model: Model, ids: Sequence[Sequence[int]]) -> TokenBatch:
    """Token-id prompts as one right-padded :class:`~hlens.prompts.TokenBatch`."""
    width = max(len(x) for x in ids)
    pad = model.tokenizer.pad_token_id or 0
    tokens = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, : len(x)] = torch.tensor(list(x), dtype=torch.long)
        mask[i, : len(x)] = 1
    return TokenBatch(tokens, mask, padding_side="right")


def answer_prompts(
    model: Model, examples: Sequence[Example], fmt: PromptFormat | None = None, *, n: int = 16
) -> TokenBatch:
    """Token ids up to and including the first answer token, half from each class: the
    position where a neuron's answer-token activation starts (for upstream drivers)."""
    out: list[list[int]] = []
    for label in ("faithful", "hallucinated"):
        exs = [e for e in examples if e.label == label and e.answer_span is not None]
        cut = [t[: s + 1] for t, s, _ in _answer_start(model, exs[: n // 2], fmt) if s]
        out += cut
    return ids_batch(model, out)


def answer_pairs(
    model: Model,
    examples: Sequence[Example],
    fmt: PromptFormat | None = None,
    *,
    n_pairs: int = 8,
) -> tuple[TokenBatch, TokenBatch, Any]:
    """Equal-length (faithful, hallucinated) prompt pairs cut before the first answer token.

    Each prompt is the example's question and response up to its answer, tokenized as CETT
    extraction tokenizes it. The metric is the logit of the faithful example's first answer token
    minus that of the hallucinated example's, at the last prompt token.

    Raises:
        HlensInputError: when fewer than ``n_pairs`` equal-length pairs exist.
    """
    right = [e for e in examples if e.label == "faithful" and e.answer_span is not None]
    wrong = [e for e in examples if e.label == "hallucinated" and e.answer_span is not None]
    cut_r = [(t[:s], t[s]) for t, s, _ in _answer_start(model, right, fmt) if s]
    cut_w = [(t[:s], t[s]) for t, s, _ in _answer_start(model, wrong, fmt) if s]
    by_len: dict[int, list[tuple[list[int], int]]] = {}
    for p in cut_w:
        by_len.setdefault(len(p[0]), []).append(p)
    pairs = []
    for p in cut_r:
        partners = [q for q in by_len.get(len(p[0]), []) if q[1] != p[1]]
        if partners:
            q = partners[0]
            by_len[len(p[0])].remove(q)
            pairs.append((p, q))
        if len(pairs) == n_pairs:
            break
    if len(pairs) < n_pairs:
        raise HlensInputError(
            f"--agreement-pairs {n_pairs}: only {len(pairs)} equal-length (faithful, "
            "hallucinated) prompt pairs with different first answer tokens in the run's examples; "
            "ask for fewer"
        )
    clean = [p[0] for p, _ in pairs]
    corrupt = [q[0] for _, q in pairs]
    good = torch.tensor([p[1] for p, _ in pairs])
    bad = torch.tensor([q[1] for _, q in pairs])
    return ids_batch(model, clean), ids_batch(model, corrupt), logit_diff(good, bad)


def atp_agreement(
    model: Model,
    h_neurons: NeuronSet,
    clean: TokenBatch,
    corrupt: TokenBatch,
    metric: Any,
    *,
    n_random: int = 2000,
    seed: int = 0,
    top: int = 50,
) -> dict[str, Any]:
    """Attribution patching against exact patching, one neuron at a time, at the last token.

    The neurons are ``n_random`` drawn uniformly (seeded, disjoint from the H-neurons) plus every
    H-neuron. Returns Pearson, Spearman and top-``top`` overlap over all of them, the same over
    the H-neurons alone, the pass counts and the seconds each method took.
    """
    n_total = model.n_layers * model.d_mlp
    n_random = min(n_random, n_total - len(h_neurons))
    rand = NeuronSet.random(n_random, n_layers=model.n_layers, d_mlp=model.d_mlp, seed=seed,
                            exclude=h_neurons)  # fmt: skip
    units: list[NeuronId] = list(rand) + list(h_neurons)
    groups = [NeuronSet((u,), model.n_layers, model.d_mlp) for u in units]
    t0 = time.perf_counter()
    atp = attribution_patching(model, clean, corrupt, metric, target="group", neurons=groups,
                               patch_at="last")  # fmt: skip
    t1 = time.perf_counter()
    exact = exact_patching(model, clean, corrupt, metric, target="group", neurons=groups,
                           patch_at="last", max_rows=2048)  # fmt: skip
    t2 = time.perf_counter()
    h = torch.arange(n_random, len(units))
    on_h = compare_scores(atp.scores[h], exact.scores[h], top=min(top, len(h)))
    return compare_scores(atp, exact, top=top) | {
        "n_pairs": len(clean),
        "n_neurons": len(units),
        "n_random": n_random,
        "n_h_neurons": len(h_neurons),
        "of_neurons": n_total,
        "patch_at": "last",
        "h_neurons": {k: on_h[k] for k in ("pearson", "spearman", "top_overlap", "top", "n")},
        "atp_passes_per_pair": passes_per_pair(atp),
        "exact_passes_per_pair": passes_per_pair(exact),
        "atp_seconds": round(t1 - t0, 2),
        "exact_seconds": round(t2 - t1, 2),
        "mean_clean_metric": float(exact.clean_metric.mean()),
        "mean_corrupt_metric": float(exact.corrupt_metric.mean()),
        "mean_abs_exact": float(exact.scores.abs().mean()),
    }


# -- the pipeline: hlens explain -----------------------------------------------------------------
class CardProvider(Protocol):
    """What a model kind's plug-in gives ``hlens explain`` (``KindPlugin.cards``), for models
    whose labelled answers come from their own world rather than a find run."""

    def card_inputs(self, model: Model, n: int) -> dict[str, Any]: ...

    def evaluator(self, model: Model, n: int) -> Callable[[Model], dict[str, float]]: ...

    def agreement(self, model: Model, n_pairs: int = 16, top: int = 50) -> dict[str, Any]: ...


@dataclass
class ExplainConfig(Record):
    """What ``hlens explain`` writes cards for.

    Attributes:
        model: a bundled name, a known real model, a checkpoint directory or a hub id.
        neurons: a :class:`~hlens.neurons.NeuronSet` JSON file (``h_neurons.json`` of a find run;
            the run directory beside it supplies examples, controls and the prompt format).
        max_neurons: cards for the top ``max_neurons`` neurons (by probe weight when known).
        examples: a JSONL of labelled examples (default: the run's ``examples.jsonl``).
        n_questions: questions per set of a plug-in kind's own world (the organism).
        max_examples: real models: labelled examples read for the cards, half of each class.
        k: tokens, examples and drivers per card.
        agreement_pairs: prompt pairs of the AtP-vs-exact check (``None``: 8 on a real model with
            a run's examples, skipped with a reason when too few; 0 on a plug-in kind; 0: skip).
        agreement_neurons: real models: random neurons in that check, besides every H-neuron.
        ablation: whether to measure what zero-ablating each neuron (and all) costs.
        device: torch device.
    """

    model: str
    neurons: str
    max_neurons: int = 20
    examples: str | None = None
    n_questions: int = 200
    max_examples: int = 320
    k: int = 10
    agreement_pairs: int | None = None
    agreement_neurons: int = 2000
    ablation: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        for name, flag in (
            ("max_neurons", "--max-neurons"),
            ("n_questions", "--n-questions"),
            ("k", "--k"),
            ("agreement_neurons", "--agreement-neurons"),
            ("max_examples", "--max-examples"),
        ):
            check_range(flag, getattr(self, name), 1)
        if self.agreement_pairs is not None:
            check_range("--agreement-pairs", self.agreement_pairs, 0)


@dataclass
class ExplainResult(Record):
    """What ``hlens explain`` measured besides the cards (``explain/summary.json``).

    Attributes:
        model, neurons: as in the config.
        n_cards: cards written (``cards.json``).
        examples: where the labelled examples came from.
        labelled: faithful and hallucinated examples used.
        timings: seconds per part.
        ablation_all: every H-neuron zero-ablated at once, against no ablation.
        atp_vs_exact: attribution patching against exact patching (Pearson, Spearman, top-k).
        atp_vs_exact_skipped: why the default check was skipped.
        seconds: wall time.
    """

    model: str
    neurons: str
    n_cards: int
    examples: str | None = None
    labelled: dict[str, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    ablation_all: dict[str, Any] | None = None
    atp_vs_exact: dict[str, Any] | None = None
    atp_vs_exact_skipped: str | None = None
    seconds: float = 0.0


def _real_inputs(
    model: Model, exs: list[Example], run_dir: Path, cfg: ExplainConfig
) -> tuple[dict[str, Any], PromptFormat]:
    """Card inputs for a real model from a find run's examples."""
    known = model.known
    fmt = run_format(run_dir) or prompt_format(known.prompt if known else None, model.tokenizer)
    half = cfg.max_examples // 2
    right = [e for e in exs if e.label == "faithful"][:half]
    wrong = [e for e in exs if e.label == "hallucinated"][: cfg.max_examples - len(right[:half])]
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
    if cfg.ablation and right:
        kwargs["evaluate"] = answer_evaluator(model, right, fmt)
    return kwargs, fmt


def explain(config: ExplainConfig, out: str | Path) -> ExplainResult:
    """Report cards for the top neurons of a neuron file, and the checks around them; writes
    ``cards.json``, ``cards_table.json`` and ``summary.json`` (the :class:`ExplainResult`).

    Every input is validated before anything is written (see :mod:`hlens.errors`).

    Example:
        >>> cfg = ExplainConfig(model="organism", neurons="runs/organism/h_neurons.json")
        >>> explain(cfg, "runs/organism/explain").n_cards  # doctest: +SKIP
        20
    """
    t0 = time.time()
    cfg = config
    exs = None
    run_dir = Path(cfg.neurons).parent
    if cfg.examples:
        with validating("--examples", "a JSONL file of labelled Examples", value=cfg.examples):
            lines = Path(cfg.examples).read_text().splitlines()
            exs = [Example.from_dict(json.loads(x)) for x in lines if x.strip()]
    model = load_model(cfg.model, device=cfg.device)
    h_all = load_neurons(cfg.neurons, model)
    neurons = h_all
    if neurons.weights is not None and len(neurons) > cfg.max_neurons:
        neurons = neurons.top(cfg.max_neurons)
    elif len(neurons) > cfg.max_neurons:
        neurons = NeuronSet(neurons.neurons[: cfg.max_neurons], neurons.n_layers, neurons.d_mlp)
    result = ExplainResult(model=cfg.model, neurons=cfg.neurons, n_cards=len(neurons))
    plugin = kind_plugin(model.kind)
    provider: CardProvider | None = plugin.cards if plugin is not None else None
    kwargs: dict[str, Any] = {}
    if exs is None and provider is None:
        exs = run_examples(run_dir)
    pairs = None
    if exs is not None and provider is None:
        kwargs, fmt = _real_inputs(model, exs, run_dir, cfg)
        n_pairs = 8 if cfg.agreement_pairs is None else cfg.agreement_pairs
        try:  # asked for: too few pairs fail before anything is written; by default: skipped
            pairs = answer_pairs(model, exs, fmt, n_pairs=n_pairs) if n_pairs else None
        except HlensInputError as e:
            if cfg.agreement_pairs is not None:
                raise
            result.atp_vs_exact_skipped = str(e)
        result.examples = str(cfg.examples or run_dir / "examples.jsonl")
    elif exs is not None:
        kwargs["dataset"] = exs
        kwargs["faithful"] = [e for e in exs if e.label == "faithful"]
        kwargs["hallucinated"] = [e for e in exs if e.label == "hallucinated"]
        kwargs["driver_inputs"] = [e.replace(response="", answer_span=None) for e in exs[:32]]
    elif provider is not None:
        kwargs |= provider.card_inputs(model, n=cfg.n_questions)
        if cfg.ablation:
            kwargs["evaluate"] = provider.evaluator(model, n=min(cfg.n_questions, 100))
    if kwargs.get("faithful") is not None:
        result.labelled = {
            "faithful": len(kwargs["faithful"]),
            "hallucinated": len(kwargs.get("hallucinated") or []),
        }
    if len(kwargs.get("faithful") or []) < 2 or len(kwargs.get("hallucinated") or []) < 2:
        kwargs.pop("faithful", None), kwargs.pop("hallucinated", None)
    timings = result.timings
    cards = report_cards(model, neurons, k=cfg.k, fmt=kwargs.pop("fmt", None), timings=timings,
                         **kwargs)  # fmt: skip
    out = save_cards(cards, out)
    evaluate = kwargs.get("evaluate")
    if evaluate is not None and provider is None:  # all H-neurons at once, against no ablation
        base = cards[0].ablation["baseline"] if cards and cards[0].ablation else evaluate(model)
        with ablate_neurons(model, h_all):
            together = evaluate(model)
        result.ablation_all = {
            "n_neurons": len(h_all),
            "baseline": base,
            "ablated": together,
            "delta": {k: together[k] - base[k] for k in base if k in together},
        }
    if pairs is not None:
        result.atp_vs_exact = atp_agreement(model, h_all, *pairs, n_random=cfg.agreement_neurons)
    elif cfg.agreement_pairs and provider is not None:
        result.atp_vs_exact = provider.agreement(model, n_pairs=cfg.agreement_pairs)
    result.seconds = round(time.time() - t0, 1)
    result.save(out / "summary.json")
    return result
