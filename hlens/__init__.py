"""hlens: find, explain and steer hallucination-associated neurons (H-Neurons).

Built on TransformerLens 4's ``TransformerBridge``. Start with :func:`hlens.load`; the three jobs
are :func:`hlens.find` (identify; :mod:`hlens.identify`), :func:`hlens.steer_sweep` and
:func:`hlens.scale_neurons` (impact) and :func:`hlens.origin.origin` /
:func:`hlens.parameter_inertia` (origin); :func:`hlens.explain_run.explain` writes the neurons'
report cards. :func:`hlens.cett` computes CETT scores (:mod:`hlens.contribution`).

Example:
    >>> import hlens
    >>> hlens.NeuronSet.from_flat([5], n_layers=2, d_mlp=4).neurons
    (NeuronId(layer=1, index=1),)
"""

from hlens import contribution as _contribution
from hlens import identify as _identify
from hlens._deprecate import moved_module as _moved_module
from hlens._version import __version__ as __version__
from hlens.attribution import attribution_patching as attribution_patching
from hlens.attribution import compare_scores as compare_scores
from hlens.attribution import direct_logit_attribution as direct_logit_attribution
from hlens.attribution import integrated_gradients as integrated_gradients
from hlens.cache import NeuronCache as NeuronCache
from hlens.contribution import aggregate_region as aggregate_region
from hlens.contribution import cett as cett
from hlens.datasets import load_qa_file as load_qa_file
from hlens.datasets import load_triviaqa as load_triviaqa
from hlens.examples import Example as Example
from hlens.explain import NeuronCard as NeuronCard
from hlens.explain import report_cards as report_cards
from hlens.explain_run import ExplainConfig as ExplainConfig
from hlens.explain_run import ExplainResult as ExplainResult
from hlens.features import CETTConfig as CETTConfig
from hlens.features import FeatureStore as FeatureStore
from hlens.features import extract_features as extract_features
from hlens.gguf import GGUFError as GGUFError
from hlens.gguf import gguf_checkpoint as gguf_checkpoint
from hlens.identify import FindConfig as FindConfig
from hlens.identify import FindResult as FindResult
from hlens.identify import find as find
from hlens.interventions import ablate_neurons as ablate_neurons
from hlens.interventions import neuron_means as neuron_means
from hlens.interventions import scale_neurons as scale_neurons
from hlens.judge import Judge as Judge
from hlens.judge import Judgement as Judgement
from hlens.judge import RuleJudge as RuleJudge
from hlens.judge import consistency_filter as consistency_filter
from hlens.judge import locate_answer as locate_answer
from hlens.metrics import ProbeMetrics as ProbeMetrics
from hlens.metrics import strata_control as strata_control
from hlens.model import Model as Model
from hlens.model import load as load
from hlens.neurons import NeuronId as NeuronId
from hlens.neurons import NeuronSet as NeuronSet
from hlens.origin import OriginConfig as OriginConfig
from hlens.origin import OriginResult as OriginResult
from hlens.origin import backward_transfer as backward_transfer
from hlens.origin import inertia_test as inertia_test
from hlens.origin import parameter_inertia as parameter_inertia
from hlens.patching import PatchResult as PatchResult
from hlens.patching import exact_patching as exact_patching
from hlens.patching import logit_diff as logit_diff
from hlens.probe import NeuronProbe as NeuronProbe
from hlens.probe import build_training_set as build_training_set
from hlens.probe import c_min as c_min
from hlens.probe import c_path as c_path
from hlens.probe import random_neuron_baseline as random_neuron_baseline
from hlens.probe import select_c as select_c
from hlens.prompts import PAPER_INSTRUCTION as PAPER_INSTRUCTION
from hlens.prompts import PromptFormat as PromptFormat
from hlens.prompts import TokenBatch as TokenBatch
from hlens.prompts import render as render
from hlens.prompts import tokenize_examples as tokenize_examples
from hlens.registry import MLPFamily as MLPFamily
from hlens.registry import UnsupportedModelError as UnsupportedModelError
from hlens.registry import register_family as register_family
from hlens.registry import supported_architectures as supported_architectures
from hlens.report import write_report as write_report
from hlens.sampling import SamplingConfig as SamplingConfig
from hlens.sampling import sample_responses as sample_responses
from hlens.splits import Splits as Splits
from hlens.splits import make_splits as make_splits
from hlens.steering import ablate_direction as ablate_direction
from hlens.steering import steer_residual as steer_residual
from hlens.steering import steering_vector as steering_vector
from hlens.suites import Suite as Suite
from hlens.suites import SuiteResult as SuiteResult
from hlens.sweep import SteerConfig as SteerConfig
from hlens.sweep import SteerResult as SteerResult
from hlens.sweep import steer_sweep as steer_sweep
from hlens.views import View as View
from hlens.views import colored_tokens as colored_tokens
from hlens.views import effects_view as effects_view
from hlens.views import text_neuron_activations as text_neuron_activations
from hlens.views import topk_samples as topk_samples
from hlens.zoo import KnownModel as KnownModel
from hlens.zoo import ModelNotInstalledError as ModelNotInstalledError
from hlens.zoo import get_known as get_known
from hlens.zoo import known_models as known_models
from hlens.zoo import register_model as register_model

