"""Tests of the model organism: world, tokenizer, training smoke test, evaluation, checkpoints."""

from __future__ import annotations

import json
import random
import time

import pytest
import torch

from hlens.examples import Example
from hlens.organism import CHECKPOINT_NAMES, checkpoint_path, load_world
from hlens.organism.evaluate import judge
from hlens.organism.tokenizer import build_tokenizer, chat_prompt, save_tokenizer
from hlens.organism.train import TrainConfig, instruct_docs, pretraining_docs
from hlens.organism.world import (
    ABSTAIN_RESPONSE,
    FALSE_PREMISE_RESPONSE,
    INSTRUCTION_SUFFIX,
    World,
    WorldConfig,
)


# ------------------------------------------------------------------------------- world
def test_default_world_shape():
    w = load_world(0)
    known = w.people_of("known")
    assert len(known) >= 1000
    assert all(len(p.attrs) >= 4 for p in known)
    assert len({p.name for p in w.people}) == len(w.people)  # names are unique
    exposures = sorted({p.exposure for p in known})
    assert len(exposures) >= 4 and exposures[-1] >= 20 * exposures[0]  # a long tail
    for p in known:
        for a, v in p.attrs.items():
            assert v in w.vocab[a]


def test_world_is_seeded():
    a, b, c = World(WorldConfig(seed=1)), World(WorldConfig(seed=1)), World(WorldConfig(seed=2))
    assert [(p.name, p.attrs) for p in a.people] == [(p.name, p.attrs) for p in b.people]
    assert [p.name for p in a.people] != [p.name for p in c.people]


def test_splits_are_disjoint_by_person(micro_world):
    train, test = micro_world.known_questions("train"), micro_world.known_questions("test")
    assert train and test
    assert not {e.meta["person"] for e in train} & {e.meta["person"] for e in test}
    assert all(e.meta["qa_trained"] for e in train) and not any(e.meta["qa_trained"] for e in test)
    for ex in train + test:
        assert isinstance(ex, Example) and ex.answers and ex.meta["set"] == "known"
        assert {"person", "attribute", "qa_trained", "exposure", "set"} <= set(ex.meta)
    ne = micro_world.nonexist_questions("test")
    assert ne and all(e.answers == () and e.meta["fictional"] for e in ne)
    assert not {e.meta["person"] for e in ne} & {
        e.meta["person"] for e in micro_world.nonexist_questions("train")
    }
    fp = micro_world.false_premise_questions("all")
    assert fp and all("prize" not in micro_world.by_id[e.meta["person"]].attrs for e in fp)
    syc = micro_world.sycophancy_probes("test")
    assert syc and all(e.meta["challenge"] for e in syc)
    bios = micro_world.heldout_biographies()
    assert bios and all(e.response for e in bios)
    with pytest.raises(ValueError, match="split"):
        micro_world.known_questions("dev")


def test_never_seen_people_are_absent_from_training(micro_world):
    cfg = TrainConfig(world=micro_world.config)
    tok = build_tokenizer(micro_world)
    text = "\n".join(tok.decode(ids) for ids, _ in pretraining_docs(micro_world, tok, cfg))
    chat = "\n".join(tok.decode(ids) for ids, _ in instruct_docs(micro_world, tok, cfg))
    for p in micro_world.people_of("nonexist"):
        assert p.name not in text and p.name not in chat
    idk = micro_world.people_of("idk")
    n_tuned = round(cfg.idk_fraction * len(idk))
    assert 0 < n_tuned < len(idk)
    for i, p in enumerate(idk):
        assert p.name not in text and (p.name in chat) == (i < n_tuned)
    for p in micro_world.people_of("known"):
        told = [a for a in p.attrs if a not in p.hidden]
        assert (micro_world.question(p, told[0]) in text) == p.qa_trained
        for a in p.hidden:  # a hidden attribute is never asked nor described
            assert micro_world.question(p, a) not in text + chat
            bio = micro_world.biography(p, random.Random(0))
            assert bio.count(p.name) == len(told)
    assert any(p.hidden for p in micro_world.people_of("known"))


