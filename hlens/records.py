"""One way to save and load hlens's configs and results: dataclasses as strict JSON.

A :class:`Record` is a dataclass that writes itself as JSON (``to_dict``, ``save``, atomically)
and reads itself back (``from_dict``, ``load``). Reading is strict: a field the class does not
have is an error naming it, so a file from another version or another command is never half
read. Fields typed as another record (also inside ``list[...]``, ``dict[str, ...]`` or
``... | None``) are rebuilt as that record. :func:`jsonable` is the one JSON sanitiser: NumPy
scalars as Python numbers, tuples as lists, paths as strings, NaN and infinities as ``null``.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Point(Record):
    ...     x: float
    ...     y: float = 0.0
    >>> Point.from_dict({"x": 1.0}).to_dict()
    {'x': 1.0, 'y': 0.0}
    >>> Point.from_dict({"x": 1.0, "z": 2.0})
    Traceback (most recent call last):
    ...
    ValueError: Point: unknown field 'z'; expected some of x, y
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
import warnings
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["Record", "atomic_write_text", "jsonable", "read_json", "reject_unknown", "write_json"]

_R = TypeVar("_R", bound="Record")


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (records and dataclasses as dicts; NaN as ``None``)."""
    if isinstance(obj, Record):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_dict = getattr(obj, "to_dict", None)
        return jsonable(to_dict() if callable(to_dict) else dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` (through :func:`jsonable`) as indented JSON at ``path``, atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=1) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON at ``path``.

    Raises:
        ValueError: the file is not valid JSON (names the file and says what to do).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{str(path)!r} is not valid JSON ({e}); it was damaged or not written by hlens: "
            "rerun the command that writes it"
        ) from None


def reject_unknown(what: str, d: Any, allowed: Any) -> None:
    """Raise ``ValueError`` naming the first key of ``d`` not in ``allowed`` (for the classes
    that read their files by hand rather than as a :class:`Record`)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(d).__name__}")
    allowed = list(allowed)
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ValueError(
            f"{what}: unknown field {unknown[0]!r}; expected some of {', '.join(allowed)}"
        )


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` rebuilt as type ``tp`` where ``tp`` holds records; anything else as it is."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and issubclass(arg, Record) and isinstance(value, dict):
                return arg.from_dict(value, where=where)
        return value
    if isinstance(tp, type) and issubclass(tp, Record) and isinstance(value, dict):
        return tp.from_dict(value, where=where)
    if origin in (list, tuple) and isinstance(value, list):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    return value


class Record:
    """Mixin for dataclasses saved as strict JSON (see the module docstring).

    Subclasses may override ``_upgrade(d)`` to rename fields of older files before they are read.
    """

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (nested records as dicts, NaN as ``None``)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        return d

    @classmethod
    def from_dict(cls: type[_R], d: dict[str, Any], *, where: str | None = None) -> _R:
        """The record of a :meth:`to_dict` dict.

        Raises:
            ValueError: ``d`` is not a dict, has a field the class does not have, or lacks a
                required one (the message names the record and the field).
        """
        where = where or cls.__name__
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        d = cls._upgrade(dict(d))
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        reject_unknown(where, d, fields)
        missing = [
            n
            for n, f in fields.items()
            if n not in d
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.init
        ]
        if missing:
            raise ValueError(f"{where}: missing field {missing[0]!r}")
        hints = typing.get_type_hints(cls)
        kwargs = {k: _decode(hints.get(k, Any), v, f"{where}.{k}") for k, v in d.items()}
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        """Write the record as JSON at ``path``, atomically; returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[_R], path: str | Path) -> _R:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: invalid JSON, or a field the class does not have.
        """
        return cls.from_dict(read_json(path), where=f"{cls.__name__} ({path})")

    def __getitem__(self, key: str) -> Any:
        """Deprecated dict-style access (``result["metrics"]``), for one release: results were
        plain dicts before they were records. Use attributes."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        if key not in names:
            raise KeyError(key)
        warnings.warn(
            f"{type(self).__name__}[{key!r}] is deprecated; use the attribute .{key}",
            DeprecationWarning,
            stacklevel=2,
        )
        return jsonable(getattr(self, key))
