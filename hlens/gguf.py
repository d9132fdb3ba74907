"""GGUF files as float Hugging Face checkpoints, converted once and cached.

A ``.gguf`` file (llama.cpp's format, often quantized) is dequantized by transformers into a float
``*ForCausalLM`` and saved as an ordinary checkpoint directory (config, safetensors, tokenizer)
that the ``TransformerBridge`` boots like any other. The conversion runs once per file and dtype;
later loads boot from the cache.

Cache layout, under ``$HLENS_CACHE`` (default ``~/.cache/hlens``)::

    gguf/<sha256 of the .gguf>-<dtype>/      the checkpoint, with hlens_gguf.json (the manifest)
    gguf/hashes/<key>.json                   sidecar: a file's sha256 for its (path, size, mtime_ns)
    gguf/.tmp-...                            a conversion in progress (never loaded)

A checkpoint is built in a temporary directory next to its final place; the manifest (the GGUF's
sha256, the dtype and every file's size and sha256) is written last, and the directory is then
renamed into place in one step. An interrupted conversion leaves at most a ``.tmp-`` directory,
which is never loaded and is removed by the next conversion of the same file.

Every load checks the cache entry: the manifest must name the GGUF hash and dtype the directory
is keyed by, every file must have its recorded size, small files (config, tokenizer) their recorded
sha256 and weight files a sampled fingerprint (``verify_checkpoint(path, full=True)`` re-hashes
everything). A mismatch is not repaired silently: :class:`CacheEntryError` names the directory and
says to delete it, after which the next load rebuilds it.

Example:
    >>> from hlens.gguf import gguf_checkpoint
    >>> ckpt = gguf_checkpoint("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    >>> model = hlens.load(ckpt)  # same as hlens.load("SmolLM2-...gguf")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hlens._version import __version__
from hlens.registry import MLPFamily, UnsupportedModelError, family_for_architecture

__all__ = [
    "DTYPES",
    "CacheEntryError",
    "GGUFError",
    "GGUFHeader",
    "cache_root",
    "checkpoint_path",
    "file_sha256",
    "gguf_checkpoint",
    "read_gguf_header",
    "verify_checkpoint",
]

#: dtype names a GGUF checkpoint can be converted to.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

MANIFEST = "hlens_gguf.json"
_FORMAT = 1
_SMALL_FILE = 16 * 2**20  # files up to this size are fully re-hashed on every load
_SAMPLE = 64 * 2**10  # bytes per sample of a large file's fingerprint
_N_SAMPLES = 16


class GGUFError(ValueError):
    """A ``.gguf`` file that is truncated, corrupt or not a GGUF file at all."""


class CacheEntryError(ValueError):
    """A cached checkpoint whose files do not match its manifest (tampered with or corrupt)."""


# -- the cache ------------------------------------------------------------------------------------
def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """hlens's cache directory: ``cache_dir``, else ``$HLENS_CACHE``, else ``~/.cache/hlens``.

    Example:
        >>> cache_root("/tmp/x")
        PosixPath('/tmp/x')
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hlens"


def _dtype_name(dtype: torch.dtype | str) -> str:
    if isinstance(dtype, torch.dtype):
        for name, value in DTYPES.items():
            if value == dtype:
                return name
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return dtype.removeprefix("torch.")
    raise ValueError(f"a GGUF file can be converted to {', '.join(DTYPES)}; got dtype {dtype!r}")


def checkpoint_path(
    sha256: str, dtype: torch.dtype | str = torch.float32, *, cache_dir: Any = None
) -> Path:
    """Where the checkpoint of the GGUF file with this sha256 lives (whether or not it exists).

    Example:
        >>> checkpoint_path("ab" * 32, "bfloat16", cache_dir="/c").name[-9:]
        '-bfloat16'
    """
    return cache_root(cache_dir) / "gguf" / f"{sha256}-{_dtype_name(dtype)}"


def _sidecar(path: Path, cache_dir: Any) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_root(cache_dir) / "gguf" / "hashes" / f"{key}.json"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**22):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike[str], *, cache_dir: Any = None) -> str:
    """The sha256 of a file, remembered in a sidecar keyed by (path, size, mtime_ns).

    The second call on an unchanged file reads the sidecar instead of the file.

    Example:
        >>> file_sha256("model.gguf")  # doctest: +SKIP
        'b179c952...'
    """
    path = Path(path)
    st = path.stat()
    sidecar = _sidecar(path, cache_dir)
    stamp = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        known = json.loads(sidecar.read_text())
        if {k: known.get(k) for k in stamp} == stamp and len(known.get("sha256", "")) == 64:
            return str(known["sha256"])
    except (OSError, ValueError):
        pass
    digest = _hash_file(path)
    _remember_sha256(path, digest, cache_dir=cache_dir)
    return digest


