"""Load arguments (the reference API's names) → an engine for a model entry.

Every argument is honoured or refused: unknown names and values homeport cannot apply yet are a
400 that says so (the reference API silently drops them, its users' top complaint).
"""

from __future__ import annotations

from typing import Any

from homeport.engines.base import TextEngine
from homeport.errors import InvalidRequestError, UnsupportedParameterError
from homeport.model_paths import ModelEntry
from homeport.settings import Settings

CACHE_TYPES = ("fp16", "f16", "q8_0", "q4_0")
# name → (type, what it means)
LOAD_ARGS: dict[str, tuple[type, str]] = {
    "ctx_size": (int, "context length in tokens per request (0 = the model's, at most 8192)"),
    "n_gpu_layers": (int, "layers to offload to a GPU (-1 = all)"),
    "gpu_layers": (int, "alias of n_gpu_layers"),
    "threads": (int, "threads for decoding (0 = every core)"),
    "threads_batch": (int, "threads for prompt processing (0 = as threads)"),
    "batch_size": (int, "prompt tokens decoded per step"),
    "ubatch_size": (int, "tokens per compute pass"),
    "cache_type": (str, "KV cache type: fp16, q8_0 or q4_0"),
    "flash_attn": (bool, "flash attention"),
    "rope_freq_base": (float, "RoPE base frequency (0 = the model's)"),
    "parallel": (int, "sequences decoded together"),
    "no_mmap": (bool, "read the whole model into memory instead of mapping it"),
    "mlock": (bool, "lock the model in RAM"),
    "kv_unified": (bool, "one KV cache shared by all sequences (default) or one stream each"),
}
# Known to the reference API, not available in homeport yet: refused, never silently dropped.
NOT_YET = {
    "mmproj": "vision projectors",
    "model_draft": "speculative decoding",
    "draft_max": "speculative decoding",
    "gpu_layers_draft": "speculative decoding",
    "device_draft": "speculative decoding",
    "ctx_size_draft": "speculative decoding",
    "spec_type": "speculative decoding",
    "tensor_split": "multi-GPU splits",
    "split_mode": "multi-GPU splits",
}


def validate_load_args(args: dict[str, Any] | None) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in (args or {}).items():
        if name in NOT_YET:
            raise UnsupportedParameterError(f"load argument {name!r} ({NOT_YET[name]}) is not supported yet", param=f"args.{name}")
        if name not in LOAD_ARGS:
            valid = ", ".join(sorted(LOAD_ARGS))
            raise InvalidRequestError(f"unknown load argument {name!r}; valid arguments: {valid}", param=f"args.{name}")
        kind = LOAD_ARGS[name][0]
        if kind is bool and not isinstance(value, bool):
            raise InvalidRequestError(f"load argument {name!r} must be true or false", param=f"args.{name}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequestError(f"load argument {name!r} must be an integer", param=f"args.{name}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequestError(f"load argument {name!r} must be a number", param=f"args.{name}")
        if kind is str and not isinstance(value, str):
            raise InvalidRequestError(f"load argument {name!r} must be a string", param=f"args.{name}")
        if name == "cache_type" and value not in CACHE_TYPES:
            raise InvalidRequestError("cache_type must be fp16, q8_0 or q4_0", param="args.cache_type")
        if kind is int and name not in ("n_gpu_layers", "gpu_layers") and value < 0:
            raise InvalidRequestError(f"load argument {name!r} must not be negative", param=f"args.{name}")
        checked["n_gpu_layers" if name == "gpu_layers" else name] = value
    return checked


def load_engine(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> TextEngine:
    """Blocking (seconds): call it in a worker thread. Raises StartupError when the model cannot load."""
    if entry.format != "gguf":
        raise UnsupportedParameterError(
            f"{entry.id} is a {entry.format} model; only GGUF models can be served yet", param="model"
        )
    from homeport.engines.llama_cpp.engine import LlamaCppConfig, LlamaCppEngine

    def arg(name: str, default: Any) -> Any:
        return args.get(name, default)

    config = LlamaCppConfig(
        path=entry.path,
        model_id=entry.id,
        ctx_size=arg("ctx_size", settings.ctx_size),
        threads=arg("threads", settings.threads),
        threads_batch=arg("threads_batch", 0),
        n_gpu_layers=arg("n_gpu_layers", settings.n_gpu_layers),
        batch_size=arg("batch_size", settings.batch_size),
        ubatch_size=arg("ubatch_size", settings.ubatch_size),
        parallel=arg("parallel", settings.parallel),
        cache_type=arg("cache_type", "fp16"),
        flash_attn=arg("flash_attn", None),
        rope_freq_base=arg("rope_freq_base", 0.0),
        use_mmap=not arg("no_mmap", False),
        use_mlock=arg("mlock", False),
        kv_unified=arg("kv_unified", settings.kv_unified),
        verbose=settings.debug,
    )
    return LlamaCppEngine.load(config)


class LibraryLoader:
    """Loads models of the library for the model manager, with a cheap check first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, entry: ModelEntry, args: dict[str, Any]) -> TextEngine:
        return load_engine(entry, self.settings, args)

    def check(self, entry: ModelEntry) -> None:
        """Reads the file's vocabulary only (fast): a corrupt or foreign file fails here."""
        if entry.format != "gguf":
            raise UnsupportedParameterError(
                f"{entry.id} is a {entry.format} model; only GGUF models can be served yet", param="model"
            )
        from homeport.engines.llama_cpp.engine import check_gguf

        check_gguf(entry.path)