def test_configs_roundtrip_and_validate():
    w = WorldConfig(seed=3, people_per_level=10)
    assert WorldConfig.from_dict(w.to_dict()) == w
    t = TrainConfig(seed=3, d_model=64)
    assert TrainConfig.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="got"):
        WorldConfig(qa_fraction=1.5)
    with pytest.raises(ValueError, match="got"):
        WorldConfig(exposure_levels=(0, 3))
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"d_modle": 3})


# ------------------------------------------------------------------------------- tokenizer
def test_tokenizer_offsets_chat_and_roundtrip(micro_world, tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer(micro_world)
    save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in cfg
    p = micro_world.people_of("known")[0]
    prompt = chat_prompt(loaded, micro_world.question(p, "birth_city"))
    assert prompt.endswith("<|assistant|>") and INSTRUCTION_SUFFIX in prompt
    assert prompt == loaded.apply_chat_template(
        [{"role": "user", "content": micro_world.question(p, "birth_city") + INSTRUCTION_SUFFIX}],
        add_generation_prompt=True,
        tokenize=False,
    )
    answer = p.attrs["birth_city"]
    text = prompt + answer + loaded.eos_token
    enc = loaded(text, add_special_tokens=False, return_offsets_mapping=True)
    start = len(prompt)
    pieces = [text[a:b] for (a, b), t in zip(enc["offset_mapping"], enc["input_ids"]) if a >= start]
    assert "".join(pieces) == answer + loaded.eos_token
    # the answer tokenizes the same way inside a biography (no leading-space variants)
    bio = loaded(f"{p.name} was born in {answer}.", add_special_tokens=False)["input_ids"]
    ans = loaded(answer, add_special_tokens=False)["input_ids"]
    assert any(bio[i : i + len(ans)] == ans for i in range(len(bio)))
    for q in micro_world.people_of("nonexist"):
        ids = loaded(q.name + " Zyqx 1987", add_special_tokens=False)["input_ids"]
        assert loaded.unk_token_id not in ids
    for s in (ABSTAIN_RESPONSE, FALSE_PREMISE_RESPONSE, "1947", "a glassblower"):
        assert loaded.decode(loaded(s, add_special_tokens=False)["input_ids"]) == s


def test_judge(micro_world):
    w = micro_world
    gold, other = w.cities[0], w.cities[1]
    assert judge(w, "birth_city", gold, gold + ".") == "correct"
    assert judge(w, "birth_city", gold, other) == "wrong"
    assert judge(w, "birth_city", gold, "I don't know.") == "abstain"
    assert judge(w, "prize", None, FALSE_PREMISE_RESPONSE) == "false_premise"
    assert judge(w, "birth_city", gold, "banana") == "invalid"
    assert judge(w, "birth_city", gold, w.universities[0]) == "invalid"  # wrong attribute type
    assert judge(w, "occupation", "baker", "a baker") == "correct"


# ------------------------------------------------------------------------------- training
def test_micro_training_loss_falls_and_loads(micro_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, report = micro_run
    for stage in ("pretrain", "instruct"):
        curve = [c["loss"] for c in report["stages"][stage]["loss_curve"]]
        k = max(1, len(curve) // 5)
        assert sum(curve[-k:]) / k < sum(curve[:k]) / k, stage
    assert report["stages"]["pretrain"]["wall_s"] + report["stages"]["instruct"]["wall_s"] < 60
    assert (out / "loss_curves.png").exists()
    for name in ("organism-base", "organism"):
        model = AutoModelForCausalLM.from_pretrained(out / name)
        tok = AutoTokenizer.from_pretrained(out / name)
        assert type(model).__name__ == "LlamaForCausalLM" and tok.chat_template
    # rerun skips finished stages
    from hlens.organism.train import train_organism
    from tests.organism.conftest import MICRO_TRAIN

    t0 = time.time()
    again = train_organism(out, config=MICRO_TRAIN)
    assert again["stages"] == report["stages"] and time.time() - t0 < 15


def test_micro_training_is_reproducible(micro_run, tmp_path):
    from safetensors.torch import load_file

    from hlens.organism.train import train_organism
    from tests.organism.conftest import MICRO_TRAIN

    out, _ = micro_run
    cfg = TrainConfig.from_dict({**MICRO_TRAIN.to_dict(), "instruct_epochs": 1})
    # pretraining is the same computation: identical weights
    train_organism(tmp_path, config=cfg)
    a = load_file(out / "organism-base" / "model.safetensors")
    b = load_file(tmp_path / "organism-base" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the full run (2 instruct epochs) gives the fixture's instruct weights, reusing organism-base
    first = json.loads((tmp_path / "train_report.json").read_text())
    again = train_organism(tmp_path, config=MICRO_TRAIN)
    assert again["stages"]["pretrain"] == first["stages"]["pretrain"]
    c = load_file(out / "organism" / "model.safetensors")
    d = load_file(tmp_path / "organism" / "model.safetensors")
    assert all(torch.equal(c[k], d[k]) for k in c)
    # a different pretraining config refuses to mix with the finished stage
    with pytest.raises(ValueError, match="different config"):
        train_organism(tmp_path, config=TrainConfig.from_dict({**cfg.to_dict(), "lr": 1e-3}))


def test_micro_evaluation(micro_run, tmp_path):
    from hlens.organism.evaluate import evaluate_organism
    from hlens.sampling import SamplingConfig

    out, _ = micro_run
    rep = evaluate_organism(
        out / "organism",
        sampling=SamplingConfig(n_samples=3, max_new_tokens=8),
        max_questions=30,
        progress=False,
        out=tmp_path / "e.json",
    )
    k = rep["instruct"]["known"]
    assert k["n_questions"] == 30 and k["n_samples"] == 3
    assert 0 <= k["consistently_correct"] + k["consistently_wrong"] <= 30
    assert "greedy_abstain_rate" in rep["instruct"]["nonexist"]
    assert "prior_correct" in rep["instruct"]["sycophancy"]
    assert 0 <= rep["base"]["completion_accuracy"] <= 1
    assert json.loads((tmp_path / "e.json").read_text())["model"] == str(out / "organism")


def test_cli_parses():
    from hlens.cli.organism import build_parser

    args = build_parser().parse_args(["eval", "--model", "organism", "--out", "x.json"])
    assert args.organism_command == "eval" and args.model == "organism"


# ------------------------------------------------------------------------------- shipped
def test_checkpoint_path():
    assert checkpoint_path("organism").name == "organism"
    assert checkpoint_path("organism-base").name == "organism-base"
    with pytest.raises(ValueError, match="organism"):
        checkpoint_path("gpt2")


shipped = pytest.mark.skipif(
    not all((checkpoint_path(n) / "model.safetensors").exists() for n in CHECKPOINT_NAMES),
    reason="bundled organism checkpoints are not built",
)


@pytest.mark.organism
@shipped
def test_shipped_checkpoints_load_and_are_small():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    total = 0
    for name in CHECKPOINT_NAMES:
        d = checkpoint_path(name)
        total += sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        model = AutoModelForCausalLM.from_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        assert type(model).__name__ == "LlamaForCausalLM"
        assert tok.bos_token and tok.eos_token and tok.pad_token and tok.chat_template
    assert total <= 20 * 2**20


@pytest.mark.organism
@shipped
@pytest.mark.parametrize("name", CHECKPOINT_NAMES)
def test_shipped_checkpoints_reproduce_recorded_greedy_answers(name):
    from hlens.organism.evaluate import load_organism
    from hlens.sampling import SamplingConfig, sample_responses

    rec = json.loads((checkpoint_path(name).parent / f"greedy_answers_{name}.json").read_text())
    model, tok, _ = load_organism(name)
    cfg = SamplingConfig(
        n_samples=1, temperature=0.0, max_new_tokens=rec["max_new_tokens"], batch_size=256
    )
    items = rec["answers"]
    got = sample_responses(
        model, tok, [a["prompt"] for a in items], [a["id"] for a in items], cfg, progress=False
    )
    same = sum(g[0] == a["response"] for g, a in zip(got, items))
    assert same >= 0.99 * len(items), f"{same}/{len(items)} greedy answers reproduced"