def _remember_sha256(path: Path, digest: str, *, cache_dir: Any = None) -> None:
    """Record a file's sha256 in its sidecar (for a file whose hash was computed while writing)."""
    st = path.stat()
    stamp = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        _write_json_atomic(_sidecar(path, cache_dir), dict(stamp, sha256=digest))


# -- reading a GGUF header ------------------------------------------------------------------------
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file says about itself, read without touching its tensor data.

    Attributes:
        path: the file.
        version: GGUF format version (2 or 3).
        architecture: ``general.architecture`` (llama.cpp's name: ``"llama"``, ``"gemma3"``, ...).
        metadata: the scalar and string metadata; arrays appear as their length.
        tensor_types: ggml type name of each tensor (``"Q8_0"``, ``"F32"``, ...).
        file_size: bytes.
    """

    path: Path
    version: int
    architecture: str
    metadata: dict[str, Any] = field(repr=False)
    tensor_types: dict[str, str] = field(repr=False)
    file_size: int = 0

    @property
    def has_tokenizer(self) -> bool:
        return "tokenizer.ggml.model" in self.metadata and "tokenizer.ggml.tokens" in self.metadata


class _Cursor:
    def __init__(self, buf: Any, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated(self.pos + size)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise _Truncated(self.pos + n)
        self.pos += n

    def string(self) -> str:
        n = self.take("<Q")
        if self.pos + n > len(self.buf):
            raise _Truncated(self.pos + n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item]))
            elif item == _STRING:
                for _ in range(count):
                    self.skip(self.take("<Q"))
            else:
                raise _Corrupt(f"an array of unknown value type {item} at byte {self.pos}")
            return count  # arrays are only counted
        raise _Corrupt(f"unknown metadata value type {vtype} at byte {self.pos}")


class _Truncated(Exception):
    def __init__(self, needed: int) -> None:
        self.needed = needed


class _Corrupt(Exception):
    pass


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read and check a GGUF file's header, metadata and tensor table (not the tensor data).

    Checks the magic, the version, that every metadata value and tensor entry parses, that every
    tensor type is known, and that every tensor's data lies inside the file (a truncated download
    fails here, not halfway through a conversion).

    Raises:
        GGUFError: naming the file and what was expected.

    Example:
        >>> read_gguf_header("SmolLM2-135M-Instruct.Q4_1.gguf").architecture  # doctest: +SKIP
        'llama'
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    expected = "a complete GGUF v2/v3 file (llama.cpp's model format)"
    size = path.stat().st_size
    if size < 24:
        raise GGUFError(f"{path}: only {size} bytes; expected {expected}")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise GGUFError(
                f"{path}: does not start with the GGUF magic bytes (found {bytes(buf[:4])!r}); "
                f"expected {expected}"
            )
        cur = _Cursor(buf, path)
        cur.skip(4)
        try:
            version = cur.take("<I")
            if version not in (2, 3):
                raise _Corrupt(f"GGUF version {version} (hlens reads versions 2 and 3)")
            n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
            if n_tensors > size or n_kv > size:
                raise _Corrupt(f"implausible counts: {n_tensors} tensors, {n_kv} metadata keys")
            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key = cur.string()
                metadata[key] = cur.value(cur.take("<I"))
            entries = []
            for _ in range(n_tensors):
                name = cur.string()
                n_dims = cur.take("<I")
                if n_dims > 8:
                    raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
                dims = [cur.take("<Q") for _ in range(n_dims)]
                ggml_type, offset = cur.take("<I"), cur.take("<Q")
                entries.append((name, dims, ggml_type, offset))
        except _Truncated as e:
            raise GGUFError(
                f"{path}: truncated: its header needs at least {e.needed} bytes but the file has "
                f"{size}; expected {expected}. Download or reinstall it again."
            ) from None
        except _Corrupt as e:
            raise GGUFError(f"{path}: corrupt header: {e}; expected {expected}") from None
        header_end = cur.pos
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{path}: no general.architecture in its metadata; expected {expected}")
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFError(f"{path}: bad general.alignment {alignment!r}")
    data_start = -(-header_end // alignment) * alignment
    types: dict[str, str] = {}
    for name, dims, ggml_type, offset in entries:
        try:
            qtype = GGMLQuantizationType(ggml_type)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise GGUFError(
                f"{path}: tensor {name!r} has unknown ggml type {ggml_type}; expected {expected}"
            ) from None
        n_bytes = math.prod(dims) // block * type_size
        end = data_start + offset + n_bytes
        if end > size:
            raise GGUFError(
                f"{path}: truncated: tensor {name!r} ends at byte {end} but the file has {size} "
                f"bytes; expected {expected}. Download or reinstall it again."
            )
        types[name] = qtype.name
    return GGUFHeader(path, version, arch, metadata, types, size)


# -- which Hugging Face architecture a GGUF becomes -----------------------------------------------
#: llama.cpp architecture names whose transformers model_type is spelled differently.
_GGUF_MODEL_TYPES = {
    "gemma3": "gemma3_text",
    "gemma4": "gemma4_text",
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "command-r": "cohere",
}


def _hf_architecture(header: GGUFHeader) -> str:
    """The ``*ForCausalLM`` class transformers builds from this GGUF (as transformers maps it)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = header.architecture
    name = str(header.metadata.get("general.name", "")).lower()
    model_type = "mistral" if arch == "llama" and "mistral" in name else arch
    model_type = _GGUF_MODEL_TYPES.get(model_type, model_type)
    supported = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}
    cls = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if cls is None or not ({arch, model_type} & supported):
        raise UnsupportedModelError(
            f"{header.path}: its GGUF architecture {arch!r} is not one transformers can load "
            f"from a GGUF file as a causal LM (GGUF architectures it reads: "
            f"{', '.join(sorted(supported))})"
        )
    return cls


