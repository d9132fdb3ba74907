"""Exact activation patching: golden values, identities, batching and errors."""

from __future__ import annotations

import pytest
import torch

from hlens.neurons import NeuronSet
from hlens.patching import (
    PatchResult,
    capture,
    exact_patching,
    forward_metric,
    logit_diff,
    match_lengths,
    patch_pairs,
)

# Pairs of equal token length under the tiny test tokenizer (9 and 15 tokens).
CLEAN = ["Where was Ada Vell born?", "The quick brown fox jumps"]
CORRUPT = ["Where is Ada Vell born?", "The lazy brown dog jumps"]
METRIC = logit_diff(5, 7)


def test_golden_patching_values(llama):
    # Pinned on the seeded tiny Llama (tests/helpers.py). A change here is a change in what
    # hlens computes and must be explained in the commit.
    ex = exact_patching(llama, CLEAN, CORRUPT, METRIC)
    torch.testing.assert_close(ex.clean_metric, torch.tensor([1.95634, 0.23602]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        ex.corrupt_metric, torch.tensor([2.21500, 0.31400]), atol=1e-4, rtol=0
    )
    golden = torch.tensor(
        [
            [-0.05067, 0.08679, -0.07454, -0.06582, 0.08385, -0.01555],
            [0.00012, -0.00108, 0.00519, -0.00351, 0.01506, -0.09392],
        ]
    )
    torch.testing.assert_close(ex.scores[:, :6], golden, atol=1e-4, rtol=0)
    assert ex.scores.abs().argmax(1).tolist() == [35, 44]
    heads = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="heads")
    golden_heads = torch.tensor(
        [[-0.69418, -0.47394, -0.20544, -0.40084], [-0.27641, -0.06934, -0.39487, 0.27184]]
    )
    torch.testing.assert_close(heads.scores, golden_heads, atol=1e-4, rtol=0)
    resid = exact_patching(
        llama, CLEAN, CORRUPT, METRIC, target="resid", direction="corrupt_to_clean"
    )
    # Layer 0's residual is the embedding: only positions whose tokens differ have an effect.
    assert resid.scores.shape == (2, 15)
    torch.testing.assert_close(
        resid.scores[0, 4:6], torch.tensor([0.46191, -0.21006]), atol=1e-4, rtol=0
    )
    assert resid.scores[0, :4].abs().max() == 0


@pytest.mark.parametrize("target", ["neurons", "heads", "resid"])
def test_patching_a_run_onto_itself_changes_nothing(tiny_model, target):
    res = exact_patching(tiny_model, CLEAN, CLEAN, METRIC, target=target)
    # zero up to float32 noise from running the repeated batch through different kernels
    assert res.per_pair.abs().max() < 1e-5
    torch.testing.assert_close(res.clean_metric, res.corrupt_metric)


def _manual(model, clean, corrupt, hook, fn_index, metric=METRIC):
    """Run the target with the activation at ``hook`` replaced where ``fn_index`` says."""
    c, k = patch_pairs(model, clean, corrupt)
    src = capture(model, c, [hook])[hook]

    def replace(t, *, hook):
        t = t.clone()
        idx = fn_index(t)
        t[idx] = src[idx]
        return t

    with torch.no_grad():
        base = forward_metric(model, k, metric)
        patched = forward_metric(model, k, metric, [(hook, replace)])
    return patched - base


def test_exact_patching_equals_running_with_the_activation_replaced(llama):
    fam = llama.family
    ex = exact_patching(llama, CLEAN, CORRUPT, METRIC, layers=[1])
    want = _manual(llama, CLEAN, CORRUPT, fam.activation_hook(1), lambda t: (..., 35))
    torch.testing.assert_close(ex.per_pair[:, 0, 35], want)
    heads = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="heads")
    want = _manual(
        llama, CLEAN, CORRUPT, "blocks.1.attn.hook_z", lambda t: (slice(None),) * 2 + (2,)
    )
    torch.testing.assert_close(heads.per_pair[:, 1, 2], want)
    resid = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="resid")
    want = _manual(llama, CLEAN, CORRUPT, "blocks.1.hook_resid_pre", lambda t: (slice(None), 3))
    torch.testing.assert_close(resid.per_pair[:, 1, 3], want)


def test_group_patching_patches_the_set_at_once(llama):
    one = NeuronSet.from_flat([35], n_layers=2, d_mlp=48)
    both = NeuronSet.from_flat([3, 48 + 35], n_layers=2, d_mlp=48, meta={"name": "pair"})
    res = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="group", neurons=[one, both])
    assert res.groups == ("group0", "pair") and res.scores.shape == (2,)
    neurons = exact_patching(llama, CLEAN, CORRUPT, METRIC, layers=[0])
    torch.testing.assert_close(res.per_pair[:, 0], neurons.per_pair[:, 0, 35])
    # A two-layer group is not the sum of its parts in general, but equals a manual joint patch.
    c, k = patch_pairs(llama, CLEAN, CORRUPT)
    names = [llama.family.activation_hook(i) for i in (0, 1)]
    src = capture(llama, c, names)

    def hook_for(name, idx):
        def h(t, *, hook):
            t = t.clone()
            t[..., idx] = src[name][..., idx]
            return t

        return h

    with torch.no_grad():
        base = forward_metric(llama, k, METRIC)
        joint = forward_metric(
            llama,
            k,
            METRIC,
            [(names[0], hook_for(names[0], 3)), (names[1], hook_for(names[1], 35))],
        )
    torch.testing.assert_close(res.per_pair[:, 1], joint - base)


