"""Identify H-neurons: sample, judge, keep consistent questions, split, CETT, sparse probe.

``hlens find`` (and :func:`find`) runs the paper's identification pipeline end to end and writes a
run directory::

    samples.jsonl            sampled responses (resumable)      consistency_samples.jsonl (official)
    judgements.json          labels per sample, funnel          splits.json, qids_{train,test}.json
    features/                CETT features (sharded, resumable) probe/ (safetensors + JSON)
    h_neurons.json           NeuronSet of positive-weight neurons
    summary.json             counts, metrics with intervals, baselines, controls, C path

Interrupting it loses at most one sampling batch or one feature shard; rerunning resumes.

The stages live in modules, in the order a run uses them: :mod:`~hlens.identify.config` (what a
run is asked and what it returns), :mod:`~hlens.identify.stages` (responses, judgements, labelled
examples, splits), :mod:`~hlens.identify.fit` (the probe and its C path),
:mod:`~hlens.identify.evaluate` (metrics, random-neuron baselines, controls, the result) and
:mod:`~hlens.identify.pipeline` (:func:`find`).

Example:
    >>> result = find(FindConfig(model="organism"), "runs/organism")  # doctest: +SKIP
    >>> result.h_neurons.count  # doctest: +SKIP
"""

from hlens.identify.config import (
    JUDGES,
    SPAN_EXTRACTORS,
    FindConfig,
    FindResult,
    HNeuronCount,
    ProbeSummary,
    RunFunnel,
    confound_lines,
)
from hlens.identify.evaluate import Evaluation
from hlens.identify.fit import PROBE_TOL, ProbeFit, answer_set, probe_training_set
from hlens.identify.pipeline import find
from hlens.identify.stages import Judged, Judgements, Labelled, degenerate_outputs

__all__ = [
    "JUDGES",
    "PROBE_TOL",
    "SPAN_EXTRACTORS",
    "Evaluation",
    "FindConfig",
    "FindResult",
    "HNeuronCount",
    "Judged",
    "Judgements",
    "Labelled",
    "ProbeFit",
    "ProbeSummary",
    "RunFunnel",
    "answer_set",
    "confound_lines",
    "degenerate_outputs",
    "find",
    "probe_training_set",
]
