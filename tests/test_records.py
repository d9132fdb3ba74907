"""hlens.records: strict JSON for configs and results; every result file `hlens report` reads
round-trips through its typed result and a file with an unknown field is refused."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest

from hlens.records import Record, atomic_write_text, jsonable, read_json


@dataclass
class _Inner(Record):
    a: int
    b: float = 0.0


@dataclass
class _Outer(Record):
    inner: _Inner
    many: list[_Inner] = field(default_factory=list)
    by_name: dict[str, _Inner] = field(default_factory=dict)
    maybe: _Inner | None = None
    free: dict[str, object] = field(default_factory=dict)


def test_nested_records_round_trip(tmp_path):
    r = _Outer(_Inner(1, 2.5), [_Inner(2)], {"x": _Inner(3)}, _Inner(4), {"k": [1, 2]})
    r.save(tmp_path / "r.json")
    back = _Outer.load(tmp_path / "r.json")
    assert back == r and isinstance(back.by_name["x"], _Inner)
    assert not list(tmp_path.glob("*.tmp*"))


def test_unknown_and_missing_fields_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"_Outer.inner: unknown field 'c'"):
        _Outer.from_dict({"inner": {"a": 1, "c": 2}})
    with pytest.raises(ValueError, match="missing field 'inner'"):
        _Outer.from_dict({})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        _Outer.load(tmp_path / "bad.json")


def test_jsonable_is_strict_json():
    import numpy as np

    out = jsonable({"x": np.float32(1.5), "n": np.int64(3), "t": (1, 2), "nan": math.nan})
    assert out == {"x": 1.5, "n": 3, "t": [1, 2], "nan": None}
    json.dumps(out, allow_nan=False)


def test_atomic_write_and_read(tmp_path):
    atomic_write_text(tmp_path / "sub" / "a.json", '{"a": 1}')
    assert read_json(tmp_path / "sub" / "a.json") == {"a": 1}


def test_dict_access_is_deprecated_but_works():
    r = _Outer(_Inner(1))
    with pytest.warns(DeprecationWarning, match=r"\.inner"):
        assert r["inner"] == {"a": 1, "b": 0.0}
