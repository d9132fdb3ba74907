"""One writer per run directory (hlens.runlock): refusal, the holder's pid, stale locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hlens
from hlens.errors import RunDirInUseError
from hlens.runlock import LOCK_NAME, acquire, check_free

HOLD = (
    "import sys, time\n"
    "from hlens.runlock import acquire\n"
    "lock = acquire(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_lock_refused_with_pid_then_released(tmp_path):
    out = tmp_path / "run"
    lock = acquire(out)
    assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(RunDirInUseError, match=f"in use by pid {os.getpid()}"):
        acquire(out)
    with pytest.raises(RunDirInUseError):
        check_free(out)
    lock.release()
    lock.release()  # idempotent
    check_free(out)
    with acquire(out) as again:
        assert again.held
    assert not again.held


def test_check_free_writes_nothing(tmp_path):
    check_free(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_other_process_holds_then_sigkill_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        with pytest.raises(RunDirInUseError, match=f"in use by pid {proc.pid}"):
            acquire(out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock
    check_free(out)
    acquire(out).release()


def _organism_neurons(path: Path) -> Path:
    hlens.NeuronSet((hlens.NeuronId(0, 1), hlens.NeuronId(3, 7)), 4, 512).save(path)
    return path


@pytest.mark.parametrize("command", ["find", "steer"])
def test_two_real_processes_on_one_directory(tmp_path, command):
    """A second ``hlens find`` / ``hlens steer`` on a directory in use refuses (exit 2) at once."""
    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if command == "find":
        args = ["find", "--model", "organism", "--limit", "400", "--sample-batch-size", "8"]
    else:
        args = ["steer", "--neurons", str(_organism_neurons(tmp_path / "h.json"))]
    cmd = [sys.executable, "-m", "hlens.cli", *args, "--out", str(out), "--device", "cpu"]
    first = subprocess.Popen(
        [*cmd, "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while not (out / LOCK_NAME).exists() or not (out / LOCK_NAME).read_text().strip():
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline
            time.sleep(0.05)
        before = sorted(p.name for p in out.iterdir())
        second = subprocess.run(
            [*cmd, "--no-progress"], env=env, capture_output=True, text=True, timeout=120
        )
        assert first.poll() is None, "the first run ended before the second one started"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith(f"hlens {command}: error: ")
    assert f"in use by pid {first.pid}" in second.stderr
    assert second.stderr.count("\n") == 1
    assert set(before) <= {p.name for p in out.iterdir()}
    if command == "find":  # the first run's files are intact
        json.loads((out / "config.json").read_text())
