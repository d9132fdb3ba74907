"""Input validation shared by the commands: models, neuron sets, datasets and option values.

Each helper runs inside :func:`hlens.errors.validating`, so a bad input surfaces as one
:class:`~hlens.errors.HlensInputError` saying what was received, what was expected and what to
do (see :mod:`hlens.errors` for the rule).

Example:
    >>> model = load_model("organism", device="cpu")  # doctest: +SKIP
    >>> h = load_neurons("runs/organism/h_neurons.json", model)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hlens
from hlens.errors import HlensInputError, one_line, validating
from hlens.model import Model
from hlens.neurons import NeuronSet
from hlens.sources import get_source

__all__ = ["MODEL_EXPECTED", "check_range", "load_model", "load_neurons", "load_source"]

#: what ``--model`` accepts
MODEL_EXPECTED = (
    "a bundled model (organism, organism-base), a Hugging Face checkpoint directory "
    "(config.json, weights, tokenizer) or a hub id (needs the network or the hub cache)"
)


def load_model(spec: Any, *, option: str = "--model", **kwargs: Any) -> Any:
    """:func:`hlens.load` with its failures (and a damaged checkpoint's) as input errors.

    Args:
        spec: what to load.
        option: the command-line option that named it, for the message.
        **kwargs: passed to :func:`hlens.load`.
    """
    local = Path(spec).expanduser() if isinstance(spec, (str, Path)) else None
    if local is not None and (local / "config.json").is_file():
        try:
            json.loads((local / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise HlensInputError(
                f"{option} {str(spec)!r}: its config.json is not readable JSON "
                f"({type(e).__name__}: {one_line(e)}); the checkpoint is damaged: save or download "
                "it again"
            ) from e
    try:
        with validating(option, MODEL_EXPECTED, value=spec), _quiet_loading():
            return hlens.load(spec, **kwargs)
    except HlensInputError as e:
        if local is not None and local.is_dir() and _is_safetensors_error(e.__cause__):
            raise HlensInputError(
                f"{option} {str(spec)!r}: a .safetensors weights file is damaged or truncated "
                f"({one_line(e.__cause__)}); save or download the checkpoint again"
            ) from e.__cause__
        raise


def _is_safetensors_error(e: BaseException | None) -> bool:
    return e is not None and type(e).__module__.startswith("safetensors")


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' weight-loading bar unless stderr is a terminal.

    Logs and CI then hold exactly one line when a command fails on its inputs.
    """
    if sys.stderr.isatty():
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_neurons(path: str | Path, model: Model = None, *, option: str = "--neurons") -> Any:
    """A :class:`~hlens.neurons.NeuronSet` file, checked against ``model``'s shape if given."""
    expected = "a NeuronSet JSON written by hlens find (RUN_DIR/h_neurons.json)"
    with validating(option, expected, value=str(path)):
        h = NeuronSet.load(path)
    if model is not None:
        with validating(option, value=str(path)):
            h.check_model(model.n_layers, model.d_mlp, what=f"model {model.name!r}")
    return h


def load_source(name: str, **kwargs: Any) -> Any:
    """:func:`hlens.sources.get_source`, refusing a dataset without questions."""
    with validating("--dataset", value=name):
        source = get_source(name, **kwargs)
    if not source.questions:
        raise HlensInputError(
            f"--dataset {name!r} holds no questions; expected at least a few dozen rows with a "
            "question and its gold answers"
        )
    return source


def check_range(
    option: str,
    values: int | float | Iterable[int | float] | None,
    lo: int | float | None = None,
    hi: int | float | None = None,
    *,
    integer: bool = False,
) -> None:
    """Refuse option values that are not finite or lie outside ``[lo, hi]`` (``None``: open).

    Raises:
        HlensInputError: naming the option, the bad value and the allowed range.
    """
    if values is None:
        return
    items = [values] if isinstance(values, (int, float)) else list(values)
    for v in items:
        bad = not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi)
        if bad or (integer and v != int(v)):
            lo_s = "-inf" if lo is None else f"{lo:g}"
            hi_s = "inf" if hi is None else f"{hi:g}"
            kind = "an integer" if integer else "a finite number"
            raise HlensInputError(
                f"{option} {v:g} is out of range; expected {kind} in [{lo_s}, {hi_s}]"
            )
