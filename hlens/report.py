"""``hlens report RUN_DIR``: one offline HTML page with everything a run directory holds.

Reads what the other subcommands wrote, each part optional, and writes ``RUN_DIR/report.html``:

- ``summary.json``, ``h_neurons.json``, ``probe/``, ``features/``, ``splits.json`` (``hlens
  find``): headline numbers with intervals, the funnel, H-neurons per layer, the C path, the ROC
  curve on the test split, the strongest H-neurons;
- with ``examples.jsonl`` and a loadable model (``config.json``'s, or ``--model``): per-token
  probe scores of test responses, H-neuron activations and top-activating samples;
- ``steer/summary.json`` (``hlens steer``): rates against alpha with controls, slopes;
- ``explain/cards.json``, ``explain/summary.json``, ``explain/*patch*.json`` (``hlens explain``):
  the report cards, their top examples, patching / attribution maps;
- ``origin/summary.json`` (``hlens origin``): probe transfer to the base model and parameter
  inertia (``inertia.ranks``: all neurons' normalised ranks; ``inertia.h_ranks`` or
  ``inertia.per_neuron[*].rank``: the H-neurons').

A section appears only when its results exist; a section that fails to render shows the error
instead of the page failing. Plots are inline PNGs and views carry circuitsvis's JavaScript
inline (once per page), under a Content Security Policy that forbids any network access.

Example:
    >>> from hlens.cli import main
    >>> main(["report", "runs/organism"])  # doctest: +SKIP
    wrote runs/organism/report.html
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hlens
from hlens import plots, views
from hlens.controls import CONTROLS
from hlens.explain import read_cards
from hlens.explain_run import ExplainResult
from hlens.features import FeatureStore, read_examples
from hlens.identify import FindConfig, FindResult
from hlens.neurons import NeuronSet
from hlens.origin import OriginResult
from hlens.patching import PatchResult
from hlens.probe import NeuronProbe
from hlens.prompts import PromptFormat
from hlens.records import Record
from hlens.splits import Splits
from hlens.sweep import SteerResult
from hlens.views import View, effects_view, page, topk_samples

__all__ = ["build_report", "write_report"]

Section = tuple[str, str, str]  # (anchor, heading, html)


# -- formatting -----------------------------------------------------------------------------------
def _num(x: Any, digits: int = 3, sign: bool = False) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return html.escape(str(x))
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(value: Any, ci: Sequence[float] | None, digits: int = 3, sign: bool = False) -> str:
    """``0.912 [0.880, 0.940]`` (the interval in grey), or just the value."""
    out = _num(value, digits, sign)
    if ci is not None and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        lo, hi = _num(ci[0], digits, sign), _num(ci[1], digits, sign)
        out += f" <span class='ci'>[{lo}, {hi}]</span>"
    return out


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _how(text: str) -> str:
    return f"<details class='how'><summary>How to read this</summary><p>{text}</p></details>"


def _cards(items: Sequence[tuple[str, str]]) -> str:
    """Headline numbers as a row of boxes: ``(label, value html)``."""
    return (
        "<div class='cards'>"
        + "".join(
            f"<div class='card'><div class='v'>{v}</div><div class='l'>{html.escape(k)}</div></div>"
            for k, v in items
        )
        + "</div>"
    )


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _typed(cls: type[Record], path: Path) -> dict[str, Any] | None:
    """A result file read (strictly) as its typed result, then as the dict the sections render;
    ``None`` if absent."""
    return cls.load(path).to_dict() if path.is_file() else None


def _fig(fig: Any, caption: str | None = None) -> str:
    return View.from_figure(fig, caption=caption).body_html()


# -- find -----------------------------------------------------------------------------------------
def _find_section(run: Path, s: Mapping[str, Any]) -> str:
    h = s.get("h_neurons", {})
    test = s.get("metrics", {}).get("test", {})
    ood = s.get("metrics", {}).get("ood", {})
    base = s.get("baselines", {}).get("random_neurons", {})
    bci = (base.get("ci") or {}).get("auroc")
    frac = h.get("fraction")
    items = [
        (
            "H-neurons",
            f"{_num(h.get('count'))}"
            + (f" <span class='ci'>({frac * 1e3:.3g}&permil; of all)</span>" if frac else ""),
        ),
        ("test AUROC [95% CI]", _ci(test.get("auroc"), test.get("auroc_ci"))),
        ("test accuracy [95% CI]", _ci(test.get("accuracy"), test.get("accuracy_ci"))),
        ("random-neuron AUROC [95% CI]", _ci(base.get("auroc"), bci)),
    ]
    if "auroc" in ood:
        items.append(("out-of-distribution AUROC", _ci(ood.get("auroc"), ood.get("auroc_ci"))))
    out = [_cards(items)]
    p = s.get("probe", {})
    facts = [
        ("test responses", _num(test.get("n"))),
        (
            "probe",
            f"{p.get('penalty', '?')} logistic regression, C = {_num(p.get('C'), 4)} "
            f"({html.escape(str(p.get('c_rule', '?')))}), {_num(p.get('n_nonzero'))} "
            "non-zero weights",
        ),
    ]
    if p.get("contrast"):
        facts.append(("training set", html.escape(str(p["contrast"]))))
    strata = (s.get("controls") or {}).get("strata")
    if strata:
        facts.append(("AUROC of the question type alone", _num(strata.get("strata_only_auroc"))))
        facts.append(("probe AUROC within question types", _num(strata.get("within_strata_auroc"))))
    if "accuracy" in ood:
        facts.append(("out-of-distribution accuracy", _num(ood.get("accuracy"))))
    elif ood.get("note"):
        facts.append(("out of distribution", html.escape(str(ood["note"]))))
    out.append(_table(facts))
    out.append(
        _how(
            "The probe reads one CETT feature per neuron (its share of its MLP's output, averaged "
            "over the answer tokens) and predicts whether a response is hallucinated. Its neurons "
            "with a positive weight are the H-neurons. AUROC is measured on held-out questions; "
            "the bracket is a 95% bootstrap interval. The random-neuron AUROC is the same probe "
            "fitted on as many layer-matched random neurons: the gap to it is what the H-neurons "
            "add beyond 'any neurons of these layers'."
        )
    )
    conf = (s.get("controls") or {}).get("confounds")
    if conf:
        out.append(_confound_section(conf))
    funnel = s.get("funnel")
    if funnel:
        out.append("<h3>Funnel</h3>")
        flat = [(k, v) for k, v in funnel.items() if not isinstance(v, Mapping)]
        out.append(_table([(html.escape(k.replace("_", " ")), _num(v)) for k, v in flat]))
        deg = funnel.get("degenerate")
        if isinstance(deg, Mapping):
            out.append(
                _how(
                    f"Degenerate-output check: {100 * deg.get('share_empty', 0):.0f}% of first "
                    f"responses are empty and {100 * deg.get('share_most_common', 0):.0f}% are "
                    f"the most common one ({html.escape(repr(deg.get('most_common_response')))})."
                )
            )
        out.append(
            _how(
                "How many questions survive each stage: sampled, judged, kept by the consistency "
                "filter (all samples agree), balanced between faithful and hallucinated, and split "
                "into train and test by question."
            )
        )
    figs = []
    if h.get("per_layer"):
        figs.append(_fig(plots.h_neurons_per_layer(h["per_layer"], d_mlp=s.get("d_mlp"))))
    if s.get("c_path"):
        figs.append(_fig(plots.c_path(s["c_path"], selected_C=p.get("C"))))
    roc = _roc_figure(run, s)
    if roc is not None:
        figs.append(_fig(roc))
    if figs:
        out.append("<div class='figs'>" + "".join(figs) + "</div>")
        out.append(
            _how(
                "<b>Per layer</b>: where the H-neurons sit. <b>C path</b>: as C grows the probe "
                "keeps more neurons (red, log scale) and its validation AUROC (blue, &plusmn; one "
                "standard error) saturates; the dotted line is the chosen C. <b>ROC</b>: the "
                "probe's true vs false positive rate on the test split; the diagonal is chance, "
                "the legend gives the random-neuron baseline."
            )
        )
    out.append(_top_neurons(run))
    return "".join(out)


def _confound_section(conf: Mapping[str, Any]) -> str:
    flagged = set(conf.get("flagged", []))
    rows = [
        (
            html.escape(CONTROLS.get(name, name)),
            _num(c.get("auroc")),
            "<b>within 0.05 of the probe</b>" if name in flagged else "",
        )
        for name, c in conf.get("controls", {}).items()
    ]
    bins = conf.get("length_bins") or {}
    if bins:
        rows.append(("probe within answer-length bins", _num(bins.get("within_strata_auroc")), ""))
    verdict = html.escape(str(conf.get("verdict", "")))
    style = "color:#b00;font-weight:bold" if flagged else ""
    return (
        "<h3>Confound controls</h3>"
        + f"<p style='{style}'>{verdict}</p>"
        + _table(rows, header=("one number alone", "test AUROC", ""))
        + _how(
            f"Each control is one number per response, its direction fitted on the training "
            f"split, scored on the probe's test split (probe AUROC "
            f"{_num(conf.get('probe_auroc'))}). A control within "
            f"{conf.get('margin', 0.05):.2f} of the probe explains its result as well, so the "
            "probe's AUROC is then no evidence of hallucination neurons."
        )
    )


def _roc_figure(run: Path, s: Mapping[str, Any]) -> Any:
    """ROC of the saved probe on the test split's answer features (None if the files are absent)."""
    if not all((run / x).exists() for x in ("probe", "features", "splits.json")):
        return None
    import numpy as np
    import torch

    splits = Splits.load(run / "splits.json")
    store = FeatureStore(run / "features")
    f, h = list(splits.test_faithful), list(splits.test_hallucinated)
    X = torch.cat([store.load("answer", f, flat=True), store.load("answer", h, flat=True)])
    y = np.array([0] * len(f) + [1] * len(h))
    keep = torch.isfinite(X).all(1).numpy()
    probe = NeuronProbe.load(run / "probe")
    score = probe.decision_function(X[torch.from_numpy(keep)])
    base = s.get("baselines", {}).get("random_neurons", {})
    return plots.roc_curves(
        y[keep],
        {"H-neuron probe": score},
        random_auroc=base.get("auroc"),
        random_ci=(base.get("ci") or {}).get("auroc"),
    )


