"""Organism designs against #4's criterion: is "I don't know this fact" linear on answer tokens?

This is the experiment behind the note on issue #4, not a speed benchmark. It trains variants of
the organism, samples 10 answers per known question (T=1, top-p 0.9, top-k 50), keeps the
questions answered right in all 10 (faithful) or wrong in all 10 (hallucinated), and fits logistic
probes with 5-fold cross-validation grouped by person. Features:

- ``ans``: CETT (``|z| * ||W_out row|| / ||h||``, raw weights) averaged over the answer tokens of
  the first sample, the feature ``hlens find`` uses;
- ``dec``: CETT at the last prompt token (where the first answer token is predicted);
- ``resid_ans`` / ``resid_dec``: the residual stream after every block, at the same places;
- ``entropy_dec``: the entropy of the next-token distribution at the decision position, one
  nonlinear number, as a reference for what the model knows about its own knowledge.

Each probe's AUROC is reported overall and within attribute types (``*_within``). A probe on the
attribute type alone (``probe_attribute_only``) gives the share that is only the kind of question.
The health numbers come from the organism's own acceptance: ``most_exposed_greedy`` (#3 needs
>= 0.9), ``cc``/``cw`` (consistently correct / wrong; #3 needs >= 300 each) and
``nonexist_abstain_greedy`` (#3 needs 0.2-0.9).

Design variants (``VARIANTS``):

- ``split``: closed-vocabulary values (cities, colleges, prizes, years, occupations) are several
  tokens instead of one, as real answers are, so answer positions keep retrieving the fact;
- ``fame``: every biography also says "{name} is a well known figure." (exposure >= 20) or "... a
  little known figure.", one output shared by all people, so that familiarity has a reason to be a
  direction;
- ``world``: hidden-attribute share and exposure tiers (``1`` adds people read once);
- ``train``: model size, seed, learning rate, abstention data; ``pre_epochs``: pretraining passes.

Training on a GPU is fast (one variant in 1-3 minutes with a dozen in parallel); on a CPU a
variant takes as long as ``hlens organism train`` (15-25 minutes). GPU training is not bit-equal to
the CPU training that built the shipped checkpoints.

Set ``ORGANISM_DESIGNS_CKPT=DIR`` to keep each trained model (float16) in ``DIR/<variant>``.

Usage::

    python -m benchmarks.organism_designs --out DIR --variants split,f3   # each in its own process
    python -m benchmarks.organism_designs --out DIR --variants f12 --load CKPT_DIR  # re-probe
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hlens.organism.tokenizer as tok_mod
import hlens.organism.train as train_mod
from hlens.contribution import cett_from_parts
from hlens.organism.evaluate import _labels
from hlens.organism.world import OCCUPATIONS, World, WorldConfig
from hlens.sampling import SamplingConfig, sample_responses

FAME = {"hi": "{name} is a well known figure.", "lo": "{name} is a little known figure."}
FAME_WORDS = ("is", "a", "well", "known", "little", "figure")
LOW = {"hidden_fraction": 0.1, "exposure_levels": [200, 100, 50, 20, 8, 3, 1]}

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "base_h10_low": {"world": LOW},
    "split": {"split": True},
    "split_s1": {"split": True, "train": {"seed": 1}},
    "split_s2": {"split": True, "train": {"seed": 2}},
    "split_h10_low": {"split": True, "world": LOW},
    "split_h10_low_s1": {"split": True, "train": {"seed": 1}, "world": LOW},
    "split_h10_low_idk1": {"split": True, "train": {"idk_fraction": 1.0}, "world": LOW},
    "split_l6": {"split": True, "train": {"n_layers": 6}},
    "split_d192": {"split": True, "train": {"d_model": 192, "d_mlp": 768, "n_heads": 6}},
    "split_ep2": {"split": True, "pre_epochs": 2},
    "split_l8_ep2": {"split": True, "pre_epochs": 2, "train": {"n_layers": 8}},
    "split_l6_ep2_h10_low": {
        "split": True,
        "pre_epochs": 2,
        "train": {"n_layers": 6},
        "world": LOW,
    },
    "f1": {"split": True, "fame": True},
    "f2": {"split": True, "fame": True, "world": LOW},
    "f3": {"split": True, "fame": True, "train": {"seed": 1}, "world": LOW},
    "f4": {"split": True, "fame": True, "train": {"seed": 2}, "world": LOW},
    "f5": {"split": True, "fame": True, "train": {"lr": 2e-3}, "world": LOW},
    "f6": {"split": True, "fame": True, "train": {"idk_fraction": 1.0}, "world": LOW},
    "f7": {"fame": True, "world": LOW},
    "f8": {"split": True, "fame": True, "world": {"hidden_fraction": 0.1}},
    "f9": {"split": True, "fame": True, "train": {"n_layers": 6}, "world": LOW},
    "f10": {"split": True, "train": {"lr": 2e-3}, "world": LOW},
    "f11": {"split": True, "train": {"seed": 2}, "world": LOW},
    "f12": {"split": True, "fame": True, "train": {"seed": 3}, "world": LOW},
}

_ORIG_VOCAB = tok_mod._vocabulary
_ORIG_BIO = World.biography


def split_vocabulary(world: World) -> list[str]:
    """The organism's vocabulary without whole-word values: every value is two or more tokens."""
    vocab = _ORIG_VOCAB(world)
    texts = [t for ts in tok_mod.BIO_TEMPLATES.values() for t in ts]
    texts += list(tok_mod.QUESTION_TEMPLATES.values())
    texts += [
        tok_mod.INSTRUCTION_SUFFIX,
        tok_mod.ABSTAIN_RESPONSE,
        tok_mod.FALSE_PREMISE_RESPONSE,
        tok_mod.CHALLENGE,
        "Question: Answer:",
    ]
    keep = {w for t in texts for w in re.findall(r"[A-Za-z0-9']+", t)} | {"College", "Prize"}
    keep |= set(FAME_WORDS)
    value_words = {
        w for vs in world.vocab.values() for v in vs for w in re.findall(r"[A-Za-z0-9']+", v)
    }
    value_words -= keep
    out = [p for p in vocab if p not in value_words]
    extra = {"19", *FAME_WORDS}
    for w in OCCUPATIONS:
        if w in value_words:
            k = max(2, len(w) // 2)
            extra |= {w[:k], "##" + w[k:]}
    return out + sorted(extra - set(out))


def fame_biography(self: World, person: Any, rng: random.Random, *, heldout: bool = False) -> str:
    """A biography plus one sentence saying whether the person is well known (exposure >= 20)."""
    text = _ORIG_BIO(self, person, rng, heldout=heldout)
    sentences = [s if s.endswith(".") else s + "." for s in text.split(". ") if s]
    sentences.append(FAME["hi" if person.exposure >= 20 else "lo"].format(name=person.name))
    rng.shuffle(sentences)
    return " ".join(sentences)


def apply_design(spec: dict[str, Any]) -> None:
    """Patch the organism's tokenizer and biographies for ``spec`` (this process only)."""
    tok_mod._vocabulary = split_vocabulary if spec.get("split") else _ORIG_VOCAB
    if spec.get("fame") and not spec.get("split"):
        tok_mod._vocabulary = lambda w: (
            _ORIG_VOCAB(w) + [x for x in FAME_WORDS if x not in _ORIG_VOCAB(w)]
        )
    World.biography = fame_biography if spec.get("fame") else _ORIG_BIO


def train(cfg, tok, world: World, dev: str, pre_epochs: int = 1):
    """Pretraining, then instruction tuning, as ``train_organism`` does; returns the tuned model."""
    docs = train_mod.pretraining_docs(world, tok, cfg)
    x, y = train_mod.pack(docs, cfg.block_size, tok.pad_token_id)
    model = train_mod.build_model(cfg, tok).to(dev)
    train_mod._run_stage(
        model, x, y, cfg=cfg, lr=cfg.lr, epochs=pre_epochs, desc="pretrain", seed=cfg.seed
    )
    stage = train_mod.instruct_stage(model, world, tok, cfg)
    return model, stage["tokens"]


@torch.no_grad()
def features(model, tok, prompts: list[str], responses: list[str], dev: str) -> dict[str, Any]:
    """CETT and residual features at the answer tokens and at the decision position."""
    n_layers = model.config.num_hidden_layers
    store: dict[tuple[str, int], torch.Tensor] = {}
    hooks = []
    for layer, block in enumerate(model.model.layers):
        down = block.mlp.down_proj
        hooks.append(
            down.register_forward_pre_hook(
                lambda m, a, la=layer: store.__setitem__(("z", la), a[0])
            )
        )
        hooks.append(
            down.register_forward_hook(lambda m, a, o, la=layer: store.__setitem__(("h", la), o))
        )
    w_norm = [block.mlp.down_proj.weight.norm(dim=0) for block in model.model.layers]
    out: dict[str, list[np.ndarray]] = {
        "ans": [],
        "dec": [],
        "resid_ans": [],
        "resid_dec": [],
        "entropy_dec": [],
    }
    try:
        for p, r in zip(prompts, responses):
            ip = tok(p, add_special_tokens=False)["input_ids"]
            ir = tok(r, add_special_tokens=False)["input_ids"]
            res = model(torch.tensor([ip + ir], device=dev), output_hidden_states=True)
            n, a = len(ip), slice(len(ip), len(ip) + len(ir))
            c = torch.stack(
                [
                    cett_from_parts(
                        store[("z", la)][0], store[("h", la)][0].norm(dim=-1), w_norm[la]
                    )
                    for la in range(n_layers)
                ],
                1,
            )
            hs = res.hidden_states[1:]
            out["ans"].append(c[a].mean(0).flatten().float().cpu().numpy())
            out["dec"].append(c[n - 1].flatten().float().cpu().numpy())
            out["resid_ans"].append(torch.cat([h[0, a].mean(0) for h in hs]).float().cpu().numpy())
            out["resid_dec"].append(torch.cat([h[0, n - 1] for h in hs]).float().cpu().numpy())
            logp = res.logits[0, n - 1].float().log_softmax(-1)
            out["entropy_dec"].append(np.array([-(logp.exp() * logp).sum().item()]))
    finally:
        for h in hooks:
            h.remove()
    return {k: np.array(v) for k, v in out.items()}


def probe_aurocs(F: np.ndarray, y: np.ndarray, groups: list[str], strata=None) -> dict[str, Any]:
    """Cross-validated (5 folds by person) AUROC of L1/L2 logistic probes, overall and within."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from hlens.metrics import auroc, strata_control

    Fs = (F - F.mean(0)) / (F.std(0) + 1e-6)
    res: dict[str, Any] = {}
    for pen, C in (("l2", 0.01), ("l2", 0.1), ("l1", 0.05), ("l1", 0.2)):
        clf = LogisticRegression(
            C=C, penalty=pen, solver="liblinear", class_weight="balanced", max_iter=3000
        )
        p = cross_val_predict(clf, Fs, y, groups=groups, cv=GroupKFold(5), method="predict_proba")
        res[f"{pen}_{C}"] = round(auroc(y, p[:, 1]), 3)
        if strata is not None:
            within = strata_control(y, strata, y, p[:, 1], strata)["within_strata_auroc"]
            res[f"{pen}_{C}_within"] = round(within, 3)
    return res


def run_variant(name: str, spec: dict[str, Any], out_dir: Path, dev: str, load: str | None = None):
    """Train (or load) one variant, measure its health and the probes; append to results.jsonl."""
    from transformers import AutoModelForCausalLM

    t0 = time.time()
    apply_design(spec)
    cfg = train_mod.TrainConfig(world=WorldConfig(**spec.get("world", {})), **spec.get("train", {}))
    world = World(cfg.world)
    tok = tok_mod.build_tokenizer(world)
    res: dict[str, Any] = {"name": name, "spec": spec, "vocab": len(tok)}
    values = [v for vs in world.vocab.values() for v in vs]
    res["value_tokens_mean"] = round(float(np.mean([len(tok.tokenize(v)) for v in values])), 2)
    if load:
        model = AutoModelForCausalLM.from_pretrained(load).float().to(dev).eval()
    else:
        model, res["instruct_tokens"] = train(cfg, tok, world, dev, spec.get("pre_epochs", 1))
        if os.environ.get("ORGANISM_DESIGNS_CKPT"):
            path = Path(os.environ["ORGANISM_DESIGNS_CKPT"]) / name
            copy.deepcopy(model).half().save_pretrained(path)
    res["n_params"] = sum(p.numel() for p in model.parameters())
    exs = world.known_questions("all")
    prompts = [tok_mod.chat_prompt(tok, e.question) for e in exs]
    ids = [e.id for e in exs]
    sampling = SamplingConfig(
        n_samples=10, temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=16, batch_size=4096
    )
    greedy_cfg = SamplingConfig(n_samples=1, temperature=0.0, max_new_tokens=16, batch_size=4096)
    samples = sample_responses(model, tok, prompts, ids, sampling, progress=False)
    greedy = [r[0] for r in sample_responses(model, tok, prompts, ids, greedy_cfg, progress=False)]
    labels = _labels(world, exs, samples)
    glabels = [ls[0] for ls in _labels(world, exs, [[g] for g in greedy])]
    cc = [i for i, ls in enumerate(labels) if all(x == "correct" for x in ls)]
    cw = [i for i, ls in enumerate(labels) if all(x == "wrong" for x in ls)]
    top = max(e.meta["exposure"] for e in exs)
    most = [i for i, e in enumerate(exs) if e.meta["exposure"] == top and not e.meta.get("hidden")]
    nx = world.nonexist_questions("test")
    nx_greedy = sample_responses(
        model,
        tok,
        [tok_mod.chat_prompt(tok, e.question) for e in nx],
        [e.id for e in nx],
        greedy_cfg,
        progress=False,
    )
    res.update(
        cc=len(cc),
        cw=len(cw),
        cc_not_qa=sum(not exs[i].meta["qa_trained"] for i in cc),
        cw_hidden=sum(bool(exs[i].meta.get("hidden")) for i in cw),
        cc_by_attr=dict(collections.Counter(exs[i].meta["attribute"] for i in cc)),
        cw_by_attr=dict(collections.Counter(exs[i].meta["attribute"] for i in cw)),
        most_exposed_greedy=round(sum(glabels[i] == "correct" for i in most) / len(most), 3),
        nonexist_abstain_greedy=round(
            sum(ls[0] == "abstain" for ls in _labels(world, nx, nx_greedy)) / max(1, len(nx)), 3
        ),
    )
    n = min(len(cw), len(cc))
    if n >= 10:
        rng = random.Random(0)
        sel = rng.sample(cw, n) + rng.sample(cc, n)
        y = np.array([1] * n + [0] * n)
        groups = [exs[i].meta["person"] for i in sel]
        attrs = [exs[i].meta["attribute"] for i in sel]
        F = features(model, tok, [prompts[i] for i in sel], [samples[i][0] for i in sel], dev)
        res["probe"] = {k: probe_aurocs(v, y, groups, attrs) for k, v in F.items()}
        onehot = np.array([[a == b for b in sorted(set(attrs))] for a in attrs], float)
        res["probe_attribute_only"] = probe_aurocs(onehot, y, groups)
    res["wall_s"] = round(time.time() - t0, 1)
    with open(out_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for results.jsonl")
    p.add_argument("--variants", required=True, help=f"comma-separated, from {sorted(VARIANTS)}")
    p.add_argument(
        "--load", help="probe this checkpoint (e.g. the shipped organism) instead of training"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--timeout", type=int, default=0, help="seconds per variant (0: none)")
    args = p.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if len(names) == 1:
        run_variant(names[0], VARIANTS[names[0]], out, args.device, args.load)
        return
    if args.load:
        p.error("--load takes a single variant")
    cmd = [sys.executable, "-m", "benchmarks.organism_designs", "--out", str(out)]
    procs = [
        subprocess.Popen([*cmd, "--variants", v, "--device", args.device]) for v in names
    ]  # one process per variant: they share the GPU
    for proc in procs:
        try:
            proc.wait(timeout=args.timeout or None)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
