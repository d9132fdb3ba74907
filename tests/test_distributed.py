"""Data-parallel extraction: two gloo processes under torchrun give the features of one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from hlens.features import FeatureStore, write_examples
from tests.test_features import make_examples


def _free_port() -> int:
    """A free loopback port; skips where there is no usable loopback (``unshare -n``)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        try:
            socket.create_connection(s.getsockname(), timeout=5).close()
        except OSError as e:  # a network namespace without interfaces: lo is down
            pytest.skip(f"torchrun needs the loopback interface, which is down here ({e})")
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(checkpoint_dir, tmp_path):
    exs = make_examples(13)
    write_examples(exs, tmp_path / "examples.jsonl")
    common = [
        "--model",
        str(checkpoint_dir("llama")),
        "--examples",
        str(tmp_path / "examples.jsonl"),
        "--shard-size",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    one = subprocess.run(
        [sys.executable, "-m", "hlens.cli", "features", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = subprocess.run(
        [
            torchrun,
            "--nproc_per_node=2",
            f"--master_port={_free_port()}",
            "-m",
            "hlens.cli",
            "features",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = FeatureStore(tmp_path / "one"), FeatureStore(tmp_path / "two")
    assert a.ids == b.ids == [e.id for e in exs]
    for region in ("answer", "all_except_answer"):
        assert torch.equal(a.load(region), b.load(region))
    # each rank wrote its own shards: 5 shards of 3 examples, split 0,2,4 / 1,3
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*.json")) == [
        f"shard-{k:05d}.json" for k in range(5)
    ]