# the modules that held find() and cett() are hlens.identify and hlens.contribution; their old
# paths import for one release, with a warning (hlens.find and hlens.cett are the functions)
_moved_module("hlens.find", _identify)
_moved_module("hlens.cett", _contribution)
del _contribution, _identify, _moved_module

__all__ = [
    "PAPER_INSTRUCTION",
    "CETTConfig",
    "Example",
    "ExplainConfig",
    "ExplainResult",
    "FeatureStore",
    "FindConfig",
    "FindResult",
    "GGUFError",
    "Judge",
    "Judgement",
    "KnownModel",
    "MLPFamily",
    "Model",
    "ModelNotInstalledError",
    "NeuronCache",
    "NeuronCard",
    "NeuronId",
    "NeuronProbe",
    "NeuronSet",
    "OriginConfig",
    "OriginResult",
    "PatchResult",
    "ProbeMetrics",
    "PromptFormat",
    "RuleJudge",
    "SamplingConfig",
    "Splits",
    "SteerConfig",
    "SteerResult",
    "Suite",
    "SuiteResult",
    "TokenBatch",
    "UnsupportedModelError",
    "View",
    "__version__",
    "ablate_direction",
    "ablate_neurons",
    "aggregate_region",
    "attribution_patching",
    "backward_transfer",
    "build_training_set",
    "c_min",
    "c_path",
    "cett",
    "colored_tokens",
    "compare_scores",
    "consistency_filter",
    "direct_logit_attribution",
    "effects_view",
    "exact_patching",
    "extract_features",
    "find",
    "get_known",
    "gguf_checkpoint",
    "inertia_test",
    "integrated_gradients",
    "known_models",
    "load",
    "load_qa_file",
    "load_triviaqa",
    "locate_answer",
    "logit_diff",
    "make_splits",
    "neuron_means",
    "parameter_inertia",
    "random_neuron_baseline",
    "register_family",
    "register_model",
    "render",
    "report_cards",
    "sample_responses",
    "scale_neurons",
    "select_c",
    "steer_residual",
    "steer_sweep",
    "steering_vector",
    "strata_control",
    "supported_architectures",
    "text_neuron_activations",
    "tokenize_examples",
    "topk_samples",
    "write_report",
]

#: old public names -> (module, name) they moved to; kept for one release, with a warning
_DEPRECATED = {
    "steer": ("hlens.steering", "steer_residual"),
    "select_C": ("hlens.probe", "select_c"),
}


def __getattr__(name: str) -> object:
    if name in _DEPRECATED:
        import importlib
        import warnings

        module, new = _DEPRECATED[name]
        warnings.warn(
            f"hlens.{name} is deprecated; use hlens.{new}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(module), new)
    if name == "organism_suites":  # moved into the organism's plug-in
        # imported here so that `hlens` does not export the helper (a tiny public namespace)
        from hlens.registry import deprecated_alias

        return deprecated_alias("hlens", name)
    raise AttributeError(f"module 'hlens' has no attribute {name!r}")
