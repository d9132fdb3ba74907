"""hlens: find, explain and steer hallucination-associated neurons (H-Neurons).

Built on TransformerLens 4's ``TransformerBridge``. Start with :func:`hlens.load`; the three jobs
are :func:`hlens.find` (identify), :func:`hlens.scale_neurons` and ``hlens steer`` (impact) and
:func:`hlens.parameter_inertia` / ``hlens origin`` (origin).

Example:
    >>> import hlens
    >>> hlens.NeuronSet.from_flat([5], n_layers=2, d_mlp=4).neurons
    (NeuronId(layer=1, index=1),)
"""

from hlens._version import __version__ as __version__
from hlens.cache import NeuronCache as NeuronCache
from hlens.cett import aggregate_region as aggregate_region
from hlens.cett import cett as cett
from hlens.datasets import load_qa_file as load_qa_file
from hlens.datasets import load_triviaqa as load_triviaqa
from hlens.examples import Example as Example
from hlens.features import CETTConfig as CETTConfig
from hlens.features import FeatureStore as FeatureStore
from hlens.features import extract_features as extract_features
from hlens.find import FindConfig as FindConfig
from hlens.find import find as find
from hlens.judge import Judge as Judge
from hlens.judge import Judgement as Judgement
from hlens.judge import RuleJudge as RuleJudge
from hlens.judge import consistency_filter as consistency_filter
from hlens.judge import locate_answer as locate_answer
from hlens.metrics import ProbeMetrics as ProbeMetrics
from hlens.model import Model as Model
from hlens.model import load as load
from hlens.neurons import NeuronId as NeuronId
from hlens.neurons import NeuronSet as NeuronSet
from hlens.origin import backward_transfer as backward_transfer
from hlens.origin import inertia_test as inertia_test
from hlens.origin import parameter_inertia as parameter_inertia
from hlens.probe import NeuronProbe as NeuronProbe
from hlens.probe import build_training_set as build_training_set
from hlens.probe import c_path as c_path
from hlens.probe import random_neuron_baseline as random_neuron_baseline
from hlens.probe import select_C as select_C
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
from hlens.views import View as View
from hlens.views import colored_tokens as colored_tokens
from hlens.views import effects_view as effects_view
from hlens.views import text_neuron_activations as text_neuron_activations
from hlens.views import topk_samples as topk_samples

__all__ = [
    "PAPER_INSTRUCTION",
    "CETTConfig",
    "Example",
    "FeatureStore",
    "FindConfig",
    "Judge",
    "Judgement",
    "MLPFamily",
    "Model",
    "NeuronCache",
    "NeuronId",
    "NeuronProbe",
    "NeuronSet",
    "ProbeMetrics",
    "PromptFormat",
    "RuleJudge",
    "SamplingConfig",
    "Splits",
    "TokenBatch",
    "UnsupportedModelError",
    "View",
    "__version__",
    "aggregate_region",
    "backward_transfer",
    "build_training_set",
    "c_path",
    "cett",
    "colored_tokens",
    "consistency_filter",
    "effects_view",
    "extract_features",
    "find",
    "inertia_test",
    "load",
    "load_qa_file",
    "load_triviaqa",
    "locate_answer",
    "make_splits",
    "parameter_inertia",
    "random_neuron_baseline",
    "register_family",
    "render",
    "sample_responses",
    "select_C",
    "supported_architectures",
    "text_neuron_activations",
    "tokenize_examples",
    "topk_samples",
    "write_report",
]
