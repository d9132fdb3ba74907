"""Balanced, disjoint train/test splits of faithful and hallucinated question ids.

:func:`make_splits` downsamples the majority class so that each split holds as many faithful as
hallucinated ids (the official H-Neurons recipe balances the classes the same way), draws the test
ids with a seeded generator, and guarantees that no id, and with ``groups`` no group (e.g. one
fictional person asked about in several questions), is in both train and test. The official train
and test qid files are drawn independently and overlap; hlens splits never do.

A :class:`Splits` saves to one JSON file (:meth:`Splits.save`) or to the official per-split
``{"t": [...], "f": [...]}`` files (:meth:`Splits.to_official`).

Example:
    >>> s = make_splits([f"t{i}" for i in range(10)], [f"f{i}" for i in range(6)],
    ...                 test_fraction=0.5, seed=0)
    >>> len(s.train_faithful), len(s.train_hallucinated), len(s.test_faithful)
    (3, 3, 3)
    >>> set(s.train_ids) & set(s.test_ids)
    set()
    >>> Splits.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hlens.examples import Label
from hlens.formats import read_qids, write_qids
from hlens.records import reject_unknown

__all__ = ["Splits", "make_splits"]


@dataclass(frozen=True)
class Splits:
    """Train and test question ids per class.

    Attributes:
        train_faithful: faithful (``"t"``) ids for training.
        train_hallucinated: hallucinated (``"f"``) ids for training.
        test_faithful: faithful ids for testing.
        test_hallucinated: hallucinated ids for testing.
        seed: the seed that drew the split, if known.
        test_fraction: the requested test fraction, if known.
    """

    train_faithful: tuple[str, ...]
    train_hallucinated: tuple[str, ...]
    test_faithful: tuple[str, ...]
    test_hallucinated: tuple[str, ...]
    seed: int | None = None
    test_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("train_faithful", "train_hallucinated", "test_faithful", "test_hallucinated"):
            ids = tuple(str(x) for x in getattr(self, name))
            if len(set(ids)) != len(ids):
                raise ValueError(f"Splits.{name} has duplicate ids")
            object.__setattr__(self, name, ids)
        both = set(self.train_ids) & set(self.test_ids)
        if both:
            raise ValueError(
                f"{len(both)} ids are in both train and test (e.g. {sorted(both)[:5]}); splits "
                "must be disjoint (the official qid files overlap: use Splits.from_official with "
                "on_overlap='drop_from_train')"
            )
        for split in ("train", "test"):
            f, h = getattr(self, f"{split}_faithful"), getattr(self, f"{split}_hallucinated")
            clash = set(f) & set(h)
            if clash:
                raise ValueError(f"{split} ids labelled both ways: {sorted(clash)[:5]}")

    @property
    def train_ids(self) -> tuple[str, ...]:
        return self.train_faithful + self.train_hallucinated

    @property
    def test_ids(self) -> tuple[str, ...]:
        return self.test_faithful + self.test_hallucinated

    def labels(self, split: Literal["train", "test"]) -> dict[str, Label]:
        """``{qid: "faithful" | "hallucinated"}`` for one split."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        out: dict[str, Label] = dict.fromkeys(getattr(self, f"{split}_faithful"), "faithful")
        out.update(dict.fromkeys(getattr(self, f"{split}_hallucinated"), "hallucinated"))
        return out

    def official(self, split: Literal["train", "test"]) -> dict[str, list[str]]:
        """One split as the official ``{"t": [...], "f": [...]}`` dict."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return {
            "t": list(getattr(self, f"{split}_faithful")),
            "f": list(getattr(self, f"{split}_hallucinated")),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.official("train"),
            "test": self.official("test"),
            "seed": self.seed,
            "test_fraction": self.test_fraction,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Splits:
        reject_unknown("Splits", dict(d), ("train", "test", "seed", "test_fraction"))
        for key in ("train", "test"):
            if key not in d or set(d[key]) != {"t", "f"}:
                raise ValueError(
                    f"Splits dict needs {key!r} as {{'t': [...], 'f': [...]}}; got keys {sorted(d)}"
                )
        return cls(
            train_faithful=tuple(d["train"]["t"]),
            train_hallucinated=tuple(d["train"]["f"]),
            test_faithful=tuple(d["test"]["t"]),
            test_hallucinated=tuple(d["test"]["f"]),
            seed=d.get("seed"),
            test_fraction=d.get("test_fraction"),
        )

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Splits:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_official(self, directory: str | Path, prefix: str = "") -> tuple[Path, Path]:
        """Write ``{prefix}train_qids.json`` and ``{prefix}test_qids.json`` (official layout)."""
        directory = Path(directory)
        paths = (directory / f"{prefix}train_qids.json", directory / f"{prefix}test_qids.json")
        write_qids(self.official("train"), paths[0])
        write_qids(self.official("test"), paths[1])
        return paths

    @classmethod
    def from_official(
        cls,
        train_path: str | Path,
        test_path: str | Path,
        *,
        on_overlap: Literal["error", "drop_from_train"] = "error",
    ) -> Splits:
        """Read official train/test qid files.

        The official files overlap; ``on_overlap="drop_from_train"`` removes the shared ids from
        train (the test set stays as published), ``"error"`` raises ``ValueError``.
        """
        if on_overlap not in ("error", "drop_from_train"):
            raise ValueError(f"on_overlap must be 'error' or 'drop_from_train', got {on_overlap!r}")
        train, test = read_qids(train_path), read_qids(test_path)
        if on_overlap == "drop_from_train":
            test_ids = set(test["t"]) | set(test["f"])
            train = {k: [q for q in v if q not in test_ids] for k, v in train.items()}
        return cls.from_dict({"train": train, "test": test})


def _dedupe(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(str(x) for x in ids))


def make_splits(
    faithful: Iterable[str],
    hallucinated: Iterable[str],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    balance: bool = True,
    groups: Mapping[str, str] | None = None,
) -> Splits:
    """A seeded, class-balanced, disjoint train/test split of question ids.

    Without ``groups``: the majority class is downsampled (seeded) to the minority's size, then
    ``round(test_fraction * n)`` ids of each class go to test. With ``groups`` (``{qid: group}``,
    e.g. the person a question is about): whole groups are assigned to test, in seeded order, until
    test holds at least ``test_fraction`` of all ids; then each split is balanced by downsampling
    its majority class. Ids are sorted first, so the result does not depend on input order.

    Args:
        faithful: ids of consistently faithful questions.
        hallucinated: ids of consistently hallucinated questions.
        test_fraction: fraction of (balanced) ids in test, in ``[0, 1)``.
        seed: seed of the random generator.
        balance: downsample the majority class (per split with ``groups``).
        groups: optional group of every id; a group never spans train and test.

    Raises:
        ValueError: on an id in both classes, a bad ``test_fraction`` or an id without a group.
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    fai, hal = sorted(_dedupe(faithful)), sorted(_dedupe(hallucinated))
    both = set(fai) & set(hal)
    if both:
        raise ValueError(
            f"{len(both)} ids are both faithful and hallucinated (e.g. {sorted(both)[:5]})"
        )
    rng = random.Random(seed)
    if groups is None:
        if balance:
            n = min(len(fai), len(hal))
            fai, hal = sorted(rng.sample(fai, n)), sorted(rng.sample(hal, n))
        parts = []
        for ids in (fai, hal):
            shuffled = rng.sample(ids, len(ids))
            n_test = round(test_fraction * len(ids))
            parts.append((sorted(shuffled[n_test:]), sorted(shuffled[:n_test])))
        (tr_f, te_f), (tr_h, te_h) = parts
    else:
        missing = [q for q in (*fai, *hal) if q not in groups]
        if missing:
            raise ValueError(f"{len(missing)} ids have no group (e.g. {missing[:5]})")
        order = sorted({str(groups[q]) for q in (*fai, *hal)})
        rng.shuffle(order)
        size: dict[str, int] = {}
        for q in (*fai, *hal):
            size[str(groups[q])] = size.get(str(groups[q]), 0) + 1
        target = test_fraction * (len(fai) + len(hal))
        test_groups: set[str] = set()
        count = 0
        for g in order:
            if count >= target:
                break
            test_groups.add(g)
            count += size[g]
        te_f = [q for q in fai if str(groups[q]) in test_groups]
        te_h = [q for q in hal if str(groups[q]) in test_groups]
        tr_f = [q for q in fai if str(groups[q]) not in test_groups]
        tr_h = [q for q in hal if str(groups[q]) not in test_groups]
        if balance:
            tr_f, tr_h = _balance(tr_f, tr_h, rng)
            te_f, te_h = _balance(te_f, te_h, rng)
    # Splits.__post_init__ checks that train and test are disjoint.
    return Splits(
        tuple(tr_f), tuple(tr_h), tuple(te_f), tuple(te_h), seed=seed, test_fraction=test_fraction
    )


def _balance(a: Sequence[str], b: Sequence[str], rng: random.Random) -> tuple[list[str], list[str]]:
    n = min(len(a), len(b))
    return sorted(rng.sample(list(a), n)), sorted(rng.sample(list(b), n))
