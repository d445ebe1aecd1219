"""The llama.cpp engine (GGUF text models). Importing this package does not import llama_cpp."""

from homeport.engines.llama_cpp.backend import BACKEND
from homeport.registry import register

register(BACKEND)