def _family(header: GGUFHeader) -> tuple[str, MLPFamily]:
    cls = _hf_architecture(header)
    try:
        return cls, family_for_architecture(cls)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(
            f"{header.path}: GGUF architecture {header.architecture!r} ({cls}): {e}"
        ) from None


# -- the cache entry ------------------------------------------------------------------------------
def _fingerprint(path: Path, size: int) -> str:
    """sha256 of ``_N_SAMPLES`` evenly spaced blocks and the size: cheap, catches truncation and
    most overwrites (``verify_checkpoint(full=True)`` catches every change)."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        span = max(size - _SAMPLE, 0)
        for i in range(_N_SAMPLES):
            f.seek(span * i // max(_N_SAMPLES - 1, 1))
            digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def _describe_files(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            size = p.stat().st_size
            entry: dict[str, Any] = {"size": size, "sha256": _hash_file(p)}
            if size > _SMALL_FILE:
                entry["fingerprint"] = _fingerprint(p, size)
            files[p.relative_to(root).as_posix()] = entry
    return files


def verify_checkpoint(path: str | os.PathLike[str], *, full: bool = False) -> dict[str, Any]:
    """Check a cached GGUF checkpoint against its manifest; return the manifest.

    Args:
        path: the checkpoint directory (``gguf/<sha256>-<dtype>`` in the cache).
        full: re-hash every file (default: sizes, small files' hashes, large files' fingerprints).

    Raises:
        CacheEntryError: naming the directory, what does not match, and the fix (delete it).

    Example:
        >>> verify_checkpoint(ckpt)["sha256"]  # doctest: +SKIP
        'b179c952...'
    """
    path = Path(path)

    def bad(why: str) -> CacheEntryError:
        return CacheEntryError(
            f"the cached GGUF checkpoint {path} is corrupt or was modified ({why}). Delete it "
            f"(rm -rf '{path}') and load the model again to rebuild it."
        )

    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise bad(f"no {MANIFEST}") from None
    except (OSError, ValueError) as e:
        raise bad(f"unreadable {MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise bad(f"{MANIFEST} is not an hlens manifest of format {_FORMAT}")
    expected_name = f"{manifest.get('sha256')}-{manifest.get('dtype')}"
    if path.name != expected_name:
        raise bad(f"its manifest records {expected_name!r}, but the directory is {path.name!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or "config.json" not in files:
        raise bad("its manifest lists no files")
    for rel, info in files.items():
        p = path / rel
        if not p.is_file():
            raise bad(f"{rel} is missing")
        size = p.stat().st_size
        if size != info.get("size"):
            raise bad(f"{rel} has {size} bytes, the manifest says {info.get('size')}")
        if full or size <= _SMALL_FILE:
            if _hash_file(p) != info.get("sha256"):
                raise bad(f"{rel} does not have its recorded sha256")
        elif _fingerprint(p, size) != info.get("fingerprint"):
            raise bad(f"{rel} does not match its recorded fingerprint")
    return manifest


def _clean_stale(parent: Path, key: str) -> None:
    """Remove ``.tmp-<key>-<pid>-*`` directories of conversions whose process is gone."""
    for tmp in parent.glob(f".tmp-{key}-*"):
        try:
            pid = int(tmp.name[len(f".tmp-{key}-") :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, OverflowError, OSError):  # not ours to judge: keep it
            continue


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not enabled and was:
            hf_logging.enable_progress_bar()


def _convert(gguf: Path, out: Path, dtype: torch.dtype, *, progress: bool) -> dict[str, Any]:
    """Dequantize ``gguf`` into a checkpoint at ``out``; return what the manifest records."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _progress_bars(progress):
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it; its weights
        # are already plain float tensors, so the marks are dropped.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tok.save_pretrained(out)
    _check_tokenizer(gguf, tok, out)
    return {"hf_architecture": type(model).__name__}


