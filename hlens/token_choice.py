"""The next token of each row: greedy, or sampled by the Gumbel-max trick from the tempered, top-k
and top-p filtered distribution, with per-row noise that does not depend on batching.

A row's noise comes from its own stream (:func:`noise_streams`), seeded per ``(seed, id,
sample index)`` by :func:`hlens.sampling.row_seed`:

- ``"mt19937"``: a CPU ``torch.Generator``, which draws one uniform per vocabulary token and step
  whatever the filters keep (the samples hlens has always drawn);
- ``"counter"``: :func:`counter_uniforms`, a SplitMix64 hash of ``(seed, step, token)`` computed
  on the logits' device for the tokens top-k keeps only (nothing is drawn on the CPU, and the
  values are the same on every device; other samples than ``"mt19937"``'s).

Temperature, top-p and the Gumbel transform are computed on the tokens top-k keeps (``top_k`` of
them, 50 by default, plus any tied with the last, of a vocabulary of 50k-260k). The choice
equals that of filtering and noising the whole vocabulary (``tests.helpers.reference_choose``),
up to float ties.

Example:
    >>> import torch
    >>> from hlens.token_choice import choose, noise_streams
    >>> logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]]).expand(3, 4)
    >>> streams = noise_streams([11, 12, 13], "counter")
    >>> tokens = choose(logits, streams, temperature=1.0, top_k=2, top_p=1.0)
    >>> set(tokens.tolist()) <= {0, 1}  # top-k 2 keeps tokens 0 and 1
    True
    >>> choose(logits, streams, temperature=0.0, top_k=2, top_p=1.0).tolist()  # greedy
    [0, 0, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int

__all__ = ["NOISE", "CounterStream", "choose", "counter_uniforms", "noise_streams"]

#: The noise sources (:attr:`hlens.sampling.SamplingConfig.noise`).
NOISE = ("mt19937", "counter")


class CounterStream:
    """One row's ``"counter"`` noise: its seed and the steps drawn so far.

    Its uniforms are :func:`counter_uniforms` of ``(seed, step, token)``, so any subset of the
    vocabulary can be drawn at any step, on any device, with the same values."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed) & ((1 << 63) - 1)
        self.step = 0


def noise_streams(seeds: Sequence[int], noise: str) -> list:
    """One noise stream per row: a seeded ``torch.Generator`` (``"mt19937"``) or a
    :class:`CounterStream` (``"counter"``)."""
    if noise not in NOISE:
        raise ValueError(f"noise must be one of {NOISE}, got {noise!r}")
    if noise == "counter":
        return [CounterStream(s) for s in seeds]
    return [torch.Generator().manual_seed(s) for s in seeds]


def _wrap64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_MIX = tuple(map(_wrap64, (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)))


