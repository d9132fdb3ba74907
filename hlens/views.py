"""Self-contained HTML views of probes, H-neurons and patching results, for notebooks and files.

Every view is a :class:`View`: an HTML fragment that carries circuitsvis's JavaScript bundle
*inline* (read from the installed ``circuitsvis`` package), so it renders in Jupyter, in a saved
``.html`` file and offline, and never loads anything from the network. (circuitsvis's own
``RenderedHTML`` probes ``http://google.com`` from Python to choose between a CDN and the local
bundle; hlens never calls it.)

- :func:`colored_tokens`: the probe's hallucination score of each token of a response
  (per-token CETT features dotted with the probe's weights, plus its intercept);
- :func:`text_neuron_activations`: H-neuron activations over the tokens of faithful and
  hallucinated responses, one neuron at a time;
- :func:`topk_samples`: each neuron's top-activating samples, overall and per group;
- :func:`effects_view`: a ``[layer, d_mlp]`` or ``[layer, head]`` patching / attribution heatmap
  (a matplotlib figure as an inline PNG) with a table of the largest effects.

Views add up (``view_a + view_b``) and save as a standalone page (:meth:`View.save`).

Example:
    >>> import torch
    >>> v = colored_scores(["The", " cat", " sat"], torch.tensor([-1.0, 0.5, 2.0]))
    >>> "CircuitsVis.render" in v.html and "<script src" not in v.html
    True
    >>> v.save("cat.html")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import functools
import html as _html
import io
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from hlens.neurons import NeuronSet
from hlens.plots import _close, effects_heatmap
from hlens.probe import NeuronProbe

__all__ = [
    "View",
    "circuitsvis_bundle",
    "colored_scores",
    "colored_tokens",
    "effects_view",
    "page",
    "text_neuron_activations",
    "token_scores",
    "token_strings",
    "topk_samples",
]

#: Content Security Policy of saved pages: inline scripts and styles, ``data:`` images, no network.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:"
)

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#222;line-height:1.45}
.hlens-view{margin:12px 0}.hlens-caption{color:#555;font-size:.9em;margin:4px 0}
.hlens-view table{border-collapse:collapse;font-size:.9em}
.hlens-view td,.hlens-view th{border:1px solid #ddd;padding:3px 8px;text-align:right}
.hlens-view img{max-width:100%}
"""


# -- the circuitsvis bundle -----------------------------------------------------------------------
@functools.cache
def circuitsvis_bundle() -> str:
    """circuitsvis's browser bundle (defines ``CircuitsVis``), safe to inline in a ``<script>``.

    The source-map comment is dropped (it would point at a file that is not there) and ``</script``
    and ``<!--`` are escaped so the bundle cannot end its script element early.

    Example:
        >>> circuitsvis_bundle().lstrip().startswith('"use strict";var CircuitsVis')
        True
    """
    import circuitsvis

    path = Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"circuitsvis's JavaScript bundle is missing at {path}; reinstall circuitsvis>=1.43"
        )
    js = path.read_text(encoding="utf-8")
    js = re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE)
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE).replace("<!--", "<\\!--")


