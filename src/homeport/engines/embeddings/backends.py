"""The embedding and rerank backends' declarations: sentence-transformers folders, GGUF embedding
models (llama.cpp) and cross-encoder folders. No torch or llama_cpp import here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.registry import Backend, check_args_fit, json_object
from homeport.registry.gguf import is_embedding_gguf

if TYPE_CHECKING:
    from homeport.registry.library import ModelEntry
    from homeport.settings import Settings



def is_cross_encoder(folder: Path) -> bool:
    """A *ForSequenceClassification model with one label (what a reranker is), with weights."""
    if (folder / "modules.json").is_file():
        return False
    config = json_object(folder / "config.json")
    if not config:
        return False
    architectures = config.get("architectures") or []
    labels = len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)
    weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    return weights and labels == 1 and any(str(name).endswith("ForSequenceClassification") for name in architectures)


def is_sentence_transformer(folder: Path) -> bool:
    return (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file()


def _device_layers(settings: Settings) -> int:
    return 0 if settings.embedding_device == "cpu" else -1


def load_sentence_transformer(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.embeddings import _sentence_transformer
    from homeport.engines.embeddings.engine import EmbeddingEngine

    check_args_fit(entry, SENTENCE_TRANSFORMERS, args)
    return EmbeddingEngine.of(_sentence_transformer(entry.path, entry.id, settings.embedding_device),
                              loader="sentence-transformers")


def load_gguf_embedder(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.embeddings.engine import EmbeddingEngine
    from homeport.engines.embeddings.llama_cpp import LlamaCppEmbedder

    check_args_fit(entry, GGUF_EMBEDDINGS, args)
    embedder = LlamaCppEmbedder(entry.path, model_id=entry.id, n_gpu_layers=_device_layers(settings))
    return EmbeddingEngine.of(embedder, loader="llama.cpp")


def load_cross_encoder(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.embeddings.cross_encoder import CrossEncoderReranker
    from homeport.engines.embeddings.engine import RerankEngine

    check_args_fit(entry, CROSS_ENCODER, args)
    reranker = CrossEncoderReranker(entry.path, model_id=entry.id, device=settings.embedding_device)
    return RerankEngine.of(reranker, loader="cross-encoder")


SENTENCE_TRANSFORMERS = Backend(
    name="sentence-transformers", kind="embedding", format="sentence-transformers", files="folder",
    detect=is_sentence_transformer, load=load_sentence_transformer, capabilities=("embedding",), priority=20,
)
GGUF_EMBEDDINGS = Backend(
    name="llama.cpp-embedding", kind="embedding", format="gguf", files="file",
    detect=lambda path: path.suffix.lower() == ".gguf" and is_embedding_gguf(path), load=load_gguf_embedder,
    capabilities=("embedding",), priority=20,
)
CROSS_ENCODER = Backend(
    name="cross-encoder", kind="rerank", format="cross-encoder", files="folder",
    detect=is_cross_encoder, load=load_cross_encoder, capabilities=("rerank",), priority=25,
)
