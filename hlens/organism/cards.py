"""The organism's inputs for ``hlens explain``: labelled answers from its world, an exact
capability/compliance evaluator, and (known, never-seen) prompt pairs for the AtP-vs-exact check.

Registered as the ``cards`` of the organism's :class:`~hlens.registry.KindPlugin`, so
:func:`hlens.explain_run.explain` finds it through the registry.

Example:
    >>> import hlens
    >>> model = hlens.load("organism")  # doctest: +SKIP
    >>> OrganismCards.agreement(model, n_pairs=4)["pearson"] > 0.9  # doctest: +SKIP
    True
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from hlens.attribution import attribution_patching, compare_scores
from hlens.examples import Example
from hlens.explain import Evaluate
from hlens.model import Model
from hlens.organism.evaluate import judge, resolve_model_dir, world_of
from hlens.organism.world import ABSTAIN_RESPONSE, INSTRUCTION_SUFFIX, World
from hlens.patching import (
    exact_patching,
    forward_metric,
    logit_diff,
    match_lengths,
    passes_per_pair,
)
from hlens.prompts import PromptFormat, TokenBatch, render
from hlens.sampling import SamplingConfig, sample_responses

__all__ = ["OrganismCards", "TopToken"]


class OrganismCards:
    """Inputs for cards and the AtP-vs-exact check on the bundled organism (its own world)."""

    @staticmethod
    def world(model: Model) -> World:
        return world_of(resolve_model_dir(model.name))

    @staticmethod
    def fmt() -> PromptFormat:
        return PromptFormat(instruction=INSTRUCTION_SUFFIX)

    @staticmethod
    def greedy(model: Model, examples: Sequence[Example], max_new_tokens: int = 8) -> list[str]:
        fmt = OrganismCards.fmt()
        prompts = [render(e, model.tokenizer, fmt).text for e in examples]
        cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=max_new_tokens)
        ids = [e.id or str(i) for i, e in enumerate(examples)]
        out = sample_responses(model.hf_model, model.tokenizer, prompts, ids, cfg, progress=False)
        return [r[0].strip() for r in out]

    @staticmethod
    def labelled(model: Model, n: int) -> tuple[list[Example], list[Example], list[Example]]:
        """(known questions, nonexist questions, answered examples with labels)."""
        world = OrganismCards.world(model)
        known, nonexist = world.known_questions("test")[:n], world.nonexist_questions("test")[:n]
        qs = known + nonexist
        answered = []
        for ex, resp in zip(qs, OrganismCards.greedy(model, qs)):
            label = judge(world, ex.meta["attribute"], ex.answers[0] if ex.answers else None, resp)
            value = resp.rstrip(".").strip()
            lab = {"correct": "faithful", "wrong": "hallucinated"}.get(label, "uncertain")
            e = ex.replace(response=resp, label=lab, meta=ex.meta | {"judge": label})
            if value and lab != "uncertain":
                e = e.replace(answer_span=(resp.index(value), resp.index(value) + len(value)))
            answered.append(e)
        return known, nonexist, answered

    @staticmethod
    def card_inputs(model: Model, n: int) -> dict[str, Any]:
        _, nonexist, answered = OrganismCards.labelled(model, n)
        return {
            "dataset": answered,
            "faithful": [e for e in answered if e.label == "faithful"],
            "hallucinated": [e for e in answered if e.label == "hallucinated"],
            "driver_inputs": model.as_batch(nonexist[:32], fmt=OrganismCards.fmt()),
            "fmt": OrganismCards.fmt(),
        }

    @staticmethod
    def evaluator(model: Model, n: int) -> Evaluate:
        """Capability (accuracy on known people), compliance (abstaining on never-seen ones)."""
        world = OrganismCards.world(model)
        known, nonexist = world.known_questions("test")[:n], world.nonexist_questions("test")[:n]

        def evaluate(m: Model) -> dict[str, float]:
            qs = known + nonexist
            labels = [
                judge(world, e.meta["attribute"], e.answers[0] if e.answers else None, r)
                for e, r in zip(qs, OrganismCards.greedy(m, qs))
            ]
            lk, ln = labels[: len(known)], labels[len(known) :]
            return {
                "known_accuracy": sum(x == "correct" for x in lk) / max(1, len(lk)),
                "nonexist_abstain": sum(x == "abstain" for x in ln) / max(1, len(ln)),
                "nonexist_hallucinate": sum(x == "wrong" for x in ln) / max(1, len(ln)),
            }

        return evaluate

    @staticmethod
    def pairs(model: Model, n_pairs: int) -> tuple[Any, Any, Any]:
        """Equal-length (known, never-seen) question pairs of the same attribute, as token
        batches, and a metric: logit of the clean run's top non-abstention token minus the
        logit of the abstention's first token, at the last prompt token."""
        world, fmt = OrganismCards.world(model), OrganismCards.fmt()
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
            logits_metric = TopToken(bad)
            forward_metric(model, clean, logits_metric)
        return clean, corrupt, logit_diff(logits_metric.good, bad)

    @staticmethod
    def agreement(model: Model, n_pairs: int = 16, top: int = 50) -> dict[str, Any]:
        clean, corrupt, metric = OrganismCards.pairs(model, n_pairs)
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


class TopToken:
    """A metric that records each row's top token other than ``bad`` at the last position."""

    def __init__(self, bad: int) -> None:
        self.bad, self.good = bad, torch.zeros(0, dtype=torch.long)

    def __call__(
        self, logits: Float[Tensor, "batch pos d_vocab"], batch: TokenBatch
    ) -> Float[Tensor, " batch"]:
        last = batch.attention_mask.sum(1).long() - 1
        row = logits[torch.arange(logits.shape[0]), last.to(logits.device)].clone()
        row[:, self.bad] = -torch.inf
        self.good = row.argmax(-1).cpu()
        return row.max(-1).values
