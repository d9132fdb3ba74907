"""Tests for hlens.splits: balanced, disjoint, seeded splits."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

import hlens.splits
from hlens.formats import read_qids, write_qids
from hlens.splits import Splits, make_splits

FAI = [f"t{i}" for i in range(40)]
HAL = [f"f{i}" for i in range(25)]


def test_doctests() -> None:
    assert doctest.testmod(hlens.splits).failed == 0


def test_balanced_disjoint_and_sized() -> None:
    s = make_splits(FAI, HAL, test_fraction=0.2, seed=1)
    assert len(s.train_faithful) == len(s.train_hallucinated) == 20
    assert len(s.test_faithful) == len(s.test_hallucinated) == 5
    assert not set(s.train_ids) & set(s.test_ids)
    assert set(s.train_hallucinated) | set(s.test_hallucinated) == set(HAL)  # minority all used
    assert set(s.train_faithful) <= set(FAI)
    assert s.labels("test")[s.test_faithful[0]] == "faithful"


def test_seeded_and_order_independent() -> None:
    a = make_splits(FAI, HAL, seed=3)
    assert make_splits(list(reversed(FAI)), HAL[::-1], seed=3) == a
    assert make_splits(FAI, HAL, seed=4) != a


def test_unbalanced_and_duplicates() -> None:
    s = make_splits(FAI + FAI[:3], HAL, test_fraction=0.2, seed=0, balance=False)
    assert len(s.train_faithful) + len(s.test_faithful) == 40
    assert len(s.test_faithful) == 8 and len(s.test_hallucinated) == 5


def test_zero_test_fraction_and_empty() -> None:
    s = make_splits(FAI, HAL, test_fraction=0.0)
    assert s.test_ids == ()
    assert make_splits([], HAL).train_ids == ()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\), got 1.5"):
        make_splits(FAI, HAL, test_fraction=1.5)
    with pytest.raises(ValueError, match="both faithful and hallucinated"):
        make_splits(["a", "b"], ["b"])
    with pytest.raises(ValueError, match="in both train and test"):
        Splits(("a",), ("b",), ("a",), ("c",))
    with pytest.raises(ValueError, match="duplicate"):
        Splits(("a", "a"), (), (), ())


def test_groups_never_span_train_and_test() -> None:
    groups = {q: f"person{int(q[1:]) % 9}" for q in FAI + HAL}
    s = make_splits(FAI, HAL, test_fraction=0.3, seed=2, groups=groups)
    train_groups = {groups[q] for q in s.train_ids}
    test_groups = {groups[q] for q in s.test_ids}
    assert train_groups and test_groups and not train_groups & test_groups
    assert len(s.train_faithful) == len(s.train_hallucinated)
    assert len(s.test_faithful) == len(s.test_hallucinated)
    with pytest.raises(ValueError, match="have no group"):
        make_splits(FAI, HAL, groups={})


def test_round_trips(tmp_path: Path) -> None:
    s = make_splits(FAI, HAL, seed=5)
    assert Splits.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    s.save(tmp_path / "splits.json")
    assert Splits.load(tmp_path / "splits.json") == s
    train_path, test_path = s.to_official(tmp_path, prefix="m_")
    assert train_path.name == "m_train_qids.json"
    assert read_qids(test_path) == s.official("test")
    back = Splits.from_official(train_path, test_path)
    assert back.official("train") == s.official("train") and back.seed is None
    with pytest.raises(ValueError, match="needs 'train'"):
        Splits.from_dict({"test": {"t": [], "f": []}})


def test_overlapping_official_files(tmp_path: Path) -> None:
    write_qids({"t": ["a", "b"], "f": ["c"]}, tmp_path / "train.json")
    write_qids({"t": ["b"], "f": ["d"]}, tmp_path / "test.json")
    with pytest.raises(ValueError, match="1 ids are in both train and test"):
        Splits.from_official(tmp_path / "train.json", tmp_path / "test.json")
    s = Splits.from_official(
        tmp_path / "train.json", tmp_path / "test.json", on_overlap="drop_from_train"
    )
    assert s.train_faithful == ("a",) and s.test_faithful == ("b",)
