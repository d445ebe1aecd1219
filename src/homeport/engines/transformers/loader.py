"""A Hugging Face model folder → a `TransformersEngine`, or a one-line StartupError.

Fully offline (local files only) and never `trust_remote_code`: a folder whose model needs its own
Python code is refused. torch and transformers are imported only here, when a model loads.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.engines.base import ModelInfo
from homeport.engines.transformers.support import DEVICES, DTYPES, LOAD_ARGS
from homeport.errors import StartupError

if TYPE_CHECKING:
    from homeport.engines.transformers.engine import TransformersConfig, TransformersEngine

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192  # an auto ctx-size caps the model's training context here (KV memory)
FALLBACK_CONTEXT = 2048  # for a config that names no training context
INSTALL_HINT = "install torch and transformers (pip install 'homeport[embeddings]')"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_MAX_HEADER = 100 * 1024 * 1024


def check_transformers_folder(path: Path) -> None:
    """A fast preflight (no weights read): config.json parses and names a model type this
    transformers knows, a tokenizer and weights exist, and every safetensors header is sound."""
    if not path.is_dir():
        raise StartupError(f"model folder not found: {path}")
    _offline()
    config = _read_config(path)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise StartupError(f"cannot load model {path}: config.json names no model_type")
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        raise StartupError(f"cannot load model {path}: the transformers engine needs torch and transformers; "
                           f"{INSTALL_HINT}") from None
    if model_type not in CONFIG_MAPPING_NAMES:
        custom = " and ships its own code, which homeport never runs" if "auto_map" in config else ""
        raise StartupError(f"cannot load model {path}: model type {model_type!r} is unknown to transformers{custom}")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise StartupError(f"cannot load model {path}: no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    for shard in _weight_files(path):
        if shard.suffix == ".safetensors":
            _check_safetensors(shard)


def load_transformers_engine(
    path: Path, model_id: str, args: dict, *, threads: int, debug: bool
) -> TransformersEngine:
    """Blocking (seconds): call it in a worker thread. `args` are load arguments named in
    LOAD_ARGS; `threads` is the default when args has none. Raises StartupError."""
    from homeport.engines.transformers.engine import TransformersConfig

    given = {arg.name: arg.default for arg in LOAD_ARGS} | {"threads": threads} | args  # defaults: declared once
    config = TransformersConfig(
        path=path,
        model_id=model_id,
        ctx_size=given["ctx_size"],
        threads=given["threads"],
        parallel=given["parallel"],
        dtype=given["dtype"],
        device=given["device"],
        debug=debug,
    )
    _check_args(config)
    check_transformers_folder(path)
    try:
        return _load(config)
    except StartupError:
        raise
    except MemoryError:
        raise StartupError(f"cannot load model {path}: not enough memory") from None
    except Exception as exc:  # a corrupt or foreign folder: one line, never a traceback
        raise StartupError(f"cannot load model {path}: {_reason(exc)}") from None


def _load(config: TransformersConfig) -> TransformersEngine:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from homeport.engines.transformers.engine import TransformersEngine
    from homeport.engines.transformers.tokens import Tokens

    if not config.debug:
        # Loading chatter and progress bars stay off the console unless debug output was asked for.
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = _device(config.device, torch)
    path = str(config.path)
    hf_config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    dtype = _dtype(config.dtype, hf_config, device, torch)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model, loading = AutoModelForCausalLM.from_pretrained(
        path,
        config=hf_config,
        dtype=dtype,
        local_files_only=True,
        trust_remote_code=False,
        output_loading_info=True,
    )
    # A checkpoint that does not cover the architecture would run on random weights: refuse it.
    missing = list(loading.get("missing_keys") or ()) + list(loading.get("mismatched_keys") or ())
    if missing:
        raise StartupError(f"cannot load model {path}: the weights lack or mismatch {len(missing)} tensors")
    model.to(device).eval()

    text_config = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    head = model.get_output_embeddings()
    n_logits = head.weight.shape[0] if head is not None else text_config.vocab_size
    vocab_size = min(len(tokenizer), n_logits)
    trained = next((getattr(text_config, k) for k in _CONTEXT_KEYS if isinstance(getattr(text_config, k, None), int)),
                   FALLBACK_CONTEXT)
    context_length = config.ctx_size or min(trained, DEFAULT_MAX_CONTEXT)
    eog = _eog_tokens((hf_config, text_config, getattr(model, "generation_config", None), tokenizer), vocab_size)
    info = ModelInfo(
        model_id=config.model_id,
        context_length=context_length,
        loader="transformers",
        path=path,
        chat_template=_chat_template(tokenizer),
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
    )
    tokens = Tokens(tokenizer, vocab_size)
    log.info("loaded %s on %s (%s)", config.model_id, device, str(dtype).removeprefix("torch."))
    return TransformersEngine(
        config, model, tokens, info=info, eog=eog, device=device, dtype=str(dtype).removeprefix("torch.")
    )


def _offline() -> None:
    # Never reach for the Hugging Face hub (every call also says local_files_only): set before
    # transformers is first imported, as huggingface_hub reads it at import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _check_args(config: TransformersConfig) -> None:
    if config.dtype not in DTYPES:
        raise StartupError(f"dtype must be one of {', '.join(DTYPES)}, not {config.dtype!r}")
    if config.device not in DEVICES:
        raise StartupError(f"device must be one of {', '.join(DEVICES)}, not {config.device!r}")
    if config.parallel < 1:
        raise StartupError("parallel must be at least 1")
    if config.ctx_size < 0 or config.threads < 0:
        raise StartupError("ctx_size and threads must not be negative")


def _device(name: str, torch: Any) -> Any:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise StartupError("device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def _dtype(name: str, hf_config: Any, device: Any, torch: Any) -> Any:
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cpu":
        return torch.float32  # half precision is slow or unsupported in many CPU kernels
    stored = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if stored in (torch.float16, torch.bfloat16, torch.float32) else torch.bfloat16


def _eog_tokens(sources: tuple[Any, ...], vocab_size: int) -> frozenset[int]:
    """Every eos id the config, the generation config and the tokenizer name."""
    ids: set[int] = set()
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        for token in value if isinstance(value, list | tuple) else (value,):
            if isinstance(token, int) and 0 <= token < vocab_size:
                ids.add(token)
    return frozenset(ids)


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default") or next(iter(template.values()), None)
    return template or None


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StartupError(f"cannot load model {path}: no config.json") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise StartupError(f"cannot load model {path}: config.json is not valid JSON") from None
    if not isinstance(config, dict):
        raise StartupError(f"cannot load model {path}: config.json is not a JSON object")
    return config


def _weight_files(path: Path) -> list[Path]:
    """The weight files, checked against a shard index when there is one."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise StartupError(f"cannot load model {path}: {index_name} is not a valid shard index") from None
            lacking = [name for name in shards if not (path / name).is_file()]
            if lacking:
                raise StartupError(f"cannot load model {path}: weight shard {lacking[0]} is missing")
            return [path / name for name in shards]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise StartupError(f"cannot load model {path}: no weights (*.safetensors or pytorch_model*.bin)")
    return files


def _check_safetensors(shard: Path) -> None:
    """Reads the header only: its JSON parses and the tensors it lists fit in the file."""
    try:
        size = shard.stat().st_size
        with shard.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > min(_MAX_HEADER, size - 8):
                raise ValueError
            header = json.loads(file.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        if max(ends, default=0) > size - 8 - length:
            raise ValueError
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError):
        raise StartupError(
            f"cannot load model {shard.parent}: {shard.name} is truncated or not a safetensors file"
        ) from None


def _reason(exc: BaseException) -> str:
    """The exception's first line, short: enough to act on, nothing of a traceback."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:200] + ("…" if len(text) > 200 else "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