def test_batching_and_padding_do_not_change_results(llama):
    a = exact_patching(llama, CLEAN, CORRUPT, METRIC, layers=[1], max_rows=512)
    b = exact_patching(llama, CLEAN, CORRUPT, METRIC, layers=[1], max_rows=10)  # 5 per pass
    torch.testing.assert_close(a.per_pair, b.per_pair, atol=1e-5, rtol=1e-4)
    left_c = llama.tokenize(CLEAN, padding_side="left")
    left_k = llama.tokenize(CORRUPT, padding_side="left")
    c = exact_patching(llama, left_c, left_k, METRIC, layers=[1])
    torch.testing.assert_close(a.per_pair, c.per_pair, atol=1e-5, rtol=1e-4)
    # 2 baseline runs + 1 source run + one patched row per neuron and pair
    assert a.meta["forward_rows"] == 2 * 2 + 2 + 2 * 48


def test_unequal_lengths_and_bad_options_raise_clear_errors(llama):
    with pytest.raises(ValueError, match=r"same number of tokens.*pair 0: 9 vs 11"):
        exact_patching(llama, CLEAN, ["Where was Ada Vell sits?", CORRUPT[1]], METRIC)
    with pytest.raises(ValueError, match="2 clean prompts but 1 corrupted"):
        exact_patching(llama, CLEAN, CORRUPT[:1], METRIC)
    with pytest.raises((ValueError, TypeError), match="direction"):
        exact_patching(llama, CLEAN, CORRUPT, METRIC, direction="sideways")
    with pytest.raises(ValueError, match="neurons="):
        exact_patching(llama, CLEAN, CORRUPT, METRIC, target="group")
    with pytest.raises(ValueError, match="one value per row"):
        exact_patching(llama, CLEAN, CORRUPT, lambda logits, batch: logits[:, -1], layers=[0])


def test_match_lengths_builds_equal_length_pairs(llama):
    pairs = match_lengths(llama, CLEAN, ["The lazy brown dog jumps", "Where is Ada Vell born?"])
    assert pairs == [(CLEAN[0], "Where is Ada Vell born?"), (CLEAN[1], "The lazy brown dog jumps")]
    assert match_lengths(llama, CLEAN, ["Where was Ada Vell sits?"]) == []


def test_result_round_trips(llama, tmp_path):
    res = exact_patching(llama, CLEAN, CORRUPT, METRIC, target="heads")
    back = PatchResult.from_dict(res.to_dict())
    torch.testing.assert_close(back.scores, res.scores)
    assert back.layers == (0, 1) and back.meta == res.meta
    res.save(tmp_path / "heads")
    loaded = PatchResult.load(tmp_path / "heads")
    torch.testing.assert_close(loaded.per_pair, res.per_pair)
    recs = res.records()
    assert len(recs) == 8 and set(recs[0]) == {"layer", "head", "score"}
    assert abs(res.top(1)[0]["score"]) == res.scores.abs().max().item()
    with pytest.raises(ValueError, match="method"):
        PatchResult("heads", "guess", "clean_to_corrupt", res.scores, res.per_pair, (0, 1),
                    res.clean_metric, res.corrupt_metric)  # fmt: skip


@pytest.mark.parametrize("target", ["neurons", "heads"])
def test_last_token_patching_equals_a_full_run_patched_at_the_last_token(tiny_model, target):
    # The KV-cached path (prefix once, the last token per patch) against full forward passes
    # with the activation replaced at each sequence's last token only, on every family.
    hook = tiny_model.family.activation_hook(1) if target == "neurons" else "blocks.1.attn.hook_z"
    unit = 5 if target == "neurons" else 1
    fast = exact_patching(tiny_model, CLEAN, CORRUPT, METRIC, target=target, patch_at="last")
    c, _ = patch_pairs(tiny_model, CLEAN, CORRUPT)
    last = c.attention_mask.sum(1) - 1
    rows = torch.arange(len(CLEAN))

    want = _manual(tiny_model, CLEAN, CORRUPT, hook, lambda t: (rows, last, unit))
    torch.testing.assert_close(fast.per_pair[:, 1, unit], want, atol=2e-5, rtol=1e-4)
    assert fast.meta["patch_at"] == "last"


def test_last_token_attribution_matches_its_exact_patching_to_first_order(llama):
    from hlens.attribution import attribution_patching

    same = exact_patching(llama, CLEAN, CLEAN, METRIC, patch_at="last")
    assert same.per_pair.abs().max() < 1e-5  # no-op patches stay no-ops on the cached path
    ex = exact_patching(llama, CLEAN, CORRUPT, METRIC, patch_at="last")
    atp = attribution_patching(llama, CLEAN, CORRUPT, METRIC, patch_at="last")
    full = attribution_patching(llama, CLEAN, CORRUPT, METRIC)
    a, e = atp.scores.flatten(), ex.scores.flatten()
    assert torch.corrcoef(torch.stack([a, e]))[0, 1] > 0.9
    assert not torch.allclose(atp.scores, full.scores)  # the restriction is real
    with pytest.raises(ValueError, match="patch_at"):
        exact_patching(llama, CLEAN, CORRUPT, METRIC, target="resid", patch_at="last")
