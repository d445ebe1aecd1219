"""What a loaded model can do, as small runtime-checkable protocols. Services ask the model
manager for (model name, capability); a model that lacks it is a 400 (`model_lacks_capability`).

A backend declares its capabilities by name (`Backend.capabilities`, checked before a load) and its
engines implement the protocols (checked with `isinstance` once loaded). Image generation,
transcription and speech synthesis are declared for the backends that come next; nothing
implements them yet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from homeport.engines.base import GenerationRequest, GenerationStats, Grammar, ModelInfo, PromptMedia, TokenEvent


@runtime_checkable
class Managed(Protocol):
    """What the model manager needs of every engine, whatever its kind."""

    info: ModelInfo

    def stats(self) -> GenerationStats: ...

    def effective_args(self) -> dict: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class TextGeneration(Managed, Protocol):
    @property
    def vocab_size(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]: ...

    def check_grammar(self, grammar: Grammar) -> str | None: ...


@runtime_checkable
class Vision(Protocol):
    def media_marker(self) -> str | None: ...  # None: this model takes no images

    def tokenize_media(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> PromptMedia: ...


@runtime_checkable
class LoRA(Protocol):
    @property
    def lora_names(self) -> list[str]: ...

    async def set_loras(self, adapters: list[tuple[Path, float]]) -> None: ...


@runtime_checkable
class FillInTheMiddle(Protocol):
    def fim_tokens(self) -> tuple[int, int, int] | None: ...


@runtime_checkable
class NextTokenDistribution(Protocol):
    async def distribution(self, prompt_tokens: list[int], sampling, top_n: int) -> list[tuple[int, float]]: ...


@runtime_checkable
class Embedding(Managed, Protocol):
    async def embed(self, inputs: Sequence[str | list[int]]) -> tuple[str, list[list[float]], list[int]]: ...
    # (model id, unit vectors, token counts), one per input, in order

    async def embedder(self): ...  # the Embedder (dimensions, vocab_size, model_id)


@runtime_checkable
class Reranking(Managed, Protocol):
    async def score(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[float], list[int]]: ...
    # (model id, one relevance score per pair, tokens read per pair)


# ---- declared for the next issues; no backend implements them yet ----------------------------------


@runtime_checkable
class ImageGeneration(Managed, Protocol):
    async def generate_images(self, prompt: str, *, n: int, size: tuple[int, int], seed: int | None,
                              steps: int | None) -> list[bytes]: ...  # PNG bytes, one per image


@runtime_checkable
class Transcription(Managed, Protocol):
    async def transcribe(self, audio: bytes, *, language: str | None, prompt: str | None,
                         translate: bool) -> dict: ...  # {"text", "language", "segments": [...]}


@runtime_checkable
class SpeechSynthesis(Managed, Protocol):
    async def synthesize(self, text: str, *, voice: str, speed: float) -> tuple[bytes, int]: ...
    # (16-bit PCM samples, sample rate)


# name (as backends declare them and /v1/models lists them) → protocol
CAPABILITIES: dict[str, type] = {
    "text_generation": TextGeneration,
    "vision": Vision,
    "lora": LoRA,
    "fim": FillInTheMiddle,
    "next_token_distribution": NextTokenDistribution,
    "embedding": Embedding,
    "rerank": Reranking,
    "image_generation": ImageGeneration,
    "transcription": Transcription,
    "speech_synthesis": SpeechSynthesis,
}
# what a capability is called in an error message
DESCRIPTIONS: dict[str, str] = {
    "text_generation": "generate text", "vision": "read images", "lora": "take LoRA adapters",
    "fim": "fill in the middle", "next_token_distribution": "give next-token probabilities",
    "embedding": "embed text", "rerank": "rerank documents", "image_generation": "generate images",
    "transcription": "transcribe audio", "speech_synthesis": "synthesize speech",
}