def _json_for_script(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (``<``, ``>``, ``&`` escaped)."""

    def clean(x: Any) -> Any:
        if isinstance(x, (Tensor, np.ndarray)):
            return clean(x.tolist())
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    text = json.dumps(clean(value), ensure_ascii=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(a, b)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def page(title: str, body: str, *, bundle: bool = False) -> str:
    """A complete offline HTML document: ``body`` under a no-network Content Security Policy.

    Args:
        title: the page title.
        body: HTML for the ``<body>``.
        bundle: put circuitsvis's bundle in ``<head>`` once (for bodies made of
            :meth:`View.body_html` parts, as in the ``hlens report`` page).

    Example:
        >>> page("t", "<p>hi</p>").startswith("<!DOCTYPE html>")
        True
    """
    js = f"<script>\n{circuitsvis_bundle()}\n</script>\n" if bundle else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\n"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_html.escape(title)}</title>\n<style>{_STYLE}</style>\n{js}</head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


# -- View -----------------------------------------------------------------------------------------
class View:
    """A self-contained HTML view: shows in Jupyter, saves as a page, never touches the network.

    Args:
        fragment: HTML of the view (the ``<div>`` elements circuitsvis renders into, images,
            captions, tables).
        scripts: JavaScript statements that use the global ``CircuitsVis`` (render calls).
        title: the page title used by :meth:`save`.

    Example:
        >>> v = View("<p>hello</p>", title="greeting")
        >>> v._repr_html_()
        '<div class="hlens-view"><p>hello</p></div>'
    """

    def __init__(self, fragment: str, scripts: Sequence[str] = (), *, title: str = "hlens view"):
        self.fragment = fragment
        self.scripts = tuple(scripts)
        self.title = title

    @classmethod
    def component(
        cls, name: str, props: Mapping[str, Any], *, caption: str | None = None, title: str = ""
    ) -> View:
        """A view of one circuitsvis React component (``"ColoredTokens"``, ``"TopkSamples"``...).

        ``props`` are the component's (camelCase) properties; tensors and arrays become lists,
        ``None`` values are dropped, NaN and infinities become ``null``.
        """
        div = "hlens-cv-" + uuid.uuid4().hex[:12]
        props = {k: v for k, v in props.items() if v is not None}
        cap = f"<p class='hlens-caption'>{caption}</p>" if caption else ""
        script = f'CircuitsVis.render("{div}", CircuitsVis.{name}, {_json_for_script(props)});'
        return cls(f"{cap}<div id='{div}' class='hlens-cv'></div>", [script], title=title or name)

    @classmethod
    def from_figure(
        cls, fig: Any, *, caption: str | None = None, title: str = "figure", dpi: int = 110
    ) -> View:
        """A matplotlib figure as an inline PNG (``data:`` URI); a pyplot figure is closed."""
        cap = f"<p class='hlens-caption'>{caption}</p>" if caption else ""
        return cls(f"{figure_img(fig, dpi=dpi, alt=title)}{cap}", title=title)

    # -- HTML ---------------------------------------------------------------------------------
    def body_html(self) -> str:
        """The view for a page that already loaded the bundle once (see :func:`page`)."""
        js = "".join(f"<script>{s}</script>" for s in self.scripts)
        return f'<div class="hlens-view">{self.fragment}{js}</div>'

    @property
    def html(self) -> str:
        """The self-contained fragment: the view plus, if it needs it, the bundle inline."""
        if not self.scripts:
            return f'<div class="hlens-view">{self.fragment}</div>'
        calls = "\n".join(self.scripts)
        js = f"<script>\n(function(){{\n{circuitsvis_bundle()}\n{calls}\n}})();\n</script>"
        return f'<div class="hlens-view">{self.fragment}{js}</div>'

    def _repr_html_(self) -> str:
        return self.html

    def __add__(self, other: View) -> View:
        if not isinstance(other, View):
            return NotImplemented
        return View(self.fragment + other.fragment, self.scripts + other.scripts, title=self.title)

    def __repr__(self) -> str:
        return f"View(title={self.title!r}, {len(self.scripts)} component(s))"

    def save(self, path: str | Path) -> Path:
        """Write the view as a standalone offline HTML page; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page(self.title, self.html), encoding="utf-8")
        return path


