"""Load arguments (the reference API's names) → an engine for a model entry.

Every argument is honoured or refused: unknown names and values homeport cannot apply yet are a
400 that says so (the reference API silently drops them, its users' top complaint).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.engines.base import TextEngine
from homeport.engines.transformers import TRANSFORMERS_LOAD_ARGS
from homeport.errors import InvalidRequestError, StartupError, UnsupportedParameterError
from homeport.model_paths import ModelEntry, ModelLibrary
from homeport.settings import Settings

if TYPE_CHECKING:
    from homeport.engines.llama_cpp.engine import SpeculativeConfig

CACHE_TYPES = ("fp16", "f16", "q8_0", "q4_0")
# name → (type, what it means), for GGUF models (llama.cpp)
GGUF_LOAD_ARGS: dict[str, tuple[type, str]] = {
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
    "spec_type": (str, "speculative decoding: none, draft (with model_draft) or ngram (prompt lookup)"),
    "model_draft": (str, "a smaller GGUF with the same vocabulary that drafts tokens (path or library name)"),
    "draft_max": (int, "drafted tokens checked per step (default 4)"),
    "draft_min": (int, "fewer drafted tokens than this are not checked"),
    "draft_p_min": (float, "the draft model stops when its top token is less likely than this (0-1)"),
    "gpu_layers_draft": (int, "the draft model's layers to offload to a GPU (-1 = all)"),
    "spec_ngram_size_n": (int, "prompt lookup: the longest n-gram matched (default 4)"),
    "mmproj": (str, "a vision projector GGUF (path, or file name under the model dir): the model takes images"),
    "split_mode": (str, "how layers spread over several GPUs: none, layer (default) or row"),
    "tensor_split": (str, "each GPU's share of the model, comma-separated (e.g. 60,40)"),
    "no_kv_offload": (bool, "keep the KV cache in system memory when layers are on a GPU"),
    "loader": (str, "llama.cpp (GGUF) or Transformers (Hugging Face folders): must match the model"),
}
SPLIT_MODES = ("none", "layer", "row")
LOADERS = {"llama.cpp": "gguf", "llamacpp": "gguf", "llama_cpp": "gguf", "transformers": "transformers"}
# Every name some engine honours; which ones apply depends on the model's format (checked at load).
LOAD_ARGS = GGUF_LOAD_ARGS | {name: (kind, f"{meaning} (transformers models)")
                             for name, (kind, meaning) in TRANSFORMERS_LOAD_ARGS.items() if name not in GGUF_LOAD_ARGS}
SPEC_TYPES = {"none": "none", "draft": "draft", "draft-simple": "draft", "ngram": "ngram", "ngram-simple": "ngram"}
# Known to the reference API, not available in homeport yet: refused, never silently dropped.
NOT_YET = {
    "numa": "NUMA placement",
    "device_draft": "a separate device for the draft model",
    "ctx_size_draft": "a separate draft context size; the draft model's follows ctx_size",
    "spec_ngram_size_m": "a separate prompt-lookup draft length; use draft_max",
    "spec_ngram_min_hits": "prompt-lookup hit thresholds",
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
        if name == "spec_type" and value not in SPEC_TYPES:
            raise InvalidRequestError(f"spec_type must be one of {', '.join(SPEC_TYPES)}", param="args.spec_type")
        if kind is int and name not in ("n_gpu_layers", "gpu_layers", "gpu_layers_draft") and value < 0:
            raise InvalidRequestError(f"load argument {name!r} must not be negative", param=f"args.{name}")
        if name in ("draft_max", "spec_ngram_size_n") and not 1 <= value <= 64:
            raise InvalidRequestError(f"load argument {name!r} must be between 1 and 64", param=f"args.{name}")
        if name == "split_mode" and value not in SPLIT_MODES:
            raise InvalidRequestError("split_mode must be none, layer or row", param="args.split_mode")
        if name == "tensor_split":
            value = _tensor_split(value)
        if name == "loader" and value.lower() not in LOADERS:
            raise InvalidRequestError("loader must be llama.cpp or Transformers", param="args.loader")
        if name == "draft_p_min" and not 0.0 <= value <= 1.0:
            raise InvalidRequestError("draft_p_min must be between 0 and 1", param="args.draft_p_min")
        checked["n_gpu_layers" if name == "gpu_layers" else name] = value
    return checked


def _tensor_split(value: str) -> tuple[float, ...]:
    try:
        shares = tuple(float(part) for part in value.split(","))
    except ValueError:
        shares = ()
    if not shares or any(share < 0 for share in shares) or sum(shares) <= 0:
        raise InvalidRequestError("tensor_split must be comma-separated non-negative shares, e.g. 60,40",
                                  param="args.tensor_split")
    return shares


def load_engine(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> TextEngine:
    """Blocking (seconds): call it in a worker thread. Raises StartupError when the model cannot load."""
    _check_args_fit(entry, args)
    if entry.format == "transformers":
        from homeport.engines.transformers import load_transformers_engine

        defaults = {"ctx_size": settings.ctx_size}
        return load_transformers_engine(entry.path, entry.id, {**defaults, **args}, threads=settings.threads,
                                        debug=settings.debug)
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
        speculative=speculative_config(settings, args),
        mmproj=_side_file(args.get("mmproj", settings.mmproj), settings, "vision projector"),
        split_mode=arg("split_mode", "layer"),
        tensor_split=arg("tensor_split", ()),
        offload_kqv=not arg("no_kv_offload", False),
        verbose=settings.debug,
    )
    return LlamaCppEngine.load(config)


def speculative_config(settings: Settings, args: dict[str, Any]) -> SpeculativeConfig | None:
    """The speculative decoding the load arguments (over the settings) ask for, or None.
    Raises StartupError when the draft model cannot be found."""
    from homeport.engines.llama_cpp.engine import SpeculativeConfig

    draft_name = args.get("model_draft", settings.model_draft)
    kind = SPEC_TYPES[args.get("spec_type") or settings.spec_type or ("draft" if draft_name else "none")]
    if kind == "none":
        return None
    common = {"draft_max": args.get("draft_max", settings.draft_max), "draft_min": args.get("draft_min", 0)}
    if kind == "ngram":
        return SpeculativeConfig(kind="ngram", ngram_size=args.get("spec_ngram_size_n", 4), **common)
    if not draft_name:
        raise StartupError("speculative decoding with a draft model needs model_draft")
    return SpeculativeConfig(
        kind="draft", draft_path=_draft_path(draft_name, settings), draft_p_min=args.get("draft_p_min", 0.0),
        draft_n_gpu_layers=args.get("gpu_layers_draft", settings.n_gpu_layers), **common,
    )


def _side_file(name: str | None, settings: Settings, what: str) -> Path | None:
    """A file named by path, or by file name relative to the model dir (projectors are not
    models of their own, so the library does not list them)."""
    if not name:
        return None
    for path in (Path(name).expanduser(), settings.model_dir / name):
        if path.is_file():
            return path
    raise StartupError(f"{what} not found: {name} (looked for a file, and in {settings.model_dir})")


def _draft_path(name: str, settings: Settings) -> Path:
    entry = ModelLibrary(settings.model_dir).find(name)
    if entry is not None and entry.format == "gguf":
        return entry.path
    return _side_file(name, settings, "draft model")


def _check_args_fit(entry: ModelEntry, args: dict[str, Any]) -> None:
    valid = TRANSFORMERS_LOAD_ARGS if entry.format == "transformers" else GGUF_LOAD_ARGS
    loader = args.get("loader")
    if loader is not None and LOADERS[loader.lower()] != entry.format:
        raise InvalidRequestError(f"{entry.id} is a {entry.format} model: the {loader} loader cannot load it",
                                  param="args.loader")
    for name in args:
        if name == "loader":
            continue
        if name not in valid:
            raise InvalidRequestError(
                f"load argument {name!r} does not apply to {entry.format} models; "
                f"valid arguments for them: {', '.join(sorted(valid))}", param=f"args.{name}",
            )


class LibraryLoader:
    """Loads models of the library for the model manager, with a cheap check first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, entry: ModelEntry, args: dict[str, Any]) -> TextEngine:
        return load_engine(entry, self.settings, args)

    def check(self, entry: ModelEntry) -> None:
        """Reads the model's metadata only (fast): a corrupt or foreign file fails here."""
        if entry.format == "transformers":
            from homeport.engines.transformers import check_transformers_folder

            check_transformers_folder(entry.path)
            return
        from homeport.engines.llama_cpp.engine import check_gguf

        check_gguf(entry.path)