def _shift_right(x: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> n) & ((1 << (64 - n)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer on int64 tensors (two's-complement wrapping, as on every device)."""
    x = x + _MIX[0]
    x = (x ^ _shift_right(x, 30)) * _MIX[1]
    x = (x ^ _shift_right(x, 27)) * _MIX[2]
    return x ^ _shift_right(x, 31)


def counter_uniforms(
    seeds: Int[torch.Tensor, " batch"],
    steps: Int[torch.Tensor, " batch"],
    tokens: Int[torch.Tensor, "batch n"],
) -> Float[torch.Tensor, "batch n"]:
    """Uniforms in [0, 1) (float64, 53 bits) that depend only on ``(seed, step, token)``: a
    SplitMix64 hash, computed with integer arithmetic on the tensors' device.

    Example:
        >>> import torch
        >>> u = counter_uniforms(torch.tensor([7]), torch.tensor([0]), torch.tensor([[3, 4]]))
        >>> bool(((0 <= u) & (u < 1)).all()), u.dtype
        (True, torch.float64)
        >>> one = counter_uniforms(torch.tensor([7]), torch.tensor([0]), torch.tensor([[4]]))
        >>> bool(one == u[0, 1])  # a token's uniform does not depend on which others are drawn
        True
    """
    key = _mix64((steps[:, None] << 32) | (tokens & 0xFFFFFFFF))
    key = _mix64(key ^ seeds[:, None])
    return _shift_right(key, 11).double() * 2.0**-53


def _uniforms(
    gens: list, vocab: int, ids: Int[torch.Tensor, "batch n"] | None, device: torch.device
) -> Float[torch.Tensor, "batch n"]:
    """This step's uniforms of each row, for the tokens ``ids`` (``None``: the whole vocabulary),
    on ``device`` for counter streams and on the CPU for generators (where they are drawn); each
    row's stream advances one step."""
    if gens and all(isinstance(g, CounterStream) for g in gens):
        seeds = torch.tensor([g.seed for g in gens], dtype=torch.long, device=device)
        steps = torch.tensor([g.step for g in gens], dtype=torch.long, device=device)
        for g in gens:
            g.step += 1
        if ids is None:
            ids = torch.arange(vocab, device=device).expand(len(gens), vocab)
        return counter_uniforms(seeds, steps, ids)
    u = torch.empty((len(gens), vocab), dtype=torch.float64)
    for r, g in enumerate(gens):
        torch.rand(vocab, generator=g, dtype=torch.float64, out=u[r])
    if ids is not None:
        u = u.gather(1, ids.cpu().clamp_max(vocab - 1))
    return u


def _candidates(
    logits: Float[torch.Tensor, "batch d_vocab"], top_k: int
) -> tuple[Int[torch.Tensor, "batch n"], Float[torch.Tensor, "batch n"]]:
    """The tokens top-k keeps, per row in token-id order, and their logits (float64): every token
    whose logit is at least the ``top_k``-th largest, so tokens tied with it are all kept (rows
    with fewer than the widest row's count are padded with ``-inf`` logits and a token id past
    the vocabulary, placed last)."""
    vocab = logits.shape[-1]
    values, ids = torch.topk(logits, top_k, dim=-1)
    kth = values[:, -1:]
    n_kept = int((logits >= kth).sum(-1).max())
    if n_kept > top_k:  # ties with the k-th logit: take them all, mask what a row does not keep
        values, ids = torch.topk(logits, n_kept, dim=-1)
        ids = ids.masked_fill(values < kth, vocab)
    ids = torch.sort(ids, dim=-1).values
    values = logits.gather(1, ids.clamp_max(vocab - 1)).double()
    return ids, values.masked_fill(ids == vocab, float("-inf"))


def _top_p(logits: Float[torch.Tensor, "batch n"], top_p: float) -> Float[torch.Tensor, "batch n"]:
    """``logits`` with the tokens outside the nucleus set to ``-inf``: in ascending order, those
    whose cumulative probability is at most ``1 - top_p`` (the most likely is always kept)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False, stable=True)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= 1 - top_p
    remove[:, -1] = False
    return logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))


def choose(
    logits: Float[torch.Tensor, "batch d_vocab"],
    gens: list,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
) -> Int[torch.Tensor, " batch"]:
    """Each row's next token: the argmax when ``temperature == 0``, else a sample from the row's
    tempered, top-k (``0``: off) and top-p (``1.0``: off) filtered distribution by the Gumbel-max
    trick, with each row's noise from its stream in ``gens`` (:func:`noise_streams`), which
    advances one step."""
    if temperature == 0:  # max's index is argmax's (the first of ties, NaN first), 2-3x faster
        return logits.max(dim=-1).indices
    vocab = logits.shape[-1]
    ids = None
    if 0 < top_k < vocab:
        ids, z = _candidates(logits, top_k)
    else:
        z = logits.double()
    u = _uniforms(gens, vocab, ids, z.device)
    z = z / temperature
    if top_p < 1.0:
        z = _top_p(z, top_p)
    exp_noise = -torch.log(u.clamp_min(1e-300))  # Exp(1) noise
    gumbel = -torch.log(exp_noise.clamp_min(1e-300))
    pick = (z + gumbel.to(z.device)).argmax(dim=-1)
    return pick if ids is None else ids.gather(1, pick[:, None]).squeeze(1)
