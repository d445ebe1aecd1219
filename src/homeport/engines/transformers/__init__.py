"""The transformers engine: Hugging Face model folders (config.json + safetensors) served with
torch behind the same `TextEngine` protocol as GGUF models.

Importing this package does not import torch: `load_transformers_engine` does, when a model loads.
"""

from homeport.engines.transformers.backend import BACKEND
from homeport.engines.transformers.loader import check_transformers_folder, load_transformers_engine
from homeport.engines.transformers.support import unsupported_sampling
from homeport.registry import register

register(BACKEND)

__all__ = ["check_transformers_folder", "load_transformers_engine", "unsupported_sampling"]
