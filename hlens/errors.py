"""User errors versus bugs: what the ``hlens`` commands report in one line, and what they don't.

The rule:

1. :class:`HlensInputError` (a ``ValueError``) and its subclasses are always user errors: the
   input (a path, a file, a value, a model, a shape) is wrong, and the message says what was
   received, what was expected and what to do.
2. The library validates its inputs by raising ``ValueError``, ``TypeError``, ``KeyError`` or an
   ``OSError`` such as ``FileNotFoundError`` (and their subclasses: ``UnsupportedModelError``,
   ``json.JSONDecodeError``, ``UnicodeDecodeError``, ...), as well as the errors of the file
   readers it uses (``safetensors``). Those are user errors **only while a command validates
   its inputs**: checking options, reading input files, loading models, before any work is
   written. Commands mark that phase with :func:`validating`, which turns such an error into a
   :class:`HlensInputError` naming the option and what it expects. Raised later, the same
   exceptions are bugs.
3. A missing third-party package (``ModuleNotFoundError`` for a module outside hlens) is a user
   error anywhere: :class:`MissingPackageError` says what to install.
4. Everything else is a bug: the command keeps its traceback and exits 1.

The command line prints a user error as one line, ``hlens <command>: error: <message>``, on
stderr and exits 2, without a traceback unless ``hlens --debug`` or ``HLENS_DEBUG=1``.

Example:
    >>> with validating("--alphas", "numbers in [0, 3]"):  # doctest: +SKIP
    ...     check_alphas(args.alphas)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "EXIT_BUG",
    "EXIT_USER",
    "HlensInputError",
    "MissingPackageError",
    "RunDirInUseError",
    "debug_enabled",
    "missing_package",
    "one_line",
    "user_error",
    "validating",
]

#: exit status of a command that failed because of its input
EXIT_USER = 2
#: exit status of a command that failed because of a bug (Python's own for an uncaught error)
EXIT_BUG = 1


class HlensInputError(ValueError):
    """Bad input from the user: a path, file, value, model or shape. Always a user error."""


class RunDirInUseError(HlensInputError):
    """Another process holds the run directory (see :mod:`hlens.runlock`)."""


class MissingPackageError(HlensInputError, ImportError):
    """A third-party package the requested feature needs is not installed."""


def _input_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, TypeError, KeyError, OSError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    return tuple(errors)


def one_line(text: object) -> str:
    """``text`` on one line: whitespace runs (newlines included) become one space."""
    return re.sub(r"\s+", " ", str(text)).strip()


def _describe(e: BaseException) -> str:
    msg = one_line(e.args[0] if isinstance(e, KeyError) and e.args else e)
    if isinstance(e, KeyError):
        return f"missing key {msg}"
    if not msg or type(e).__module__.startswith(("json", "safetensors")):
        return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return msg


def missing_package(e: ModuleNotFoundError) -> MissingPackageError | None:
    """A :class:`MissingPackageError` for a package outside hlens; ``None`` for hlens's own."""
    name = (e.name or "").split(".")[0]
    if not name or name == "hlens":
        return None
    err = MissingPackageError(
        f"this needs the package {name!r}, which is not installed; "
        f"install it (pip install {name}) and rerun"
    )
    err.__cause__ = e
    return err


def user_error(
    e: BaseException,
    what: str | None = None,
    expected: str | None = None,
    value: object = None,
) -> HlensInputError | None:
    """``e`` as a :class:`HlensInputError` about ``what`` (``None`` if ``e`` is not one).

    Args:
        e: the exception raised while validating.
        what: the input, e.g. ``"--neurons"``.
        expected: what that input should be, e.g. ``"a NeuronSet JSON from hlens find"``.
        value: the value received; shown after ``what`` unless the message already names it.
    """
    if isinstance(e, HlensInputError):
        return e
    if isinstance(e, ModuleNotFoundError):
        return missing_package(e)
    if not isinstance(e, _input_errors()):
        return None
    msg = _describe(e)
    if what and value is not None and str(value) not in msg:
        what = f"{what} {str(value)!r}"
    parts = [f"{what}: {msg}" if what else msg]
    if expected and "expected" not in msg:
        parts.append(f"expected {expected}")
    err = HlensInputError("; ".join(parts))
    err.__cause__ = e
    return err


@contextmanager
def validating(
    what: str | None = None, expected: str | None = None, *, value: object = None
) -> Iterator[None]:
    """Mark input validation: input errors raised inside become :class:`HlensInputError`.

    Args:
        what: the input being checked (e.g. an option), prefixed to the message.
        expected: what the input should be, appended to the message.
        value: the value received (see :func:`user_error`).

    Raises:
        HlensInputError: for the errors of rule 2 of the module doc (the original is its cause).
    """
    try:
        yield
    except BaseException as e:
        err = user_error(e, what, expected, value)
        if err is None or err is e:
            raise
        raise err from e


def debug_enabled() -> bool:
    """Whether ``HLENS_DEBUG`` asks for tracebacks of user errors too."""
    return os.environ.get("HLENS_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
