"""Session fixtures: one seeded tiny checkpoint per family, built offline, shared by all tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import FAMILIES, build_checkpoint, build_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """Directory holding ``{family}/`` tiny checkpoints, built lazily on first use."""
    root = tmp_path_factory.mktemp("tiny_models")
    tok = build_tokenizer()
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_checkpoint(family, root / family, tokenizer=tok)
        return built[family]

    return get


_MODELS: dict[str, object] = {}


@pytest.fixture(scope="session", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_model(family, checkpoint_dir):
    """An ``hlens.Model`` per family, loaded once per session. Tests must not mutate it."""
    import hlens

    if family not in _MODELS:
        _MODELS[family] = hlens.load(checkpoint_dir(family), device="cpu")
    return _MODELS[family]


@pytest.fixture(scope="session")
def llama(checkpoint_dir):
    import hlens

    if "llama" not in _MODELS:
        _MODELS["llama"] = hlens.load(checkpoint_dir("llama"), device="cpu")
    return _MODELS["llama"]
