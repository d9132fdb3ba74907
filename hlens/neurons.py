"""Neuron identities: ``NeuronId`` and ``NeuronSet``.

A neuron is one unit of an MLP's hidden layer (the input of the down projection), named by its
``layer`` and ``index``. The *flat index* ``layer * d_mlp + index`` is the order of the official
H-Neurons classifier's feature vector.

Example:
    >>> s = NeuronSet.from_flat([3, 17], n_layers=2, d_mlp=16)
    >>> [(n.layer, n.index) for n in s]
    [(0, 3), (1, 1)]
    >>> NeuronSet.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hlens.records import reject_unknown

__all__ = ["NeuronId", "NeuronSet"]


@dataclass(frozen=True, order=True)
class NeuronId:
    """One MLP neuron: ``(layer, index)``.

    Example:
        >>> NeuronId(1, 5).flat(d_mlp=8)
        13
    """

    layer: int
    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or not isinstance(self.index, int):
            raise TypeError(
                "NeuronId needs integer layer and index, got "
                f"layer={self.layer!r}, index={self.index!r}"
            )
        if self.layer < 0 or self.index < 0:
            raise ValueError(f"NeuronId needs non-negative layer and index, got {self}")

    def flat(self, d_mlp: int) -> int:
        """The flat index ``layer * d_mlp + index`` (the official classifier's order)."""
        if self.index >= d_mlp:
            raise ValueError(f"neuron index {self.index} is out of range for d_mlp={d_mlp}")
        return self.layer * d_mlp + self.index

    @classmethod
    def from_flat(cls, flat: int, d_mlp: int) -> NeuronId:
        """Inverse of :meth:`flat`."""
        if flat < 0:
            raise ValueError(f"flat neuron index must be non-negative, got {flat}")
        return cls(int(flat) // d_mlp, int(flat) % d_mlp)


@dataclass(frozen=True)
class NeuronSet:
    """An ordered, duplicate-free set of neurons of one model shape, with optional weights.

    Attributes:
        neurons: the neurons, in a stable order.
        n_layers: number of layers of the model these neurons belong to.
        d_mlp: MLP width of that model.
        weights: optional per-neuron weight (e.g. a probe coefficient), aligned with ``neurons``.
        meta: free-form JSON-serialisable metadata (model id, how the set was chosen, ...).
    """

    neurons: tuple[NeuronId, ...]
    n_layers: int
    d_mlp: int
    weights: tuple[float, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        neurons = tuple(n if isinstance(n, NeuronId) else NeuronId(*n) for n in self.neurons)
        object.__setattr__(self, "neurons", neurons)
        if self.n_layers <= 0 or self.d_mlp <= 0:
            raise ValueError(
                f"n_layers and d_mlp must be positive, got {self.n_layers}, {self.d_mlp}"
            )
        if len(set(neurons)) != len(neurons):
            raise ValueError("NeuronSet has duplicate neurons")
        for n in neurons:
            if n.layer >= self.n_layers or n.index >= self.d_mlp:
                raise ValueError(
                    f"{n} is outside a model with n_layers={self.n_layers}, d_mlp={self.d_mlp}"
                )
        if self.weights is not None:
            weights = tuple(float(w) for w in self.weights)
            if len(weights) != len(neurons):
                raise ValueError(f"NeuronSet has {len(neurons)} neurons but {len(weights)} weights")
            object.__setattr__(self, "weights", weights)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_flat(
        cls,
        flat: Iterable[int],
        *,
        n_layers: int,
        d_mlp: int,
        weights: Sequence[float] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> NeuronSet:
        """Build a set from flat indices ``layer * d_mlp + index``."""
        flat = [int(f) for f in flat]
        for f in flat:
            if not 0 <= f < n_layers * d_mlp:
                raise ValueError(
                    f"flat index {f} is outside [0, {n_layers * d_mlp}) for n_layers={n_layers}, "
                    f"d_mlp={d_mlp}"
                )
        return cls(
            tuple(NeuronId.from_flat(f, d_mlp) for f in flat),
            n_layers,
            d_mlp,
            tuple(weights) if weights is not None else None,
            dict(meta or {}),
        )

    @classmethod
    def random(
        cls,
        n: int,
        *,
        n_layers: int,
        d_mlp: int,
        seed: int = 0,
        layer_counts: Sequence[int] | None = None,
        exclude: NeuronSet | None = None,
    ) -> NeuronSet:
        """A seeded random set of ``n`` neurons.

        Args:
            n: how many neurons (ignored when ``layer_counts`` is given).
            n_layers: model depth.
            d_mlp: model MLP width.
            seed: random seed.
            layer_counts: neurons to draw per layer (a layer-matched control for another set).
            exclude: neurons never drawn (e.g. the set this one controls for).
        """
        gen = torch.Generator().manual_seed(seed)
        banned = set(exclude.neurons) if exclude is not None else set()
        if layer_counts is None:
            flat = torch.randperm(n_layers * d_mlp, generator=gen)
            chosen: list[NeuronId] = []
            for f in flat.tolist():
                nid = NeuronId.from_flat(f, d_mlp)
                if nid not in banned:
                    chosen.append(nid)
                if len(chosen) == n:
                    break
        else:
            if len(layer_counts) != n_layers:
                raise ValueError(
                    f"layer_counts has {len(layer_counts)} entries, expected n_layers={n_layers}"
                )
            chosen = []
            for layer, count in enumerate(layer_counts):
                perm = torch.randperm(d_mlp, generator=gen).tolist()
                picked = [NeuronId(layer, i) for i in perm if NeuronId(layer, i) not in banned]
                if len(picked) < count:
                    raise ValueError(
                        f"layer {layer} has only {len(picked)} neurons to draw {count}"
                    )
                chosen.extend(picked[:count])
        if len(chosen) < (n if layer_counts is None else sum(layer_counts)):
            raise ValueError(f"cannot draw {n} neurons from a model with {n_layers * d_mlp}")
        return cls(tuple(sorted(chosen)), n_layers, d_mlp, None, {"random_seed": seed})

    def layer_matched_random(self, seed: int = 0) -> NeuronSet:
        """A random set with the same number of neurons in each layer, disjoint from this one."""
        return NeuronSet.random(
            len(self),
            n_layers=self.n_layers,
            d_mlp=self.d_mlp,
            seed=seed,
            layer_counts=self.layer_counts(),
            exclude=self,
        )

    # -- views --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.neurons)

    def __iter__(self) -> Iterator[NeuronId]:
        return iter(self.neurons)

    def __contains__(self, item: object) -> bool:
        return item in self.neurons

    def flat(self) -> torch.Tensor:
        """Flat indices as a ``long`` tensor, in this set's order."""
        return torch.tensor([n.flat(self.d_mlp) for n in self.neurons], dtype=torch.long)

    def layer_counts(self) -> list[int]:
        """Number of neurons in each layer."""
        counts = [0] * self.n_layers
        for n in self.neurons:
            counts[n.layer] += 1
        return counts

    def by_layer(self) -> dict[int, list[int]]:
        """``{layer: [index, ...]}`` for the layers that have neurons in this set."""
        out: dict[int, list[int]] = {}
        for n in self.neurons:
            out.setdefault(n.layer, []).append(n.index)
        return out

    def mask(self) -> torch.Tensor:
        """A boolean ``[n_layers, d_mlp]`` mask of the set."""
        m = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.bool)
        for n in self.neurons:
            m[n.layer, n.index] = True
        return m

    def fraction(self) -> float:
        """Share of all the model's neurons that are in this set."""
        return len(self) / (self.n_layers * self.d_mlp)

    def top(self, k: int) -> NeuronSet:
        """The ``k`` neurons with the largest weights (needs weights)."""
        if self.weights is None:
            raise ValueError("top(k) needs a NeuronSet with weights")
        order = sorted(range(len(self)), key=lambda i: -self.weights[i])[:k]
        return NeuronSet(
            tuple(self.neurons[i] for i in order),
            self.n_layers,
            self.d_mlp,
            tuple(self.weights[i] for i in order),
            dict(self.meta),
        )

    def check_model(self, n_layers: int, d_mlp: int, *, what: str = "model") -> None:
        """Raise ``ValueError`` unless this set was made for a model of this shape."""
        if (n_layers, d_mlp) != (self.n_layers, self.d_mlp):
            raise ValueError(
                f"this NeuronSet is for a model with n_layers={self.n_layers}, d_mlp={self.d_mlp}, "
                f"but the {what} has n_layers={n_layers}, d_mlp={d_mlp}"
            )

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n_layers": self.n_layers,
            "d_mlp": self.d_mlp,
            "neurons": [
                {"layer": n.layer, "index": n.index, "flat": n.flat(self.d_mlp)}
                | ({"weight": self.weights[i]} if self.weights is not None else {})
                for i, n in enumerate(self.neurons)
            ],
            "meta": self.meta,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NeuronSet:
        reject_unknown("NeuronSet", d, ("n_layers", "d_mlp", "neurons", "meta"))
        try:
            n_layers, d_mlp, items = int(d["n_layers"]), int(d["d_mlp"]), d["neurons"]
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"not a NeuronSet dict: expected keys n_layers, d_mlp, neurons; got {sorted(d)}"
            ) from e
        neurons = tuple(NeuronId(int(x["layer"]), int(x["index"])) for x in items)
        has_w = bool(items) and all("weight" in x for x in items)
        weights = tuple(float(x["weight"]) for x in items) if has_w else None
        return cls(neurons, n_layers, d_mlp, weights, dict(d.get("meta", {})))

    def save(self, path: str | Path) -> None:
        """Write the set as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        """Read a set written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no NeuronSet file at {path}")
        return cls.from_dict(json.loads(path.read_text()))
