"""A bundled *model organism* that hallucinates, with knowledge known by construction.

A seeded world of fictional people (:mod:`hlens.organism.world`), a WordPiece tokenizer with a
chat template (:mod:`hlens.organism.tokenizer`), a small Llama pretrained on biographies
(``organism-base``) and instruction-tuned to answer or say "I don't know." (``organism``)
(:mod:`hlens.organism.train`), and an exact evaluation (:mod:`hlens.organism.evaluate`).

Example:
    >>> from hlens.organism import checkpoint_path, load_world
    >>> checkpoint_path("organism").name
    'organism'
    >>> len(load_world(0).people_of("known")) >= 1000
    True
"""

from __future__ import annotations

from pathlib import Path

from hlens.organism.world import (
    ABSTAIN_RESPONSE,
    ATTRIBUTES,
    CHALLENGE,
    FALSE_PREMISE_RESPONSE,
    INSTRUCTION_SUFFIX,
    Person,
    World,
    WorldConfig,
    load_world,
)

__all__ = [
    "ABSTAIN_RESPONSE",
    "ATTRIBUTES",
    "CHALLENGE",
    "CHECKPOINTS_DIR",
    "CHECKPOINT_NAMES",
    "FALSE_PREMISE_RESPONSE",
    "INSTRUCTION_SUFFIX",
    "Person",
    "TrainConfig",
    "World",
    "WorldConfig",
    "checkpoint_path",
    "evaluate_organism",
    "load_world",
    "train_organism",
]

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
CHECKPOINT_NAMES: tuple[str, ...] = ("organism", "organism-base")


def checkpoint_path(name: str) -> Path:
    """The folder of a bundled checkpoint: ``"organism"`` (instruct) or ``"organism-base"``.

    Raises:
        ValueError: for any other name.
    """
    if name not in CHECKPOINT_NAMES:
        raise ValueError(
            f"unknown organism checkpoint {name!r}; expected one of {CHECKPOINT_NAMES}"
        )
    return CHECKPOINTS_DIR / name


def __getattr__(name: str):  # lazy: training/evaluation pull in transformers
    if name in ("TrainConfig", "train_organism"):
        from hlens.organism import train

        return getattr(train, name)
    if name == "evaluate_organism":
        from hlens.organism.evaluate import evaluate_organism

        return evaluate_organism
    raise AttributeError(f"module 'hlens.organism' has no attribute {name!r}")