_PROBE = "Hello world. Q: What is the capital of France?\nA: Paris"


def _check_tokenizer(gguf: Path, tok: Any, out: Path) -> None:
    """The saved tokenizer must keep the special tokens, chat template and BOS of the GGUF's."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(out)
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template"):
        if getattr(tok, attr, None) != getattr(saved, attr, None):
            raise RuntimeError(
                f"converting {gguf}: the saved tokenizer's {attr} is {getattr(saved, attr, None)!r}"
                f", the GGUF's is {getattr(tok, attr, None)!r}"
            )
    want = tok(_PROBE, add_special_tokens=True)["input_ids"]
    got = saved(_PROBE, add_special_tokens=True)["input_ids"]
    if want != got:
        raise RuntimeError(f"converting {gguf}: the saved tokenizer encodes text differently")


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest, last: a directory without one is not a finished checkpoint."""
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def gguf_checkpoint(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """A float Hugging Face checkpoint directory of a ``.gguf`` file, converted once and cached.

    The first call dequantizes the file (tens of seconds for a 100M-parameter model) into
    ``<cache>/gguf/<sha256>-<dtype>``; later calls find it there (the file's hash is remembered
    per path, size and mtime, so the file is not re-read) and check it against its manifest.

    Args:
        path: the ``.gguf`` file.
        dtype: ``torch.float32`` (default), ``torch.bfloat16`` or ``torch.float16`` (or names).
        cache_dir: hlens cache root (default ``$HLENS_CACHE`` or ``~/.cache/hlens``).
        progress: show transformers' progress bars and a line saying what is being converted.

    Returns:
        The checkpoint directory (config.json, model.safetensors, tokenizer, hlens_gguf.json).

    Raises:
        FileNotFoundError: no such file.
        GGUFError: a truncated, corrupt or non-GGUF file (names it and what was expected).
        UnsupportedModelError: an architecture outside hlens's registry (names the file).
        CacheEntryError: a cache entry that does not match its manifest (delete it to rebuild).
        ValueError: a dtype other than float32, bfloat16 or float16.

    Example:
        >>> ckpt = gguf_checkpoint("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
        >>> sorted(p.name for p in ckpt.iterdir())[:2]  # doctest: +SKIP
        ['chat_template.jinja', 'config.json']
    """
    dtype_name = _dtype_name(dtype)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {str(path.resolve())!r}")
    header = read_gguf_header(path)
    sha = file_sha256(path, cache_dir=cache_dir)
    final = checkpoint_path(sha, dtype_name, cache_dir=cache_dir)
    if final.exists():
        verify_checkpoint(final)
        return final
    hf_arch, _ = _family(header)
    if not header.has_tokenizer:
        raise GGUFError(
            f"{path}: has no tokenizer in its metadata (tokenizer.ggml.model / tokens); hlens "
            "needs one"
        )
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(parent, final.name)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        if progress:
            print(
                f"hlens: converting {path.name} to a {dtype_name} checkpoint in {final} "
                "(once; later loads use it)",
                file=sys.stderr,
            )
        info = _convert(path, tmp, DTYPES[dtype_name], progress=progress)
        if info["hf_architecture"] != hf_arch:
            family_for_architecture(info["hf_architecture"])  # raises if unsupported

        try:
            import transformers

            tf_version = transformers.__version__
        except Exception:  # pragma: no cover
            tf_version = None
        manifest = {
            "format": _FORMAT,
            "sha256": sha,
            "dtype": dtype_name,
            "source": str(path.resolve()),
            "source_size": header.file_size,
            "gguf_architecture": header.architecture,
            "hf_architecture": info["hf_architecture"],
            "tensor_types": sorted(set(header.tensor_types.values())),
            "hlens_version": __version__,
            "transformers_version": tf_version,
            "convert_s": round(time.perf_counter() - start, 2),
            "files": _describe_files(tmp),
        }
        _write_manifest(tmp, manifest)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # another process finished the same conversion first; use its copy
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    verify_checkpoint(final)
    return final
