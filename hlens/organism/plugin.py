"""The organism as a plug-in: what it adds to hlens's registries.

:data:`hlens.registry.PLUGINS` names this module; importing it registers

- the kind ``"organism"`` (:class:`~hlens.registry.KindPlugin`): the bundled checkpoints
  ``organism`` and ``organism-base``, the checkpoint directories it claims (those written by
  ``hlens organism train``), and its report-card inputs
  (:class:`~hlens.organism.cards.OrganismCards`);
- its question source for ``hlens find`` (``--dataset organism``, the default on the organism);
- its steering suites (:mod:`hlens.organism.steer_suites`).

Core modules never import :mod:`hlens.organism`; they ask the registries.

Example:
    >>> from hlens.registry import bundled_names, kind_of
    >>> bundled_names(), kind_of("organism-base")
    (['organism', 'organism-base'], 'organism')
"""

from __future__ import annotations

from pathlib import Path

from hlens.organism import CHECKPOINT_NAMES, checkpoint_path
from hlens.organism import steer_suites as steer_suites  # registers the suites
from hlens.organism.cards import OrganismCards
from hlens.organism.source import organism_judge, organism_source
from hlens.organism.suites import organism_suites
from hlens.registry import KindPlugin, register_kind
from hlens.sources import register_source

__all__ = ["ORGANISM"]


def _claims(path: Path) -> bool:
    """A checkpoint directory written by ``hlens organism train``."""
    return (path / "organism_config.json").is_file()


ORGANISM = register_kind(
    KindPlugin(
        "organism",
        bundled={name: checkpoint_path for name in CHECKPOINT_NAMES},
        claims=_claims,
        cards=OrganismCards,
        api={"organism_suites": organism_suites, "organism_judge": organism_judge},
        actions={
            "train": "hlens.organism.train:train_organism",
            "train_config": "hlens.organism.train:TrainConfig",
            "evaluate": "hlens.organism.evaluate:evaluate_organism",
            "record": "hlens.organism.evaluate:record_greedy_answers",
        },
    )
)

# The organism's answers are a few tokens long: 16 new tokens (the organism evaluation's setting,
# which makes the ``hlens find`` funnel equal to ``hlens organism eval``) and large batches.
register_source(
    "organism",
    organism_source,
    sampling={"max_new_tokens": 16, "batch_size": 320},
    models=CHECKPOINT_NAMES,
)
