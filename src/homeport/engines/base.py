"""The engine protocol: tokens in, tokens out. Engines know nothing of HTTP or OpenAI.

Streaming is the primitive: `generate` yields one `TokenEvent` per decoding step; closing the
iterator (``aclose()``) cancels the generation at the engine's next step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. Neutral values disable a sampler."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    repetition_penalty_range: int = 1024
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None  # None: a fresh random seed
    logit_bias: dict[int, float] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: list[int]
    sampling: SamplingParams
    max_tokens: int
    request_id: str = ""  # names the generation in stats and cancellation, never logged with text


@dataclass(frozen=True)
class TokenEvent:
    """One decoding step. `text` is UTF-8 complete: bytes of a split character are held back and
    arrive with the token that completes them, so `text` may be empty."""

    token_id: int
    text: str
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0  # on the first event: prompt tokens served from the prefix cache


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    context_length: int
    loader: str
    path: str = ""
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""


@dataclass
class GenerationStats:
    """Counters an engine keeps about its generations (no text, only counts)."""

    active: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    tokens_generated: int = 0
    last_cancelled_tokens: int | None = None  # tokens the most recently cancelled generation produced

    def snapshot(self) -> dict:
        return dict(self.__dict__)


@runtime_checkable
class TextEngine(Protocol):
    info: ModelInfo

    @property
    def vocab_size(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]: ...

    def stats(self) -> dict: ...

    def queue_depth(self) -> int: ...  # generations submitted and still waiting for a slot

    def stop(self, request_id: str | None = None) -> int: ...  # finish generations cleanly; how many

    async def start(self) -> None: ...

    async def close(self) -> None: ...
