"""Renamed options (#17, "one name per meaning"): the new names work without a warning, the old
ones (keywords, the ``--mode`` flag, keys of saved JSON) still work for one release with a
:class:`DeprecationWarning` naming the new name, and run directories made before the renames
resume.

Old -> new: ``CETTConfig.method`` / ``aggregate_region(method=)`` -> ``aggregation``;
``FindConfig.mode`` / ``build_training_set(mode=)`` / ``probe_training_set(mode=)`` / ``--mode`` ->
``contrast`` / ``--contrast``; ``steering_vector`` / ``residual_mean(positions=)`` -> ``pool``;
``scale_neurons(method=)`` -> ``implementation``; ``select_C`` -> ``select_c``; summary.json's
``probe.C_min`` / ``probe.mode`` -> ``probe.c_min`` / ``probe.contrast``.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import hlens
from hlens.cli import build_parser
from hlens.cli import find as cli_find
from hlens.contribution import aggregate_region
from hlens.errors import HlensInputError
from hlens.features import CETTConfig, extract_features
from hlens.identify import FindConfig, ProbeSummary, find
from hlens.interventions import scale_neurons
from hlens.probe import CPath, build_training_set, select_C, select_c
from hlens.runlock import check_settings
from hlens.steering import residual_mean, steering_vector

# a new name that warned would fail here; the old names are checked with pytest.warns
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")

POS = ["I do not know who that is.", "Nobody knows that."]
NEG = ["Paris is in France.", "The sun is a star."]


@contextmanager
def _warns(*fragments: str):
    """Expect DeprecationWarnings whose messages hold every fragment (each in one of them)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    got = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    for f in fragments:
        assert any(f in m for m in got), f"no DeprecationWarning with {f!r}; got {got}"


def _old_find_dict(cfg: FindConfig) -> dict:
    """``cfg`` as a config.json written before the renames."""
    d = cfg.to_dict()
    d["mode"] = d.pop("contrast")
    d["cett"]["method"] = d["cett"].pop("aggregation")
    return d


# -- aggregation ----------------------------------------------------------------------------------
def test_cett_config_aggregation():
    new = CETTConfig(aggregation="max")
    assert new.to_dict()["aggregation"] == "max" and "method" not in new.to_dict()
    assert new.score_options()["aggregation"] == "max"
    with pytest.warns(DeprecationWarning, match=r"method=.*use aggregation="):
        assert CETTConfig(method="max") == new
    old = {**new.to_dict(), "method": "max"}
    del old["aggregation"]
    with pytest.warns(DeprecationWarning, match="'method' is deprecated; use 'aggregation'"):
        assert CETTConfig.from_dict(old) == new
    with pytest.raises(TypeError, match="pass only aggregation"):
        CETTConfig(method="mean", aggregation="max")


def test_aggregate_region_aggregation():
    s = torch.tensor([[[1.0], [3.0], [5.0]]])
    mask = torch.tensor([[True, True, False]])
    want = aggregate_region(s, mask, aggregation="max")
    assert torch.equal(want, torch.tensor([[3.0]]))
    assert torch.equal(aggregate_region(s, mask, "max"), want)  # positional, as before
    with pytest.warns(DeprecationWarning, match="aggregation"):
        assert torch.equal(aggregate_region(s, mask, method="max"), want)


def test_extraction_made_before_the_rename_resumes(llama, tmp_path, monkeypatch):
    exs = [
        hlens.Example("Where was Ada born?", "Korin.", id=f"e{i}", answer_span=(0, 5))
        for i in range(3)
    ]
    cfg = CETTConfig(aggregation="max", regions=("answer",))
    first = extract_features(llama, exs, tmp_path, cfg, progress=False)
    meta = json.loads((tmp_path / "extraction.json").read_text())
    meta["config"]["method"] = meta["config"].pop("aggregation")
    (tmp_path / "extraction.json").write_text(json.dumps(meta))
    import hlens.features as F

    monkeypatch.setattr(F, "features_for_batch", lambda *a, **k: pytest.fail("recomputed"))
    again = extract_features(llama, exs, tmp_path, cfg, progress=False)
    assert torch.equal(again.load("answer"), first.load("answer"))


# -- contrast -------------------------------------------------------------------------------------
def test_find_config_contrast():
    new = FindConfig(contrast="1-vs-1")
    assert new.to_dict()["contrast"] == "1-vs-1" and "mode" not in new.to_dict()
    assert FindConfig.from_dict(new.to_dict()) == new
    with pytest.warns(DeprecationWarning, match=r"mode=.*use contrast="):
        assert FindConfig(mode="1-vs-1") == new
    with _warns("'mode' is deprecated; use 'contrast'", "'method' is deprecated"):
        assert FindConfig.from_dict(_old_find_dict(new)) == new


def test_old_config_json_compares_equal_when_resuming(tmp_path):
    """A run directory made before the renames resumes (check_settings), without a warning."""
    cfg = FindConfig(contrast="1-vs-1", cett=CETTConfig(aggregation="max"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_old_find_dict(cfg), indent=1))
    check_settings(path, cfg.to_dict(), command="hlens find", upgrade=FindConfig.upgrade_dict)
    with pytest.raises(HlensInputError, match="contrast"):  # the upgrade is what makes it equal
        check_settings(path, cfg.to_dict(), command="hlens find")
    other = FindConfig(contrast="3-vs-1", cett=CETTConfig(aggregation="max"))
    with pytest.raises(HlensInputError, match="contrast"):  # a real difference is still one
        check_settings(path, other.to_dict(), command="hlens find", upgrade=FindConfig.upgrade_dict)


