"""Shared fixtures of the organism tests: a micro world and a micro organism trained in seconds."""

from __future__ import annotations

import pytest

from hlens.organism.train import TrainConfig
from hlens.organism.world import World, WorldConfig

MICRO_WORLD = WorldConfig(
    exposure_levels=(12, 3),
    people_per_level=24,
    n_idk=12,
    n_nonexist=8,
    n_cities=8,
    n_universities=6,
    n_prizes=4,
    n_first_names=20,
)
MICRO_TRAIN = TrainConfig(
    world=MICRO_WORLD,
    d_model=32,
    n_layers=2,
    n_heads=2,
    d_mlp=64,
    block_size=128,
    batch_size=8,
    lr=3e-3,
    warmup_steps=5,
    instruct_epochs=2,
    threads=1,
)


@pytest.fixture(scope="session")
def micro_world() -> World:
    return World(MICRO_WORLD)


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """``(out_dir, report)`` of a micro organism trained once per session."""
    from hlens.organism.train import train_organism

    out = tmp_path_factory.mktemp("micro_organism")
    report = train_organism(out, config=MICRO_TRAIN)
    return out, report