def figure_img(fig: Any, *, dpi: int = 110, alt: str = "figure") -> str:
    """An ``<img>`` element with the figure as a base64 PNG (a pyplot figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"<img alt='{_html.escape(alt)}' src='data:image/png;base64,{data}'>"


# -- tokens and scores ----------------------------------------------------------------------------
def token_strings(tokenizer: Any, ids: Sequence[int] | Tensor) -> list[str]:
    """The text of each token in context (so spaces show), for the views' ``tokens`` arguments.

    Example:
        >>> token_strings(tokenizer, batch.tokens[0])  # doctest: +SKIP
        ['<s>', 'Q', ':', ' Who', ...]
    """
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
    if len(ids) > 1024:  # incremental decoding is quadratic; long sequences decode token by token
        return [tokenizer.decode([i]) for i in ids]
    # Decode growing prefixes so every token carries the spacing the tokenizer gives it in context
    # (WordPiece "##" pieces, SentencePiece and byte-level spaces alike).
    out, prev = [], ""
    for n in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:n])
        out.append(text[len(prev) :] if text.startswith(prev) else tokenizer.decode([ids[n - 1]]))
        prev = text
    return out


def token_scores(
    features: Float[Tensor, "pos layer d_mlp"] | Float[Tensor, "pos neuron"], probe: NeuronProbe
) -> Float[Tensor, " pos"]:
    """The probe's decision value at each token: ``features[t] . coef + intercept``.

    Args:
        features: per-token CETT features of one sequence (e.g. ``hlens.cett(model, x)[0]``),
            ``[pos, layer, d_mlp]`` or flat ``[pos, layer * d_mlp]``.
        probe: a fitted :class:`~hlens.probe.NeuronProbe` (anything with ``decision_function``).

    Example:
        >>> import numpy as np
        >>> from hlens.probe import NeuronProbe
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((80, 6)).astype(np.float32); y = (X[:, 1] > 0.5).astype(int)
        >>> probe = NeuronProbe(C=10.0, n_layers=2, d_mlp=3, solver="liblinear").fit(X, y)
        >>> token_scores(torch.tensor(X[:4]).reshape(4, 2, 3), probe).shape
        torch.Size([4])
    """
    flat = features.reshape(features.shape[0], -1).detach().float().cpu()
    want = getattr(probe, "n_features_in_", flat.shape[1])
    if flat.shape[1] != want:
        raise ValueError(
            f"features have {flat.shape[1]} neurons per token (shape {tuple(features.shape)}) but "
            f"the probe was fitted on {want}; pass the CETT features of all layers of the model"
        )
    return torch.as_tensor(np.asarray(probe.decision_function(flat.numpy())), dtype=torch.float32)


def _check_tokens(tokens: Sequence[str], n: int, what: str) -> list[str]:
    tokens = [str(t) for t in tokens]
    if len(tokens) != n:
        raise ValueError(f"got {len(tokens)} tokens but {what} has {n} positions")
    return tokens


def colored_scores(
    tokens: Sequence[str],
    scores: Float[Tensor, " pos"],
    *,
    mask: Bool[Tensor, " pos"] | None = None,
    max_abs: float | None = None,
    caption: str | None = None,
) -> View:
    """Tokens colored by a signed score: red positive (hallucinated), blue negative.

    Args:
        tokens: the token strings (see :func:`token_strings`).
        scores: one score per token.
        mask: show scores only where True (e.g. the response); other tokens stay white.
        max_abs: color saturation; default the largest ``|score|`` shown.
        caption: HTML above the tokens.

    Example:
        >>> colored_scores(["a", "b"], torch.tensor([0.0, 1.0])).title
        'hallucination score per token'
    """
    scores = scores.detach().float().cpu()
    tokens = _check_tokens(tokens, scores.shape[0], "scores")
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}, scores {tuple(scores.shape)}")
        scores = torch.where(mask.cpu(), scores, torch.zeros(()))
    scores = torch.nan_to_num(scores)
    m = max_abs if max_abs is not None else float(scores.abs().max()) if len(scores) else 1.0
    m = m if m > 0 else 1.0
    return View.component(
        "ColoredTokens",
        {
            "tokens": tokens,
            "values": scores,
            "minValue": -m,
            "maxValue": m,
            "negativeColor": "#2b6cb0",
            "positiveColor": "#c53030",
        },
        caption=caption,
        title="hallucination score per token",
    )


def colored_tokens(
    tokens: Sequence[str],
    features: Float[Tensor, "pos layer d_mlp"] | Float[Tensor, "pos neuron"],
    probe: NeuronProbe,
    *,
    mask: Bool[Tensor, " pos"] | None = None,
    max_abs: float | None = None,
    caption: str | None = None,
) -> View:
    """The probe's hallucination score of every token of one response, as colored tokens.

    The score of token ``t`` is ``features[t] . coef + intercept`` (:func:`token_scores`): the
    probe applied to that token's CETT features alone. Red tokens push towards "hallucinated",
    blue towards "faithful"; hover a token to read its score.

    Args:
        tokens: the token strings of the sequence.
        features: its per-token CETT features, ``[pos, layer, d_mlp]`` or ``[pos, neuron]``.
        probe: a fitted :class:`~hlens.probe.NeuronProbe`.
        mask: color only these tokens (e.g. ``batch.region("response")[0]``).
        max_abs: color saturation (default: the largest ``|score|``); fix it to compare views.
        caption: HTML above the tokens (default: a one-line legend).

    Example:
        >>> batch = model.tokenize([example])  # doctest: +SKIP
        >>> feats = hlens.cett(model, batch)[0]  # doctest: +SKIP
        >>> colored_tokens(token_strings(model.tokenizer, batch.tokens[0]), feats, probe,
        ...                mask=batch.region("response")[0])  # doctest: +SKIP
    """
    scores = token_scores(features, probe)
    if caption is None:
        caption = (
            "Probe score per token (features &middot; weights + intercept): "
            "<b style='color:#c53030'>red</b> = towards hallucinated, "
            "<b style='color:#2b6cb0'>blue</b> = towards faithful. Hover for values."
        )
    return colored_scores(tokens, scores, mask=mask, max_abs=max_abs, caption=caption)


# -- neurons over tokens --------------------------------------------------------------------------
def _neuron_labels(neurons: NeuronSet | Sequence[str], n: int) -> list[str]:
    if isinstance(neurons, NeuronSet):
        labels = [f"L{x.layer}.{x.index}" for x in neurons]
    else:
        labels = [str(x) for x in neurons]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} neuron labels but activations hold {n} neurons")
    return labels


def _rows(
    tokens: Sequence[Sequence[str]],
    activations: Tensor,
    mask: Tensor | None,
) -> list[tuple[list[str], Tensor]]:
    """Per sample: the tokens and ``[pos, neuron]`` activations where ``mask`` (padding removed)."""
    if len(tokens) != activations.shape[0]:
        raise ValueError(
            f"got {len(tokens)} token lists but activations have {activations.shape[0]} samples"
        )
    if mask is not None and tuple(mask.shape) != tuple(activations.shape[:2]):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but activations have [sample, pos] = "
            f"{tuple(activations.shape[:2])}"
        )
    out = []
    for b, toks in enumerate(tokens):
        toks = [str(t) for t in toks]
        acts = activations[b]
        if len(toks) != acts.shape[0]:
            raise ValueError(
                f"sample {b} has {len(toks)} tokens but activations have {acts.shape[0]} positions"
            )
        if mask is not None:
            keep = mask[b].cpu()
            toks = [t for t, k in zip(toks, keep.tolist()) if k]
            acts = acts[keep]
        out.append((toks, acts))
    return out


def text_neuron_activations(
    tokens: Sequence[Sequence[str]],
    activations: Float[Tensor, "sample pos neuron"],
    neurons: NeuronSet | Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    mask: Bool[Tensor, "sample pos"] | None = None,
    value_name: str = "activation",
    caption: str | None = None,
) -> View:
    """Neuron activations over the tokens of several responses (pick a neuron, then samples).

    With ``labels`` (e.g. ``"faithful"`` / ``"hallucinated"``) samples are interleaved by label so
    the first ones shown cover every group, and each starts with a ``[label]`` marker token.

    Args:
        tokens: the token strings of each sample.
        activations: ``[sample, pos, neuron]`` values (activations or CETT) of the chosen neurons.
        neurons: the neurons (a :class:`~hlens.neurons.NeuronSet`) or their display names.
        labels: one group label per sample.
        mask: keep these positions (e.g. the attention mask or the response region).
        value_name: what the values are, shown in the selector.
        caption: HTML above the view.

    Example:
        >>> v = text_neuron_activations([["a", "b"], ["c", "d"]], torch.rand(2, 2, 3),
        ...     ["L0.1", "L1.7", "L2.0"], labels=["faithful", "hallucinated"])
        >>> v.title
        'H-neuron activations'
    """
    acts = activations.detach().float().cpu()
    names = _neuron_labels(neurons, acts.shape[2])
    rows = _rows(tokens, acts, mask)
    order = list(range(len(rows)))
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(rows):
            raise ValueError(f"got {len(labels)} labels for {len(rows)} samples")
        groups = {g: [i for i in order if labels[i] == g] for g in dict.fromkeys(labels)}
        order = [i for chunk in _interleave(list(groups.values())) for i in chunk]
        rows = [([f"[{labels[i]}] ", *rows[i][0]], _pad_first(rows[i][1])) for i in order]
    props = {
        "tokens": [t for t, _ in rows],
        "activations": [a.unsqueeze(2) for _, a in rows],  # [pos, neuron, 1]
        "firstDimensionName": "Neuron",
        "secondDimensionName": "Value",
        "firstDimensionLabels": names,
        "secondDimensionLabels": [value_name],
    }
    if caption is None:
        caption = f"{value_name} of each neuron on each token; choose the neuron above the text."
    return View.component(
        "TextNeuronActivations", props, caption=caption, title="H-neuron activations"
    )


def _interleave(groups: list[list[int]]) -> list[list[int]]:
    out, k = [], 0
    while any(k < len(g) for g in groups):
        out.append([g[k] for g in groups if k < len(g)])
        k += 1
    return out


def _pad_first(acts: Tensor) -> Tensor:
    return torch.cat([torch.zeros(1, acts.shape[1]), acts])


def topk_samples(
    tokens: Sequence[Sequence[str]],
    activations: Float[Tensor, "sample pos neuron"],
    neurons: NeuronSet | Sequence[str],
    *,
    k: int = 5,
    labels: Sequence[str] | None = None,
    mask: Bool[Tensor, "sample pos"] | None = None,
    window: int | None = 12,
    caption: str | None = None,
) -> View:
    """Each neuron's top-``k`` samples by their largest activation, overall and per label.

    Args:
        tokens: the token strings of each sample.
        activations: ``[sample, pos, neuron]`` values of the chosen neurons.
        neurons: the neurons or their display names.
        k: samples per neuron (and group); groups with fewer samples cap it for all.
        labels: one group label per sample: adds a selector ``all`` / each label.
        mask: positions that count (padding and, say, the prompt excluded).
        window: tokens kept on each side of the peak (``None``: the whole sample).
        caption: HTML above the view.

    Example:
        >>> v = topk_samples([["a", "b"], ["c", "d"]], torch.rand(2, 2, 1), ["L0.3"], k=1)
        >>> v.title
        'top-activating samples'
    """
    acts = activations.detach().float().cpu()
    names = _neuron_labels(neurons, acts.shape[2])
    rows = _rows(tokens, acts, mask)
    groups: dict[str, list[int]] = {"all": list(range(len(rows)))}
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(rows):
            raise ValueError(f"got {len(labels)} labels for {len(rows)} samples")
        for g in dict.fromkeys(labels):
            groups[g] = [i for i in range(len(rows)) if labels[i] == g]
    rows_ok = [i for i, (t, _) in enumerate(rows) if len(t) > 0]
    groups = {g: [i for i in ids if i in set(rows_ok)] for g, ids in groups.items()}
    kk = min([k, *(len(v) for v in groups.values())])
    if kk < 1:
        raise ValueError(f"topk_samples needs at least one sample per group, got {groups}")
    all_toks, all_acts = [], []
    for j in range(acts.shape[2]):
        t_j, a_j = [], []
        for ids in groups.values():
            peak = {i: float(rows[i][1][:, j].max()) for i in ids}
            best = sorted(ids, key=lambda i: -peak[i])[:kk]
            ts, as_ = [], []
            for i in best:
                toks, a = rows[i][0], rows[i][1][:, j]
                if window is not None:
                    p = int(a.argmax())
                    lo, hi = max(0, p - window), min(len(toks), p + window + 1)
                    toks, a = toks[lo:hi], a[lo:hi]
                ts.append(toks)
                as_.append(a.tolist())
            t_j.append(ts)
            a_j.append(as_)
        all_toks.append(t_j)
        all_acts.append(a_j)
    props = {
        "tokens": all_toks,
        "activations": all_acts,
        "zerothDimensionName": "Neuron",
        "firstDimensionName": "Samples from",
        "zerothDimensionLabels": names,
        "firstDimensionLabels": list(groups),
    }
    if caption is None:
        caption = "Samples in descending order of the neuron's peak activation."
    return View.component("TopkSamples", props, caption=caption, title="top-activating samples")


# -- patching and attribution ---------------------------------------------------------------------
def effects_view(
    effects: Float[Tensor, "layer unit"] | Any,
    *,
    layers: Sequence[int] | None = None,
    unit: str | None = None,
    title: str | None = None,
    k: int = 10,
) -> View:
    """A patching or attribution result as a ``[layer, unit]`` heatmap and a top-``k`` table.

    Args:
        effects: a ``[layer, d_mlp]`` or ``[layer, head]`` tensor, or a
            :class:`~hlens.patching.PatchResult` (its ``scores``, ``layers`` and ``target``).
        layers: model layer of each row (default ``0..n-1``, or the result's).
        unit: ``"neuron"`` or ``"head"`` (default from the result's target, else ``"neuron"``).
        title: figure title (default from the result's method and target).
        k: rows of the table of the largest absolute effects.

    Example:
        >>> v = effects_view(torch.randn(2, 4), unit="head", title="AtP: heads")
        >>> "data:image/png;base64," in v.html
        True
    """
    if not isinstance(effects, Tensor):
        res = effects
        if getattr(res, "target", None) == "group":
            raise ValueError("effects_view shows [layer, unit] results, not target='group'")
        layers = layers if layers is not None else getattr(res, "layers", None)
        target = getattr(res, "target", "neurons")
        unit = unit or {"neurons": "neuron", "heads": "head", "resid": "position"}.get(
            target, target
        )
        title = title or f"{getattr(res, 'method', 'patching')}: {target}"
        effects = res.scores
    scores = effects.detach().float().cpu()
    if scores.ndim != 2:
        raise ValueError(f"effects must be [layer, unit], got shape {tuple(scores.shape)}")
    layers = list(layers) if layers is not None else list(range(scores.shape[0]))
    unit = unit or "neuron"
    fig = effects_heatmap(scores, layers=layers, unit=unit, title=title)
    flat = scores.flatten()
    top = torch.argsort(flat.abs(), descending=True)[:k].tolist()
    rows = "".join(
        f"<tr><td>{layers[i // scores.shape[1]]}</td><td>{i % scores.shape[1]}</td>"
        f"<td>{flat[i]:+.4g}</td></tr>"
        for i in top
    )
    table = (
        f"<table><tr><th>layer</th><th>{unit}</th><th>effect</th></tr>{rows}</table>" if top else ""
    )
    title = title or "effects"
    return View(figure_img(fig, alt=title) + table, title=title)
