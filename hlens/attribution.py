"""Gradient-based estimates of patching effects, and direct logit attribution of neurons.

- :func:`attribution_patching` (AtP): the first-order estimate of every patch at once,
  ``(a_source - a_target) * d metric / d a`` at the target run, from one forward pass on the source
  prompts and one forward plus one backward pass on the target prompts (batched over pairs).
  ``direction="clean_to_corrupt"`` estimates patching clean activations into the corrupted run.
- :func:`integrated_gradients`: the same with the gradient averaged over ``steps`` points on the
  straight line from target to source activations of one layer (or one neuron group) at a time,
  for when the linear estimate fails (saturated attention, gated units switching on). It costs
  ``steps`` forward and backward passes per layer.
- :func:`direct_logit_attribution` (DLA): ``activation * W_out row``, pushed through the final
  norm with its scale frozen at the real run's value, onto ``W_U[good] - W_U[bad]``.

DLA approximations, by family: the final norm's scale (``1 / rms`` or ``1 / std``) is frozen at the
real run, so summing DLA over every component reproduces the pre-bias logits exactly, but one
neuron's DLA is not the logit change from removing it. LayerNorm's centering is linear and is
applied exactly. Gemma 2/3 normalise the MLP output inside the block
(``post_feedforward_layernorm``): DLA freezes that norm's scale at the real run too, so a layer's
neurons sum to its post-norm output.
Gemma 2's final logit soft-capping (``cap * tanh(x / cap)``) is *not* applied: DLA is on the
pre-cap logits. The unembedding bias is constant and attributed to no neuron.

Example:
    >>> from hlens.attribution import attribution_patching
    >>> from hlens.patching import logit_diff
    >>> res = attribution_patching(model, clean, corrupt, logit_diff(good, bad))  # doctest: +SKIP
    >>> res.scores.shape  # [layer, d_mlp]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hlens.model import Model
from hlens.neurons import NeuronSet
from hlens.patching import (
    ActivationMetric,
    Direction,
    Metric,
    PatchAt,
    PatchResult,
    Target,
    _check,
    _groups,
    _last_pos,
    _per_row,
    _repeat,
    _right_aligned,
    capture,
    forward_metric,
    group_masks,
    hook_name,
    last_token_mask,
    n_units,
    patch_pairs,
    reduce_units,
    unit_mask,
)
from hlens.prompts import TokenBatch

__all__ = [
    "attribution_patching",
    "compare_scores",
    "direct_logit_attribution",
    "integrated_gradients",
    "neuron_vocab_logits",
]


def _plan(model: Model, target: str, layers: Any, neurons: Any):
    """(hook names by layer, group masks or None, layer tuple)."""
    if target == "group":
        groups = _groups(model, neurons)
        masks = group_masks(model, groups)
        return {la: hook_name(model, target, la) for la in masks}, masks, groups, ()
    sel = model.check_layers(layers)
    return {la: hook_name(model, target, la) for la in sel}, None, None, sel


def _capture_metric(
    model: Model,
    batch: TokenBatch,
    metric: Metric | ActivationMetric,
    names: Sequence[str],
    grad: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Metric and the activations at ``names`` (leaves of the graph when ``grad``)."""
    store: dict[str, Tensor] = {}

    def grabber(name: str) -> Callable:
        def grab(t: Tensor, *, hook: Any) -> Tensor:
            if grad and not t.requires_grad:
                t = t.detach().requires_grad_(True)
            store[name] = t if grad else t.detach()
            return t

        return grab

    with torch.enable_grad() if grad else torch.no_grad():
        m = forward_metric(model, batch, metric, [(n, grabber(n)) for n in names])
    return m, store


def _finish(
    model: Model,
    target: str,
    method: str,
    direction: str,
    per_layer: dict[int, Tensor],
    masks: dict[int, Tensor] | None,
    groups: list[NeuronSet] | None,
    layers: tuple[int, ...],
    clean_m: Tensor,
    corrupt_m: Tensor,
    meta: dict[str, Any],
) -> PatchResult:
    if masks is not None:
        assert groups is not None
        per_pair = sum(per_layer[la] @ m.to(per_layer[la].dtype).T for la, m in masks.items())
        names = tuple(str(g.meta.get("name", f"group{i}")) for i, g in enumerate(groups))
        return PatchResult(
            target, method, direction, per_pair.mean(0), per_pair, (), clean_m, corrupt_m,
            names, meta,
        )  # fmt: skip
    per_pair = torch.stack([per_layer[la] for la in layers], 1)
    return PatchResult(
        target, method, direction, per_pair.mean(0), per_pair, layers, clean_m, corrupt_m, (), meta
    )


