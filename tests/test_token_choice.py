"""Tests of hlens.token_choice: the next-token choice equals filtering the whole vocabulary, the
counter noise is its specified hash, and both noise sources sample the filtered distribution."""

from __future__ import annotations

import pytest
import torch

import hlens.token_choice as T
from hlens.sampling import SamplingConfig, row_seed
from tests.helpers import reference_choose, reference_filter


def _by_cfg(logits, gens, cfg):
    return T.choose(logits, gens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)


def test_noise_streams_refuse_an_unknown_source():
    assert isinstance(T.noise_streams([1], "mt19937")[0], torch.Generator)
    assert T.noise_streams([1], "counter")[0].seed == 1
    with pytest.raises(ValueError, match="noise must be one of .* got 'philox'"):
        T.noise_streams([1], "philox")


def _choices(choose, logits, seeds, cfg, steps=3):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return [choose(logits.roll(k, -1), gens, cfg).tolist() for k in range(steps)]


@pytest.mark.parametrize("vocab", [37, 1000, 49152])
def test_choose_filters_only_top_k_s_tokens_with_the_same_result(vocab):
    """Filtering and noising only the tokens top-k keeps picks what filtering the whole
    vocabulary picks, with the same noise stream (so stored samples do not change): continuous
    logits, masked logits, top-k off and on, ties with the k-th logit (kept, all of them)."""
    g = torch.Generator().manual_seed(vocab)
    n = 0
    for top_k in (0, 1, 5, 50, vocab):
        for top_p, temperature in ((1.0, 1.0), (0.9, 1.0), (0.5, 1.5), (0.95, 0.7)):
            cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
            logits = torch.randn(9, vocab, generator=g) * (1 + 4 * torch.rand(9, 1, generator=g))
            logits[3, : vocab // 2] = float("-inf")
            seeds = [n * 10 + r for r in range(9)]
            want = _choices(reference_choose, logits, seeds, cfg)
            assert _choices(_by_cfg, logits, seeds, cfg) == want, (top_k, top_p)
            n += 1
    # exact ties with the k-th largest logit: every tied token stays a candidate
    logits = (torch.randn(6, vocab, generator=g) * 2).round()
    for top_k in (1, 5, 20):
        cfg = SamplingConfig(temperature=1.0, top_k=top_k, top_p=1.0)
        ids, z = T._candidates(logits, top_k)
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        for r in range(len(logits)):
            kept = ids[r][z[r] > float("-inf")].tolist()
            assert kept == torch.nonzero(logits[r] >= kth[r]).flatten().tolist()  # in id order
        seeds = list(range(6))
        assert _choices(_by_cfg, logits, seeds, cfg) == _choices(
            reference_choose, logits, seeds, cfg
        )


def test_greedy_choice_is_argmax_with_its_ties_and_nans():
    """Greedy takes ``max(dim=-1).indices`` (faster than ``argmax``): the same index, the first of
    tied maxima, a NaN's when a row has one, on integer-valued logits full of ties."""
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        logits = torch.randint(-3, 3, (5, 1 + trial), generator=g).float()
        if trial % 3 == 0:
            logits[torch.rand(logits.shape, generator=g) < 0.05] = float("nan")
        if trial % 5 == 0:
            logits[torch.rand(logits.shape, generator=g) < 0.3] = float("-inf")
        got = T.choose(logits, [], temperature=0.0, top_k=50, top_p=0.9)
        assert torch.equal(got, logits.argmax(dim=-1)), logits


def _splitmix64(x: int) -> int:
    """SplitMix64's finalizer in Python integers (the specification of ``_mix64``)."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_counter_uniforms_are_the_specified_hash():
    """``counter_uniforms`` is SplitMix64 of (step, token), then of that xor the seed, top 53
    bits: the same integers on every device, so the same samples."""
    seeds = [0, 1, row_seed(0, "q1", 3), (1 << 63) - 1]
    steps, tokens = [0, 5, 49, 1023], [0, 17, 49151, 262143]
    got = T.counter_uniforms(
        torch.tensor(seeds), torch.tensor(steps), torch.tensor(tokens)[None].expand(4, 4)
    )
    for r, (seed, step) in enumerate(zip(seeds, steps)):
        for c, t in enumerate(tokens):
            key = _splitmix64(_splitmix64((step << 32) | t) ^ seed)
            assert got[r, c].item() == (key >> 11) * 2.0**-53
    stream = T.CounterStream(seeds[2])
    first = T._uniforms([stream], 10, None, torch.device("cpu"))
    assert stream.step == 1
    cpu = torch.device("cpu")
    again = T._uniforms([T.CounterStream(seeds[2])], 10, torch.tensor([[7, 2]]), cpu)
    assert again.tolist() == [[first[0, 7].item(), first[0, 2].item()]]


@pytest.mark.parametrize("noise", T.NOISE)
def test_samples_follow_the_filtered_distribution(noise):
    """Both noise sources sample the tempered, top-k and top-p filtered softmax: token
    frequencies over 20,000 rows are within 4.5 standard errors of its probabilities, and tokens
    outside it never come."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0, -6.0, 1.2])
    cfg = SamplingConfig(temperature=0.8, top_k=6, top_p=0.95, noise=noise)
    z = reference_filter(logits[None].double(), cfg)[0]
    p = z.softmax(-1)
    n = 20000
    gens = T.noise_streams([row_seed(0, f"q{i}", 0) for i in range(n)], cfg.noise)
    counts = torch.zeros(10)
    for _ in range(2):  # two steps of every row: the streams advance
        counts += torch.bincount(_by_cfg(logits.expand(n, 10), gens, cfg), minlength=10)
    freq, se = counts / (2 * n), (p * (1 - p) / (2 * n)).sqrt()
    assert (counts[p == 0] == 0).all() and (p > 0).sum() == 5
    assert ((freq - p).abs() <= 4.5 * se + 1e-12).all(), (freq, p)
