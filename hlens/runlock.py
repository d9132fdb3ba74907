"""One writer per run directory: an ``fcntl.flock`` lock file held for the whole run.

``hlens find`` and ``hlens steer`` hold ``RUN_DIR/.hlens.lock`` while they write ``RUN_DIR``. A
second process on the same directory fails at once with :class:`~hlens.errors.RunDirInUseError`
("in use by pid N"). The kernel drops the lock when its holder exits, however it exits (a
SIGKILL included), so a lock file left by a killed run never blocks the next one; the file itself
stays (removing it would race with a process that just opened it).

Usage: :func:`check_free` before the (slow) input validation, so that a second process refuses
before loading a model, and :func:`acquire` once the inputs are valid (it creates the directory).

Example:
    >>> lock = acquire("runs/organism")  # doctest: +SKIP
    >>> lock.release()  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hlens.errors import HlensInputError, RunDirInUseError

__all__ = [
    "KILL_ENV",
    "LOCK_NAME",
    "RunLock",
    "acquire",
    "check_free",
    "check_settings",
    "kill_point",
]

#: test-only: the stage at which :func:`kill_point` SIGKILLs the process (tests/test_find_kill.py)
KILL_ENV = "HLENS_TEST_KILL_AT"

#: the lock file's name inside a run directory
LOCK_NAME = ".hlens.lock"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


def _busy(path: Path, fd: int) -> RunDirInUseError:
    return RunDirInUseError(
        f"run directory {str(path.parent)!r} is in use by {_holder(fd)} (lock {LOCK_NAME}); wait "
        "for it to finish, stop it, or use another --out"
    )


class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` or process exit.

    Args:
        run_dir: the directory; created (with parents) if missing.

    Raises:
        RunDirInUseError: another process holds it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self._fd: int | None = None
        self.path = Path(run_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = _busy(self.path, fd)
            os.close(fd)
            raise err from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The lock file stays."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def acquire(run_dir: str | Path) -> RunLock:
    """Create ``run_dir`` if needed and lock it for this process (see :class:`RunLock`)."""
    return RunLock(run_dir)


def check_free(run_dir: str | Path) -> None:
    """Fail fast if another process holds ``run_dir``; creates and writes nothing.

    Raises:
        RunDirInUseError: the directory's lock is held.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file (or no directory): nobody holds it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(path, fd) from None
    finally:
        os.close(fd)


def _short(x: Any, n: int = 60) -> str:
    text = json.dumps(x, sort_keys=True)
    return text if len(text) <= n else text[: n - 3] + "..."


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"sampling.seed": 0, ...}``, so that a difference names its leaf."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_settings(
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    command: str,
    ignore: Sequence[str] = (),
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Refuse to resume into a run directory whose recorded settings differ from ``settings``.

    A run directory records its options (``config.json`` for ``hlens find``, ``settings.json``
    for ``hlens steer``); resuming with other options would mix two runs' results.

    Args:
        path: the recorded settings file; nothing is checked if it does not exist.
        settings: this run's settings (JSON-serialisable).
        command: the command, for the message (``"hlens find"``).
        ignore: keys that may differ (e.g. ``device``).
        upgrade: maps the recorded settings to today's names before comparing (e.g.
            :meth:`hlens.identify.FindConfig.upgrade_dict`), so that a run directory written before
            a rename resumes.

    Raises:
        HlensInputError: the file is unreadable or records other settings.
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise HlensInputError(
            f"{str(path)!r} is not readable JSON ({type(e).__name__}: {e}); the directory is not "
            f"a {command} run or it is damaged: use another --out"
        ) from e
    if not isinstance(old, dict):
        raise HlensInputError(
            f"{str(path)!r} holds a {type(old).__name__}, not the settings of a {command} run; "
            "use another --out"
        )
    if upgrade is not None:
        old = upgrade(old)
    old, new = _flat(old), _flat(json.loads(json.dumps(settings)))
    changed = sorted(k for k in {*old, *new} if k not in ignore and old.get(k) != new.get(k))
    if changed:
        diff = "; ".join(
            f"{k}: {_short(old.get(k))} there, {_short(new.get(k))} now" for k in changed
        )
        raise HlensInputError(
            f"{str(path.parent)!r} holds a {command} run with other settings ({diff}); rerun with "
            "the same options to resume it, or use another --out"
        )


def kill_point(stage: str) -> None:
    """Test-only: SIGKILL this process here when ``$HLENS_TEST_KILL_AT`` equals ``stage``.

    The kill tests use it to interrupt a run at an exact point (``"baselines"``: after the probe
    and ``h_neurons.json`` are written, before the baselines); unset, it does nothing.
    """
    if os.environ.get(KILL_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)
