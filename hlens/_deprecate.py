"""Renamed keywords, attributes and JSON keys, accepted for one release with a warning.

Every rename in hlens goes through these helpers, so each old name warns the same way: a
:class:`DeprecationWarning` that names the new name. Readers of saved files (configs, results)
map the old keys with :func:`rename_keys`; :func:`rename_keys` with ``warn=False`` is for
comparisons (resuming a run directory written before the rename), which must not warn.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     rename_keys({"method": "max"}, {"method": "aggregation"}, "CETTConfig")
    {'aggregation': 'max'}
    >>> str(w[0].message)
    "CETTConfig: the key 'method' is deprecated; use 'aggregation'"
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["UNSET", "moved_module", "rename_keys", "renamed_kwarg", "warn_renamed"]


class _Unset:
    """The default of a deprecated keyword: tells "not passed" from any value, ``None`` too."""

    def __repr__(self) -> str:
        return "UNSET"


#: the default of every deprecated keyword argument
UNSET: Any = _Unset()


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (a :class:`DeprecationWarning`)."""
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel)


def renamed_kwarg(
    where: str,
    old: str,
    new: str,
    old_value: Any,
    new_value: Any,
    default: Any,
    *,
    stacklevel: int = 4,
) -> Any:
    """The value of a renamed keyword: ``new_value``, or ``old_value`` with a warning when the
    caller passed the old keyword (``old_value`` is not :data:`UNSET`). ``stacklevel`` 4 blames
    the caller of a function that calls this; a dataclass's ``__post_init__`` passes 5.

    Raises:
        TypeError: both keywords were passed (``new_value`` is not its ``default``) with
            different values.
    """
    if old_value is UNSET:
        return new_value
    if new_value != default and new_value != old_value:
        raise TypeError(
            f"{where}() got {old}={old_value!r} and {new}={new_value!r}; {old} is the deprecated "
            f"name of {new}: pass only {new}"
        )
    warn_renamed(f"{where}({old}=...)", f"{new}=...", stacklevel=stacklevel)
    return old_value


def rename_keys(
    d: Mapping[str, Any], renames: Mapping[str, str], where: str, *, warn: bool = True
) -> dict[str, Any]:
    """``d`` with its old keys renamed (``renames``: old -> new), warning once per old key.

    Raises:
        ValueError: ``d`` holds both an old key and its new one.
    """
    out = dict(d)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{where}: holds both {old!r} and its new name {new!r}; keep {new!r}")
        if warn:
            warnings.warn(
                f"{where}: the key {old!r} is deprecated; use {new!r}",
                DeprecationWarning,
                stacklevel=3,
            )
        out[new] = out.pop(old)
    return out


class _MovedModule(types.ModuleType):
    """A module's old import path, for one release: reading a name from it warns and answers
    from the module's new home."""

    def __init__(self, old: str, new: types.ModuleType) -> None:
        super().__init__(old, new.__doc__)
        self.__dict__.update(_new=new, __spec__=None)

    def __getattr__(self, name: str) -> Any:
        new = self.__dict__["_new"]
        if not name.startswith("__"):
            warn_renamed(f"{self.__name__}.{name}", f"{new.__name__}.{name}")
        return getattr(new, name)

    def __dir__(self) -> list[str]:
        return dir(self.__dict__["_new"])


def moved_module(old: str, new: types.ModuleType) -> None:
    """Keep ``old`` (a dotted module path) importable as a deprecated alias of ``new``.

    The alias lives in :data:`sys.modules` only, so the parent package's attribute of that name
    (e.g. the function ``hlens.find``) is not replaced: ``from hlens.find import FindConfig``
    warns and works, while ``hlens.find`` stays the function.
    """
    sys.modules.setdefault(old, _MovedModule(old, new))