def attribution_patching(
    model: Model,
    clean: Any,
    corrupt: Any,
    metric: Metric | ActivationMetric,
    *,
    target: Target = "neurons",
    direction: Direction = "clean_to_corrupt",
    layers: Sequence[int] | None = None,
    neurons: NeuronSet | Sequence[NeuronSet] | None = None,
    batch_size: int | None = None,
    patch_at: PatchAt = "all",
) -> PatchResult:
    """Attribution patching: first-order estimates of every patch of ``target``.

    Same arguments and result layout as :func:`hlens.patching.exact_patching`; ``batch_size``
    chunks the prompt pairs. Per pair it runs 2 forward passes and 1 backward pass
    (``meta["forward_rows"]``, ``meta["backward_rows"]``). With ``patch_at="last"`` the estimate
    is the first-order term at each sequence's last token only.

    Example:
        >>> atp = attribution_patching(model, clean, corrupt, metric)  # doctest: +SKIP
        >>> atp.top(5)  # doctest: +SKIP
    """
    _check(direction, target, patch_at, metric)
    c, k = patch_pairs(model, clean, corrupt)
    names, masks, groups, sel = _plan(model, target, layers, neurons)
    n, width = len(c), c.tokens.shape[1]
    step = batch_size or n
    meta: dict[str, Any] = {"forward_rows": 0, "backward_rows": 0, "n_pairs": n}
    parts: dict[int, list[Tensor]] = {la: [] for la in names}
    metrics: list[tuple[Tensor, Tensor]] = []
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        cb, kb = _slice(c, rows), _slice(k, rows)
        src, tgt = (cb, kb) if direction == "clean_to_corrupt" else (kb, cb)
        src_m, src_a = _capture_metric(model, src, metric, list(names.values()), grad=False)
        tgt_m, tgt_a = _capture_metric(model, tgt, metric, list(names.values()), grad=True)
        live = [nm for nm in names.values() if nm in tgt_a and tgt_a[nm].requires_grad]
        grads = dict(
            zip(live, torch.autograd.grad(tgt_m.sum(), [tgt_a[x] for x in live], allow_unused=True))
        )
        meta["forward_rows"] += 2 * len(cb)
        meta["backward_rows"] += len(cb)
        for la, nm in names.items():
            g = grads.get(nm)
            if g is None or nm not in src_a:  # the metric does not depend on this layer
                u = model.d_mlp if target == "group" else n_units(model, target, width)
                parts[la].append(torch.zeros(len(cb), u, dtype=model.score_dtype))
                continue
            diff = (src_a[nm] - tgt_a[nm].detach()).to(model.score_dtype)
            prod = diff * g.to(model.score_dtype)
            if patch_at == "last":
                at = last_token_mask(cb).to(prod.device)
                prod = prod * at.view(*at.shape, *[1] * (prod.dim() - 2)).to(prod.dtype)
            parts[la].append(reduce_units(target, prod).cpu())
        tgt_m = tgt_m.detach().cpu()
        metrics.append((src_m.cpu(), tgt_m) if direction == "clean_to_corrupt" else (tgt_m, src_m))
    per_layer = {la: torch.cat(p) for la, p in parts.items()}
    clean_m = torch.cat([m[0] for m in metrics])
    corrupt_m = torch.cat([m[1] for m in metrics])
    return _finish(
        model, target, "atp", direction, per_layer, masks, groups, sel, clean_m.cpu(),
        corrupt_m.cpu(), meta,
    )  # fmt: skip


def _slice(batch: TokenBatch, rows: slice) -> TokenBatch:
    return TokenBatch(
        batch.tokens[rows],
        batch.attention_mask[rows],
        {k: v[rows] for k, v in batch.regions.items()},
        list(batch.examples[rows]),
        batch.padding_side,
    )


