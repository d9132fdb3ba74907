"""hlens: find, explain and steer hallucination-associated neurons (H-Neurons).

Built on TransformerLens 4's ``TransformerBridge``. Start with :func:`hlens.load`.

Example:
    >>> import hlens
    >>> hlens.NeuronSet.from_flat([5], n_layers=2, d_mlp=4).neurons
    (NeuronId(layer=1, index=1),)
"""

from hlens._version import __version__ as __version__
from hlens.cache import NeuronCache as NeuronCache
from hlens.cett import aggregate_region as aggregate_region
from hlens.cett import cett as cett
from hlens.examples import Example as Example
from hlens.model import Model as Model
from hlens.model import load as load
from hlens.neurons import NeuronId as NeuronId
from hlens.neurons import NeuronSet as NeuronSet
from hlens.prompts import PAPER_INSTRUCTION as PAPER_INSTRUCTION
from hlens.prompts import PromptFormat as PromptFormat
from hlens.prompts import TokenBatch as TokenBatch
from hlens.prompts import render as render
from hlens.prompts import tokenize_examples as tokenize_examples
from hlens.registry import MLPFamily as MLPFamily
from hlens.registry import UnsupportedModelError as UnsupportedModelError
from hlens.registry import register_family as register_family
from hlens.registry import supported_architectures as supported_architectures

__all__ = [
    "PAPER_INSTRUCTION",
    "Example",
    "MLPFamily",
    "Model",
    "NeuronCache",
    "NeuronId",
    "NeuronSet",
    "PromptFormat",
    "TokenBatch",
    "UnsupportedModelError",
    "__version__",
    "aggregate_region",
    "cett",
    "load",
    "register_family",
    "render",
    "supported_architectures",
    "tokenize_examples",
]