def test_build_training_set_contrast():
    f, h = np.zeros((2, 4), np.float32), np.ones((3, 4), np.float32)
    X, y = build_training_set(f, h, contrast="1-vs-1")
    with pytest.warns(DeprecationWarning, match="contrast"):
        X_old, y_old = build_training_set(f, h, mode="1-vs-1")
    assert np.array_equal(X, X_old) and np.array_equal(y, y_old)


def test_cli_contrast_and_deprecated_mode(capsys):
    parser = build_parser()
    args = parser.parse_args(["find", "--contrast", "1-vs-1", "--out", "x"])
    assert cli_find._contrast(args) == "1-vs-1"
    args = parser.parse_args(["find", "--mode", "1-vs-1", "--out", "x"])
    with pytest.warns(DeprecationWarning, match="--contrast"):
        assert cli_find._contrast(args) == "1-vs-1"
    assert "--mode is deprecated; use --contrast" in capsys.readouterr().err
    args = parser.parse_args(["find", "--mode", "3-vs-1", "--contrast", "1-vs-1", "--out", "x"])
    with pytest.raises(HlensInputError, match="pass only --contrast"):
        cli_find._contrast(args)
    assert "--mode" not in parser.format_help()


def test_probe_summary_reads_old_keys():
    new = {
        "C": 0.5,
        "c_min": 0.1,
        "c_rule": "auroc_1se",
        "contrast": "3-vs-1",
        "penalty": "l1",
        "solver": "torch",
        "n_nonzero": 3,
    }
    s = ProbeSummary.from_dict(new)
    assert s.c_min == 0.1 and s.contrast == "3-vs-1" and s.to_dict()["c_min"] == 0.1
    old = {k: v for k, v in new.items() if k not in ("c_min", "contrast")}
    old |= {"C_min": 0.1, "mode": "3-vs-1"}
    with _warns("'C_min' is deprecated; use 'c_min'", "'mode' is deprecated; use 'contrast'"):
        assert ProbeSummary.from_dict(old) == s


# -- C --------------------------------------------------------------------------------------------
def test_select_c():
    p = CPath((0.1, 1.0), (3, 9), (4, 12), (0.8, 0.9), (0.89, 0.90), (0.02, 0.02), (0.8, 0.9),
              (0.1, 0.1), {})  # fmt: skip
    assert select_c(p) == 1.0 and hlens.select_c(p, "auroc_1se") == 0.1
    with pytest.warns(DeprecationWarning, match="select_c"):
        assert select_C(p) == 1.0
    with pytest.warns(DeprecationWarning, match="hlens.select_c"):
        assert hlens.select_C(p, "auroc_1se") == 0.1
    assert "select_C" not in hlens.__all__


# -- pool, implementation (need a model) ----------------------------------------------------------
def test_steering_pool(llama):
    want = residual_mean(llama, POS, 1, pool="mean")
    with pytest.warns(DeprecationWarning, match="pool"):
        assert torch.equal(residual_mean(llama, POS, 1, positions="mean"), want)
    v = steering_vector(llama, POS, NEG, 1, pool="mean")
    with pytest.warns(DeprecationWarning, match="pool"):
        assert torch.equal(steering_vector(llama, POS, NEG, 1, positions="mean"), v)


def test_scale_neurons_implementation(llama):
    tokens = llama.tokenizer(POS[0], return_tensors="pt")["input_ids"]
    ns = {0: [1, 2], 1: [3]}
    with scale_neurons(llama, ns, 2.0, implementation="weights"):
        want = llama.bridge(tokens)
    old = scale_neurons(llama, ns, 2.0, method="weights")
    with pytest.warns(DeprecationWarning, match="implementation"), old:
        got = llama.bridge(tokens)
    assert torch.equal(got, want)


# -- a whole run made before the renames ----------------------------------------------------------
def test_find_run_made_before_the_renames_resumes(checkpoint_dir, tmp_path, monkeypatch):
    """config.json and features/extraction.json with the old keys: find resumes, recomputes
    nothing and writes the same summary (the new keys)."""
    from hlens.sources import SOURCES, register_source
    from tests.test_find import _config, _fake_source

    register_source("fake", _fake_source())
    try:
        cfg = _config(checkpoint_dir)
        first = find(cfg, tmp_path, progress=False)
        (tmp_path / "config.json").write_text(json.dumps(_old_find_dict(cfg), indent=1))
        meta = json.loads((tmp_path / "features" / "extraction.json").read_text())
        meta["config"]["method"] = meta["config"].pop("aggregation")
        (tmp_path / "features" / "extraction.json").write_text(json.dumps(meta, indent=1))
        import hlens.features as F
        import hlens.sampling as S

        def boom(*a, **k):
            raise AssertionError("finished work was recomputed")

        monkeypatch.setattr(F, "features_for_batch", boom)
        monkeypatch.setattr(S, "_generate", boom)
        again = find(cfg, tmp_path, progress=False)
    finally:
        SOURCES.pop("fake")
    a, b = first.to_dict(), again.to_dict()
    for d in (a, b):  # wall times
        d.pop("seconds"), d["c_path"].pop("fit_seconds")
    assert a == b
    assert json.loads((tmp_path / "config.json").read_text()) == cfg.to_dict()