def _top_neurons(run: Path, k: int = 15) -> str:
    if not (run / "h_neurons.json").is_file():
        return ""
    ns = NeuronSet.load(run / "h_neurons.json")
    if not len(ns):
        return ""
    top = ns.top(k) if ns.weights is not None else ns
    rows = [
        (f"L{n.layer}.{n.index}", _num(w, 4))
        for n, w in zip(top.neurons[:k], top.weights or [None] * len(top))
    ]
    return f"<h3>Strongest H-neurons ({min(k, len(ns))} of {len(ns)})</h3>" + _table(
        rows, ["neuron (layer.index)", "probe weight"]
    )


# -- token views (need the model) -----------------------------------------------------------------
def _views_section(run: Path, s: Mapping[str, Any], model_name: str | None, n: int, device: Any):
    if not (run / "examples.jsonl").is_file() or not (run / "probe").exists():
        return None
    import torch

    cfg = (
        FindConfig.from_dict(FindConfig.upgrade_dict(_read(run / "config.json")))
        if (run / "config.json").is_file()
        else None
    )
    model_name = model_name or (cfg.model if cfg is not None else None) or s.get("model")
    if not model_name:
        return None
    exs = read_examples(run / "examples.jsonl")
    split = Splits.load(run / "splits.json") if (run / "splits.json").is_file() else None
    test_ids = set(split.test_ids) if split is not None else set()
    pool = [e for e in exs if e.label in ("faithful", "hallucinated")]
    pool = [e for e in pool if e.id in test_ids] or pool
    faithful = [e for e in pool if e.label == "faithful"][: max(1, n // 2)]
    halluc = [e for e in pool if e.label == "hallucinated"][: max(1, n - n // 2)]
    chosen = [e for pair in zip(halluc, faithful) for e in pair]
    chosen += halluc[len(faithful) :] + faithful[len(halluc) :]
    if not chosen:
        return None
    model = hlens.load(model_name, device=device)
    fmt_dict = (s.get("prompt") or {}).get("format")
    fmt = PromptFormat.from_dict(fmt_dict) if fmt_dict else PromptFormat()
    opts = cfg.cett.score_options() if cfg is not None else {}
    batch = model.tokenize(chosen, fmt)
    probe = NeuronProbe.load(run / "probe")
    with torch.no_grad():
        cache = model.neuron_cache(batch)
        feats = cache.cett(
            model.W_out_norms(),
            use_abs=opts.get("use_abs", True),
            use_mag=opts.get("use_mag", True),
        )
    resp = batch.region("response")
    real = batch.attention_mask.bool()
    toks = [
        views.token_strings(model.tokenizer, batch.tokens[b][real[b]]) for b in range(len(chosen))
    ]
    scores = [views.token_scores(feats[b][real[b]], probe) for b in range(len(chosen))]
    m = max(float(sc[resp[b][real[b]]].abs().max()) for b, sc in enumerate(scores))
    parts = ["<h3>Probe score per token</h3>"]
    for b, e in enumerate(chosen):
        parts.append(
            f"<p class='ex'><b>{html.escape(e.label or '')}</b> &middot; "
            f"{html.escape(e.question[:160])}</p>"
        )
        parts.append(
            views.colored_scores(toks[b], scores[b], mask=resp[b][real[b]], max_abs=m).body_html()
        )
    parts.append(
        _how(
            "Each token of the response is colored by the probe applied to that token's CETT "
            "features alone (features &middot; weights + intercept), on one shared scale: red "
            "pushes towards 'hallucinated', blue towards 'faithful'. Prompt tokens are left "
            "white. The probe was trained on answer-token means, so single tokens are noisier "
            "than its verdict."
        )
    )
    h = (
        NeuronSet.load(run / "h_neurons.json")
        if (run / "h_neurons.json").is_file()
        else probe.h_neurons_
    )
    if len(h):
        top = h.top(min(12, len(h))) if h.weights is not None else h
        layer = torch.tensor([x.layer for x in top])
        index = torch.tensor([x.index for x in top])
        acts = cache.activations[:, :, layer, index].float()  # [batch, pos, neuron]
        labels = [e.label or "?" for e in chosen]
        mask = real & (resp | batch.region("prompt"))
        parts.append("<h3>H-neuron activations</h3>")
        parts.append(
            views.text_neuron_activations(
                [views.token_strings(model.tokenizer, t) for t in batch.tokens],
                acts,
                top,
                labels=labels,
                mask=mask,
            ).body_html()
        )
        parts.append(
            views.topk_samples(
                [views.token_strings(model.tokenizer, t) for t in batch.tokens],
                acts,
                top,
                labels=labels,
                mask=real & resp,
                k=min(3, len(chosen)),
            ).body_html()
        )
        parts.append(
            _how(
                "Pick a neuron to see its activation (the input of the MLP's down projection) on "
                "every token of faithful and hallucinated responses; below, the responses where it "
                "peaks, per group. H-neurons should fire more on the answers of hallucinated "
                "responses."
            )
        )
    return "".join(parts)


# -- steer, explain, origin ---------------------------------------------------------------------
def _steer_file(path: Path) -> str | None:
    s = _typed(SteerResult, path)
    return _steer_section(s) if s and s.get("results") else None


def _steer_section(s: Mapping[str, Any]) -> str:
    out = [_fig(plots.alpha_sweep(s))]
    if s.get("verdict"):
        out.append(f"<p class='verdict'><b>Verdict.</b> {html.escape(str(s['verdict']))}</p>")
    roles = s.get("roles") or {}
    rows = []
    for suite, by_set in (s.get("slopes") or {}).items():
        hs = by_set.get("h_neurons") or {}
        ctrl = [v for k, v in by_set.items() if k != "h_neurons" and v.get("slope") is not None]
        ctrl_txt = (
            f"{min(v['slope'] for v in ctrl):+.3f} &hellip; {max(v['slope'] for v in ctrl):+.3f} "
            f"(n={len(ctrl)})"
            if ctrl
            else "n/a"
        )
        cells = ((s.get("results") or {}).get(suite) or {}).get("h_neurons") or {}
        trunc = [
            c.get("truncated_share") for c in cells.values() if c.get("truncated_share") is not None
        ]
        unp = [
            c.get("unparsed_share") for c in cells.values() if c.get("unparsed_share") is not None
        ]
        shares = (
            f"{min(trunc):.2f}&ndash;{max(trunc):.2f} / {min(unp):.2f}&ndash;{max(unp):.2f}"
            if trunc and unp
            else "n/a"
        )
        rows.append(
            (
                html.escape(suite) + (" (fluency)" if roles.get(suite) == "fluency" else ""),
                _ci(hs.get("slope"), hs.get("ci"), sign=True),
                ctrl_txt,
                shares,
            )
        )
    if rows:
        out.append(
            _table(
                rows,
                [
                    "suite",
                    "H-neuron slope per unit alpha [95% CI]",
                    "random-set slopes (range)",
                    "truncated / unparsed share (H-neuron cells)",
                ],
            )
        )
    out.append(_fluency_table(s))
    verdicts = s.get("verdicts") or {}
    if verdicts:
        out.append(
            "<ul>" + "".join(f"<li>{html.escape(str(v))}</li>" for v in verdicts.values()) + "</ul>"
        )
    desc = s.get("suites") or {}
    lic = s.get("licences") or {}
    if desc:
        out.append(
            "<ul>"
            + "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}"
                + (f" <i>({html.escape(str(lic[k]))})</i>" if k in lic else "")
                + "</li>"
                for k, v in desc.items()
            )
            + "</ul>"
        )
    out.append(
        _how(
            "Every H-neuron's activation is multiplied by alpha while the model answers each "
            "suite (alpha = 1 is the unchanged model, 0 silences them). Red: the H-neurons with a "
            "95% bootstrap band over questions; grey: layer-matched random neuron sets of the "
            "same size. A specific causal role shows as an H-neuron compliance slope outside the "
            "random sets' intervals, larger than the change in fluency (perplexity, known-answer "
            "accuracy) that the same scaling causes."
        )
    )
    return "".join(out)


def _fluency_table(s: Mapping[str, Any]) -> str:
    """Perplexity, fluent share and known accuracy per alpha: H-neurons vs the random mean."""
    flu = s.get("fluency") or {}
    h = flu.get("h_neurons") or {}
    if not h:
        return ""
    rand = [v for k, v in flu.items() if k != "h_neurons"]

    def mean(key: str, alpha: str) -> float | None:
        xs = [r[alpha][key] for r in rand if r.get(alpha, {}).get(key) is not None]
        return sum(xs) / len(xs) if xs else None

    rows = []
    for alpha, row in h.items():
        rows.append(
            (
                html.escape(alpha),
                f"{_num(row.get('perplexity'), 1)} ({_num(mean('perplexity', alpha), 1)})",
                f"{_num(row.get('fluent_share'), 2)} ({_num(mean('fluent_share', alpha), 2)})",
                f"{_num(row.get('known_accuracy'), 2)} ({_num(mean('known_accuracy', alpha), 2)})",
            )
        )
    return "<h3>Fluency at each alpha: H-neurons (random sets' mean)</h3>" + _table(
        rows, ["alpha", "perplexity of held-out text", "fluent, parseable share", "known accuracy"]
    )


def _explain_section(run: Path) -> str | None:
    d = run / "explain"
    cards = [c.to_dict() for c in read_cards(d)] if (d / "cards.json").is_file() else None
    summary = _typed(ExplainResult, d / "summary.json") or {}
    patches = sorted(p for p in d.glob("*.json") if _is_patch(p))
    if not cards and not patches:
        return None
    out = []
    if cards:
        rows = []
        for c in cards:
            n, st = c["neuron"], c.get("stats") or {}
            delta = ((c.get("ablation") or {}).get("delta")) or {}
            drv = (c.get("drivers") or [None])[0]
            rows.append(
                (
                    f"L{n['layer']}.{n['index']}",
                    _num(c.get("weight"), 4),
                    html.escape(" ".join(repr(t["token"]) for t in (c.get("promoted") or [])[:5])),
                    _ci(st.get("effect_size"), [st["ci_low"], st["ci_high"]] if st else None, 2),
                    html.escape(", ".join(f"{k} {v:+.3g}" for k, v in delta.items())) or "n/a",
                    html.escape(_corr_text(c.get("correlations") or {})) or "n/a",
                    html.escape(
                        f"{drv['kind']} L{drv['layer']}.{drv['index']} ({drv['score']:+.3g})"
                    )
                    if drv
                    else "n/a",
                )
            )
        out.append(
            _table(
                rows,
                [
                    "neuron",
                    "weight",
                    "promotes",
                    "Cohen's d [95% CI]",
                    "zero-ablation change",
                    "Spearman with label / length / confidence",
                    "top driver",
                ],
            )
        )
        out.append(
            _how(
                "One row per neuron. <b>Promotes</b>: tokens its output direction raises most. "
                "<b>Cohen's d</b>: hallucinated minus faithful mean activation over answer "
                "tokens, in pooled standard deviations. <b>Zero-ablation</b>: the change in each "
                "metric with the neuron silenced. <b>Spearman</b>: rank correlation of its mean "
                "answer-token activation with the label (hallucinated = 1), the answer length in "
                "tokens and the model's mean answer log-prob; a neuron that tracks length or "
                "confidence more than the label is a confound, not a hallucination detector. "
                "<b>Top driver</b>: the upstream neuron or head with the largest attribution to "
                "it."
            )
        )
        topk = _cards_topk(cards)
        if topk is not None:
            out.append("<h3>Top-activating examples</h3>" + topk.body_html())
    together = summary.get("ablation_all")
    if together:
        out.append(f"<h3>Zero-ablating all {together['n_neurons']} H-neurons at once</h3>")
        out.append(
            _table(
                [
                    (
                        html.escape(k),
                        _num(together["baseline"].get(k)),
                        _num(together["ablated"].get(k)),
                        _num(v, sign=True),
                    )
                    for k, v in together["delta"].items()
                ],
                ["metric", "unablated", "ablated", "change"],
            )
        )
    agree = summary.get("atp_vs_exact")
    if agree and "n_neurons" in agree:
        hn = agree.get("h_neurons") or {}
        out.append("<h3>Attribution patching against exact patching</h3>")
        out.append(
            _table(
                [
                    (
                        "all sampled neurons",
                        agree["n"],
                        _num(agree["pearson"]),
                        _num(agree["spearman"]),
                        f"{agree['top_overlap']:.2f} (top {agree['top']})",
                    ),
                    (
                        "H-neurons only",
                        hn.get("n"),
                        _num(hn.get("pearson")),
                        _num(hn.get("spearman")),
                        f"{hn.get('top_overlap', 0):.2f} (top {hn.get('top')})",
                    ),
                ],
                ["neurons", "n", "Pearson", "Spearman", "top overlap"],
            )
        )
        out.append(
            _how(
                f"{agree['n_random']} neurons drawn at random from {agree['of_neurons']} plus "
                "every H-neuron, each patched alone at the last prompt token on "
                f"{agree['n_pairs']} (faithful, hallucinated) prompt pairs cut before the answer; "
                "the metric is the logit of the faithful answer's first token minus the "
                "hallucinated one's. Exact: "
                f"{agree['exact_seconds']} s; attribution patching: {agree['atp_seconds']} s."
            )
        )
    elif agree:
        out.append("<h3>Attribution vs exact patching</h3>")
        out.append(
            _table(
                [
                    (
                        html.escape(str(k)),
                        _num(v)
                        if not isinstance(v, (dict, list))
                        else html.escape(json.dumps(v)[:200]),
                    )
                    for k, v in summary["atp_vs_exact"].items()
                ]
            )
        )
    for p in patches:
        r = PatchResult.load(p.with_suffix(""))
        out.append(f"<h3>{html.escape(p.stem)}</h3>" + effects_view(r).body_html())
    return "".join(out)


def _corr_text(corr: Mapping[str, float]) -> str:
    keys = (("hallucinated", "label"), ("span_tokens", "length"), ("answer_logprob", "conf."))
    return ", ".join(f"{name} {corr[k]:+.2f}" for k, name in keys if corr.get(k) is not None)


def _is_patch(p: Path) -> bool:
    if not p.with_suffix(".safetensors").is_file():
        return False
    d = _read(p)
    return isinstance(d, dict) and {"target", "method", "direction"} <= set(d)


def _cards_topk(cards: Sequence[Mapping[str, Any]]) -> View | None:
    """A top-k view from the cards' top examples (activation known at the peak token only)."""
    import torch

    have = [c for c in cards if c.get("top_examples")]
    if not have:
        return None
    k = min(len(c["top_examples"]) for c in have)
    names = [f"L{c['neuron']['layer']}.{c['neuron']['index']}" for c in have]
    rows = [(j, ex) for j, c in enumerate(have) for ex in c["top_examples"][:k]]
    width = max(len(ex["context"]) for _, ex in rows)
    acts = torch.zeros(len(rows), width, len(have))
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (j, ex) in enumerate(rows):
        acts[i, ex["focus"], j] = float(ex["activation"])
        mask[i, : len(ex["context"])] = True
    toks = [list(ex["context"]) + [""] * (width - len(ex["context"])) for _, ex in rows]
    caption = (
        "Each neuron's strongest examples, its peak token colored (<code>hlens explain</code> "
        "stores the activation at the peak only)."
    )
    return topk_samples(toks, acts, names, k=k, mask=mask, window=None, caption=caption)


def _origin_section(s: Mapping[str, Any]) -> str:
    t, inert = s.get("transfer") or {}, s.get("inertia") or {}
    items = []
    if t:
        items.append(
            ("probe transfer AUROC on the base model [95% CI]", _ci(t.get("auroc"), t.get("ci")))
        )
    if inert:
        items.append(("H-neuron mean inertia rank", _num(inert.get("mean_rank"))))
        items.append(("p-value (vs random neurons)", _num(inert.get("p_value"), 4)))
    out = [_cards(items)] if items else []
    ranks = inert.get("ranks")
    h_ranks = inert.get("h_ranks")
    if h_ranks is None and isinstance(inert.get("per_neuron"), list):
        h_ranks = [x.get("rank") for x in inert["per_neuron"] if isinstance(x, Mapping)]
    if ranks is not None and h_ranks is not None:
        out.append(_fig(plots.inertia_ranks(ranks, [r for r in h_ranks if r is not None])))
    out.append(
        _how(
            "<b>Transfer</b>: the probe trained on the tuned model applied unchanged to the base "
            "model's activations; a high AUROC means the H-neurons already predicted hallucination "
            "before fine-tuning. <b>Inertia</b>: every neuron is ranked by how much its parameters "
            "changed in fine-tuning, normalised to [0, 1] (0 = changed most); random neurons "
            "average 0.5, and the one-sided p-value tests whether the H-neurons changed less (a "
            "higher mean rank) than layer-matched random sets."
        )
    )
    return "".join(out)


# -- the page -------------------------------------------------------------------------------------
_CSS = """
h1{margin-bottom:0}.sub{color:#666;margin-top:4px}nav a{margin-right:14px}
section{border-top:1px solid #ddd;margin-top:28px}
table{border-collapse:collapse;margin:10px 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:4px 9px;vertical-align:top}th{background:#f6f6f6}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:170px}
.card .v{font-size:1.35em;font-weight:600}.card .l{color:#666;font-size:.85em}
.ci{color:#777;font-weight:normal;font-size:.85em}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}.figs img{max-height:340px}
details.how{background:#f7f9fc;border-left:3px solid #8aa4c8;padding:4px 10px;margin:8px 0}
details.how summary{cursor:pointer;color:#345}.err{background:#fff4f4;border-left:3px solid #c53030;
padding:6px 10px;white-space:pre-wrap;font-family:monospace;font-size:.85em}
p.ex{margin:14px 0 0 0;font-size:.9em}
"""


def build_report(
    run_dir: str | Path,
    *,
    model: str | None = None,
    views: bool = True,
    n_examples: int = 4,
    device: str | None = None,
) -> str:
    """The report page of a run directory, as an HTML string.

    Args:
        run_dir: a directory written by ``hlens find`` (and optionally steer/explain/origin).
        model: the model for the token views (default: the run's ``config.json``).
        views: render the token views (loads the model; skipped when it cannot be loaded).
        n_examples: test responses shown in the token views.
        device: torch device for the model.

    Raises:
        FileNotFoundError: if ``run_dir`` does not exist or holds none of the known results.

    Example:
        >>> html = build_report("runs/organism", views=False)  # doctest: +SKIP
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}")
    sections: list[Section] = []

    def add(anchor: str, heading: str, make: Callable[[], str | None]) -> None:
        try:
            body = make()
        except Exception as e:  # one broken part must not take the page down
            print(f"hlens report: section {heading!r} failed: {e!r}", file=sys.stderr)
            tb = "".join(traceback.format_exception_only(type(e), e)).strip()
            body = f"<div class='err'>This section could not be rendered: {html.escape(tb)}</div>"
        if body:
            sections.append((anchor, heading, body))

    find: dict[str, Any] | None = None
    if (run / "summary.json").is_file():
        try:
            find = _typed(FindResult, run / "summary.json")
        except ValueError as e:  # a damaged or foreign file: say so in its section
            msg = str(e)

            def broken() -> str:
                raise ValueError(msg)

            add("find", "Which neurons predict hallucination (hlens find)", broken)
    if find:
        add(
            "find",
            "Which neurons predict hallucination (hlens find)",
            lambda: _find_section(run, find),
        )
        if views:
            add(
                "views",
                "Token-level views",
                lambda: _views_section(run, find, model, n_examples, device),
            )
    if (run / "steer" / "summary.json").is_file():
        add(
            "steer",
            "Steering the H-neurons (hlens steer)",
            lambda: _steer_file(run / "steer" / "summary.json"),
        )
    if (run / "explain").is_dir():
        add("explain", "What the H-neurons do (hlens explain)", lambda: _explain_section(run))
    if (run / "origin" / "summary.json").is_file():
        add(
            "origin",
            "Where they come from (hlens origin)",
            lambda: _origin_section(_typed(OriginResult, run / "origin" / "summary.json")),
        )
    if not sections:
        raise FileNotFoundError(
            f"{run} holds none of summary.json, steer/summary.json, explain/cards.json, "
            "origin/summary.json; run `hlens find --out DIR` first"
        )
    f = find or {}
    title = f"hlens report: {f.get('model', run.name)}"
    sub = " &middot; ".join(
        html.escape(str(x))
        for x in (
            f"dataset {f['dataset']}" if f.get("dataset") else None,
            f"{f['n_layers']} layers x {f['d_mlp']} neurons" if f.get("n_layers") else None,
            f"hlens {f['hlens_version']}" if f.get("hlens_version") else None,
            f"run {run.resolve().name}",
            time.strftime("%Y-%m-%d %H:%M"),
        )
        if x
    )
    nav = "".join(f"<a href='#{a}'>{html.escape(h.split(' (')[0])}</a>" for a, h, _ in sections)
    body = "".join(
        f"<section id='{a}'><h2>{html.escape(h)}</h2>{b}</section>" for a, h, b in sections
    )
    doc = f"<style>{_CSS}</style><h1>{html.escape(title)}</h1><p class='sub'>{sub}</p>"
    doc += f"<nav>{nav}</nav>{body}"
    return page(title, doc, bundle="CircuitsVis.render" in body)


def write_report(run_dir: str | Path, out: str | Path | None = None, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``out`` (default ``RUN_DIR/report.html``); returns the path.

    Example:
        >>> write_report("runs/organism")  # doctest: +SKIP
        PosixPath('runs/organism/report.html')
    """
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    text = build_report(run_dir, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
