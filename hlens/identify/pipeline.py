"""The ``hlens find`` pipeline, stage by stage (see :mod:`hlens.identify`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hlens.checks import load_model, load_source
from hlens.errors import HlensInputError, validating
from hlens.features import extract_features, init_distributed, write_examples
from hlens.identify.config import JUDGES, FindConfig, FindResult
from hlens.identify.evaluate import (
    _controls,
    _evaluate,
    _ood,
    _probe_meta,
    _random_baseline,
    _summary,
)
from hlens.identify.fit import _fit_probe
from hlens.identify.stages import (
    Judgements,
    _check_degenerate,
    _check_imported,
    _file_columns,
    _judge,
    _label,
    _prompt_name,
    _responses,
    _split,
    _write_official_samples,
)
from hlens.prompts import prompt_format
from hlens.runlock import acquire, check_free, check_settings, kill_point
from hlens.sources import read_samples_file, source_sampling

__all__ = ["find"]


def _resolve(config: FindConfig) -> tuple[FindConfig, dict[str, dict[str, Any]] | None]:
    """The config with its sampling settled (the source's defaults, or the responses file's
    sample count), and the responses sampled elsewhere (``--samples``), if any."""
    cfg = config
    if cfg.sampling is None:
        sampling = source_sampling(cfg.dataset, model=cfg.model)
        cfg = FindConfig.from_dict({**cfg.to_dict(), "sampling": sampling.to_dict()})
    imported: dict[str, dict[str, Any]] | None = None  # responses sampled elsewhere
    if cfg.samples is not None:  # the file's responses decide how many samples there are
        with validating("--samples", "an official consistency_samples.jsonl or an hlens store"):
            imported = read_samples_file(cfg.samples)
        if not imported:
            raise HlensInputError(f"--samples {cfg.samples}: the file holds no records")
        n_file = len(next(iter(imported.values()))["responses"])
        sampling = {**cfg.sampling.to_dict(), "n_samples": n_file}
        cfg = FindConfig.from_dict({**cfg.to_dict(), "sampling": sampling})
    return cfg, imported


def find(config: FindConfig, out_dir: str | Path, *, progress: bool = True) -> FindResult:
    """Run the identification pipeline; returns (and writes, ``summary.json``) its
    :class:`FindResult`. See the module doc.

    The stages, each a function returning a small typed result: settle the config; validate
    the inputs and load the model and the source; sample (:func:`_responses`); judge and keep
    consistent questions (:class:`Judged`); label one example per question with its answer span
    (:class:`Labelled`, ``judgements.json``); split (:class:`~hlens.splits.Splits`); CETT
    features (:class:`~hlens.features.FeatureStore`); the probe (:class:`ProbeFit`); test
    metrics (:class:`Evaluation`); random-neuron baselines and confound controls; out of
    distribution; the summary (:class:`FindResult`).
    """
    t0 = time.time()
    cfg, imported = _resolve(config)
    out = Path(out_dir)
    # under torchrun: rank 0 samples; every rank extracts its share of feature shards
    rank, world, dist_device = init_distributed()
    main = rank == 0
    # every input is validated (options, run directory, model, dataset) before anything is written
    with validating():
        columns = _file_columns(cfg)  # before loading the model: a wrong option fails fast
    if main:  # another run in `out`, or one with other options, fails before the model loads
        check_free(out)
        check_settings(
            out / "config.json",
            cfg.to_dict(),
            command="hlens find",
            ignore=["device"],
            upgrade=FindConfig.upgrade_dict,
        )
    model = load_model(cfg.model, device=dist_device or cfg.device)
    source = load_source(
        cfg.dataset,
        model_name=cfg.model,
        limit=cfg.limit,
        judge=JUDGES[cfg.judge],
        samples=cfg.samples,
        **columns,
    )
    if imported is not None:
        imported = _check_imported(cfg.samples, imported, source.questions)
    _lock = acquire(out) if main else None  # one writer, until find returns or the process exits
    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    prompt_name = _prompt_name(cfg, model)
    fmt = prompt_format(prompt_name, model.tokenizer, cfg.instruction)

    # 1. sample (or read responses sampled elsewhere), 2. judge, 3. keep consistent questions
    records = _responses(model, source, imported, out, cfg, fmt, rank, world, progress)
    judged = _judge(source, records, cfg)
    if main:
        _write_official_samples(source, records, judged, cfg, out)
    labelled = _label(source, records, judged, cfg)
    if main:
        Judgements.of(judged, labelled).save(out / "judgements.json")
    _check_degenerate(labelled, judged, cfg, prompt_name)

    # 4. balanced, disjoint splits (by group when the source has groups)
    splits, groups = _split(labelled, judged, source, cfg)
    by_id = {e.id: e for e in labelled.examples}
    used = [by_id[i] for i in (*splits.train_ids, *splits.test_ids)]
    if main:
        splits.save(out / "splits.json")
        splits.to_official(out)
        write_examples(used, out / "examples.jsonl")

    # 5. CETT features of every example that is in a split (each rank its own shards)
    store = extract_features(
        model, used, out / "features", cfg.cett, fmt=fmt, progress=progress and main
    )
    if store is None:  # a rank other than 0: its shards are written, rank 0 does the rest
        return {}

    # 6. probe: C path on a validation split of train, refit on train, evaluate on test
    fit = _fit_probe(store, splits, groups, cfg, _probe_meta(cfg, source))
    fit.probe.save(out / "probe")
    h = fit.h_neurons(cfg.model, source.name)
    h.save(out / "h_neurons.json")
    kill_point("baselines")  # test-only (HLENS_TEST_KILL_AT): after the probe, before baselines
    ev = _evaluate(fit, splits, cfg)

    # 7. controls: random neurons of the same count, the question type, one-number confounds
    baseline = _random_baseline(fit, h, ev, cfg)
    controls = _controls(model, fmt, records, splits, labelled, ev, source, out, cfg)

    # 8. out of distribution (the organism's never-seen people)
    ood = _ood(model, source, fit.probe, out, cfg, fmt, progress)

    result = _summary(
        cfg, model, source, judged, labelled, splits, fit, h, ev, baseline, controls, ood,
        prompt_name, fmt, time.time() - t0,
    )  # fmt: skip
    result.save(out / "summary.json")
    return result