def integrated_gradients(
    model: Model,
    clean: Any,
    corrupt: Any,
    metric: Metric | ActivationMetric,
    *,
    steps: int = 8,
    target: Target = "neurons",
    direction: Direction = "clean_to_corrupt",
    layers: Sequence[int] | None = None,
    neurons: NeuronSet | Sequence[NeuronSet] | None = None,
    max_rows: int = 512,
) -> PatchResult:
    """Integrated-gradients patching estimates, one layer (or one group) interpolated at a time.

    Layer ``l``'s activations are set to ``a_target + alpha * (a_source - a_target)`` at ``steps``
    midpoints ``alpha = (i + 0.5) / steps`` while the rest of the model runs normally; the
    gradient averaged over ``alpha`` times ``a_source - a_target`` is the estimate. The estimates
    of one layer's units sum (up to the quadrature error) to the effect of patching the whole
    layer. Groups interpolate all their neurons at once.

    Example:
        >>> ig = integrated_gradients(model, clean, corrupt, metric, steps=8)  # doctest: +SKIP
    """
    _check(direction, target)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    c, k = patch_pairs(model, clean, corrupt)
    names, masks, groups, sel = _plan(model, target, layers, neurons)
    n = len(c)
    src_b, tgt_b = (c, k) if direction == "clean_to_corrupt" else (k, c)
    meta: dict[str, Any] = {"forward_rows": 2 * n, "backward_rows": 0, "n_pairs": n}
    src_m, src_a = _capture_metric(model, src_b, metric, list(names.values()), grad=False)
    tgt_m, tgt_a = _capture_metric(model, tgt_b, metric, list(names.values()), grad=False)
    alphas = (torch.arange(steps, dtype=model.score_dtype) + 0.5) / steps
    per_k = max(1, max_rows // n)
    dt = model.score_dtype

    def ig(patch: dict[int, Tensor | None]) -> dict[int, Tensor]:
        """Mean gradient x delta for the layers in ``patch`` (mask per layer, None = all)."""
        total = {
            la: torch.zeros_like(tgt_a[names[la]], dtype=dt, device="cpu")
            for la in patch
            if names[la] in tgt_a
        }
        for i in range(0, steps, per_k):
            a = alphas[i : i + per_k]
            kk = len(a)
            leaves: dict[int, Tensor] = {}

            def make(la: int, mask: Tensor | None, a: Tensor, leaves: dict) -> Callable:
                s, t0, kk = src_a[names[la]], tgt_a[names[la]], len(a)

                def hook(t: Tensor, *, hook: Any) -> Tensor:
                    al = a.to(t.device, t.dtype).view(kk, 1, *([1] * (t.ndim - 1)))
                    interp = (t0.unsqueeze(0) + al * (s - t0).unsqueeze(0)).reshape_as(t)
                    interp = interp.detach().requires_grad_(True)
                    leaves[la] = interp
                    if mask is None:
                        return interp
                    mm = unit_mask(target, mask.view(1, -1).to(t.device))
                    view = torch.where(
                        mm, interp.view(kk, n, *t.shape[1:]), t.view(kk, n, *t.shape[1:])
                    )
                    return view.view_as(t)

                return hook

            hooks = [
                (names[la], make(la, m, a, leaves)) for la, m in patch.items() if names[la] in tgt_a
            ]
            with torch.enable_grad():
                m = forward_metric(model, _repeat(tgt_b, kk), metric, hooks)
                las = list(leaves)
                grads = torch.autograd.grad(m.sum(), [leaves[x] for x in las], allow_unused=True)
            meta["forward_rows"] += kk * n
            meta["backward_rows"] += kk * n
            for la, g in zip(las, grads, strict=True):
                if g is not None:
                    total[la] += g.to(dt).view(kk, n, *g.shape[1:]).sum(0).cpu()
        out = {}
        for la, tot in total.items():
            delta = (src_a[names[la]] - tgt_a[names[la]]).to(dt).cpu()
            out[la] = reduce_units(target, tot / steps * delta)
        return out

    width = c.tokens.shape[1]
    if masks is not None:
        assert groups is not None
        cols = []
        for gi in range(len(groups)):
            res = ig({la: m[gi] for la, m in masks.items() if bool(m[gi].any())})
            cols.append(sum(r @ masks[la][gi].to(dt) for la, r in res.items()))
        per_pair = torch.stack(cols, 1)
        names_g = tuple(str(g.meta.get("name", f"group{i}")) for i, g in enumerate(groups))
        clean_m, corrupt_m = (src_m, tgt_m) if direction == "clean_to_corrupt" else (tgt_m, src_m)
        return PatchResult(
            target, "ig", direction, per_pair.mean(0), per_pair, (), clean_m.cpu(),
            corrupt_m.cpu(), names_g, meta | {"steps": steps},
        )  # fmt: skip
    per_layer = {}
    for la in sel:
        res = ig({la: None})
        per_layer[la] = res.get(la, torch.zeros(n, n_units(model, target, width), dtype=dt))
    clean_m, corrupt_m = (src_m, tgt_m) if direction == "clean_to_corrupt" else (tgt_m, src_m)
    return _finish(
        model, target, "ig", direction, per_layer, None, None, sel, clean_m.cpu(), corrupt_m.cpu(),
        meta | {"steps": steps},
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- DLA
def _norm_params(module: torch.nn.Module, d_model: int) -> tuple[Tensor, bool, float]:
    """``(effective weight, centers?, eps)`` of a LayerNorm or RMSNorm module (raw HF module)."""
    module = getattr(module, "original_component", module)
    if isinstance(module, torch.nn.LayerNorm):
        w = module.weight if module.weight is not None else torch.ones(d_model)
        return w.detach(), True, float(module.eps)
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = getattr(module, "eps", None)
    if eps is None:
        raise ValueError(
            f"cannot read the epsilon of norm module {type(module).__name__}; expected a LayerNorm "
            "or an RMSNorm with `eps` or `variance_epsilon`"
        )
    p = next(module.parameters())
    with torch.no_grad():  # f(1) = w_eff / sqrt(1 + eps) covers Gemma's (1 + w) convention
        w = module(torch.ones(1, d_model, dtype=p.dtype, device=p.device))[0]
    return (w.double() * (1.0 + float(eps)) ** 0.5).to(p.dtype), False, float(eps)


def _inv_scale(x: Tensor, center: bool, eps: float) -> Tensor:
    x = x.double()
    if center:
        x = x - x.mean(-1, keepdim=True)
    return torch.rsqrt(x.pow(2).mean(-1) + eps)


def _post_ffn_norm(model: Model, layer: int) -> torch.nn.Module:
    block = model.bridge.blocks[layer]
    comp = getattr(block, "ln2_post", None)
    if comp is not None:
        return getattr(comp, "original_component", comp)
    hf = getattr(block, "original_component", block)
    return hf.post_feedforward_layernorm


def _unembed(model: Model) -> Tensor:
    """``W_U`` as ``[d_vocab, d_model]`` rows (the output embedding's raw weight)."""
    return model.hf_model.get_output_embeddings().weight.detach()


def direct_logit_attribution(
    model: Model,
    inputs: Any,
    good: int | Int[Tensor, " batch"],
    bad: int | Int[Tensor, " batch"] | None = None,
    *,
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "batch layer d_mlp"]:
    """Direct logit attribution of every neuron at each sequence's last real token.

    ``activation * W_out row`` through any post-MLP norm and the final norm (scales frozen at the
    real run), dotted with ``W_U[good] - W_U[bad]`` (just ``W_U[good]`` when ``bad`` is None).
    See the module docstring for what is approximated in which family.

    Args:
        model: an :class:`hlens.Model`.
        inputs: prompts (texts, examples, token ids or a TokenBatch).
        good: token id, or one per prompt.
        bad: token id, one per prompt, or None.
        layers: layers to attribute (default all); the ``layer`` axis follows this order.

    Example:
        >>> dla = direct_logit_attribution(model, prompts, answer_id, i_id)  # doctest: +SKIP
        >>> dla.shape  # [batch, layer, d_mlp]  # doctest: +SKIP
    """
    batch = _right_aligned(model.as_batch(inputs))
    sel = model.check_layers(layers)
    fam = model.family
    names = ["ln_final.hook_in"] + [fam.activation_hook(la) for la in sel]
    if fam.post_ffn_norm:
        names += [fam.output_hook(la) for la in sel]
    store = capture(model, batch, names)
    rows = torch.arange(len(batch))
    last = _last_pos(batch)

    def at_last(name: str) -> Tensor:
        return store[name][rows, last.to(store[name].device)].double().cpu()

    w_u = _unembed(model)
    direction = w_u[_per_row(good, len(batch))].double().cpu()
    if bad is not None:
        direction = direction - w_u[_per_row(bad, len(batch))].double().cpu()
    w_f, center, eps = _norm_params(model.bridge.ln_final, model.d_model)
    u = direction * w_f.double().cpu()
    if center:  # (v - mean v) . u == v . (u - mean u)
        u = u - u.mean(-1, keepdim=True)
    u = u * _inv_scale(at_last("ln_final.hook_in"), center, eps)[:, None]
    out = []
    for la in sel:
        ul = u
        if fam.post_ffn_norm:
            w_p, c_p, e_p = _norm_params(_post_ffn_norm(model, la), model.d_model)
            ul = u * w_p.double().cpu()
            if c_p:
                ul = ul - ul.mean(-1, keepdim=True)
            ul = ul * _inv_scale(at_last(fam.output_hook(la)), c_p, e_p)[:, None]
        w_out = model.W_out(la).detach()
        proj = (ul.to(w_out.device) @ w_out.double().T).cpu()  # [batch, d_mlp]
        out.append(at_last(fam.activation_hook(la)) * proj)
    return torch.stack(out, 1).to(model.score_dtype)


def neuron_vocab_logits(model: Model, neurons: NeuronSet) -> Float[Tensor, "neuron d_vocab"]:
    """Each neuron's output direction on the vocabulary: ``W_out row`` through the norms' weights
    (scales omitted: they are positive per-token factors) onto ``W_U``.

    Example:
        >>> logits = neuron_vocab_logits(model, h_neurons)  # doctest: +SKIP
        >>> logits[0].topk(10).indices  # tokens the first neuron promotes  # doctest: +SKIP
    """
    neurons.check_model(model.n_layers, model.d_mlp, what="model")
    w_f, center, _ = _norm_params(model.bridge.ln_final, model.d_model)
    w_u = _unembed(model).to(model.score_dtype)
    rows = []
    for n in neurons:
        v = model.W_out(n.layer)[n.index].detach().to(model.score_dtype)
        if model.family.post_ffn_norm:
            w_p, c_p, _ = _norm_params(_post_ffn_norm(model, n.layer), model.d_model)
            v = v - v.mean() if c_p else v
            v = v * w_p.to(v.dtype)
        if center:
            v = v - v.mean()
        rows.append(w_u @ (v * w_f.to(v.device, v.dtype)))
    if not rows:
        return torch.zeros(0, w_u.shape[0], dtype=model.score_dtype)
    return torch.stack(rows).cpu()


def _ranks(x: Tensor) -> Tensor:
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return r


def compare_scores(
    estimate: PatchResult | Tensor, exact: PatchResult | Tensor, *, top: int = 50
) -> dict[str, float]:
    """How well estimated scores track exact ones: Pearson and Spearman correlation of the mean
    scores, and the share of the exact top-``top`` units (by absolute score) that the estimate
    also ranks in its top ``top``. With two PatchResults, also the Pearson correlation over all
    (pair, unit) scores.

    Example:
        >>> compare_scores(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]), top=1)
        {'pearson': 0.9819805060619659, 'spearman': 1.0, 'top_overlap': 1.0, 'top': 1, 'n': 3}
    """
    a = estimate.scores if isinstance(estimate, PatchResult) else estimate
    a = a.flatten().double().cpu()
    b = (exact.scores if isinstance(exact, PatchResult) else exact).flatten().double().cpu()
    if a.shape != b.shape:
        raise ValueError(f"estimate has {a.numel()} scores but exact has {b.numel()}")

    def pearson(x: Tensor, y: Tensor) -> float:
        return float(torch.corrcoef(torch.stack([x, y]))[0, 1])

    kk = min(top, a.numel())
    ta, tb = set(a.abs().topk(kk).indices.tolist()), set(b.abs().topk(kk).indices.tolist())
    out: dict[str, float] = {
        "pearson": pearson(a, b),
        "spearman": pearson(_ranks(a), _ranks(b)),
        "top_overlap": len(ta & tb) / kk,
        "top": kk,
        "n": a.numel(),
    }
    if isinstance(estimate, PatchResult) and isinstance(exact, PatchResult):
        out["pearson_per_pair"] = pearson(
            estimate.per_pair.flatten().double().cpu(), exact.per_pair.flatten().double().cpu()
        )
    return out
