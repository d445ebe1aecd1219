"""What a loaded model can do, as small runtime-checkable protocols. Services ask the model
manager for (model name, capability); a model that lacks it is a 400 (`model_lacks_capability`).

A backend declares its capabilities by name (`Backend.capabilities`, checked before a load) and its
engines implement the protocols (checked with `isinstance` once loaded). Transcription
(faster-whisper) and speech synthesis (hibari) are implemented in engines/speech.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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


@dataclass
class ImageJob:
    """One image request as an image engine runs it: `seeds` has one seed per image (choice i uses
    seed + i), generated `batch_size` at a time. With `image`: image-to-image (and inpainting where
    `mask` is given; white = repaint). `on_preview(images, batch)` is called from the engine's
    thread with PIL previews; setting `cancel` stops the job at its next step."""

    prompt: str
    seeds: list[int]
    width: int
    height: int
    steps: int
    guidance: float
    batch_size: int = 1
    negative_prompt: str | None = None
    sampler: str | None = None
    image: Any = None  # PIL images
    mask: Any = None
    strength: float = 0.8
    previews: int = 0
    on_preview: Callable[[list, int], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@runtime_checkable
class ImageGeneration(Managed, Protocol):
    """Diffusion (engines/diffusers): PIL images, one per seed; `default_size` is the model's
    native side in pixels, sizes are multiples of `scale_factor`."""

    default_size: int
    scale_factor: int
    can_inpaint: bool

    def knows_sampler(self, name: str) -> bool: ...

    async def generate_images(self, job: ImageJob) -> list: ...

    def job_progress(self) -> dict | None: ...  # the running job's step / steps


# ---- images and speech ------------------------------------------------------------------------------


@runtime_checkable
class Transcription(Managed, Protocol):
    """Speech to text, streamed: the audio is decoded and its language detected when this returns
    (a bad file fails here, before any response); the segments come as the returned stream is
    iterated (`async for`; `language`, `duration` attributes; `aclose()` stops decoding)."""

    async def transcribe(self, audio: bytes, *, language: str | None = None, prompt: str | None = None,
                         translate: bool = False, temperature: float = 0.0, word_timestamps: bool = False,
                         vad_filter: bool = False, beam_size: int = 5): ...


@runtime_checkable
class SpeechSynthesis(Managed, Protocol):
    """Text to speech, streamed: validated when this returns; the stream yields 16-bit mono PCM
    (numpy int16) one sentence at a time, at its `sample_rate`; `aclose()` stops synthesis."""

    @property
    def sample_rate(self) -> int: ...

    def effective_speed(self, speed: float) -> float: ...  # the speed the engine runs a request at

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0): ...


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
