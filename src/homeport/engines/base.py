"""The engine protocol: tokens in, tokens out. Engines know nothing of HTTP or OpenAI.

Streaming is the primitive: `generate` yields one `TokenEvent` per decoding step; closing the
iterator (``aclose()``) cancels the generation at the engine's next step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Grammar:
    """A constraint on the output, enforced while decoding. Engines translate it to their own
    mechanism (llama.cpp: GBNF)."""

    kind: Literal["gbnf", "json", "json_schema"]
    source: str = ""  # the GBNF text, or the JSON schema as JSON text; empty for any JSON value
    # json_schema only: the output may instead be plain text, which then cannot begin like JSON
    # (`{`, `[`) or with white space (tools in `auto` under homeport's own tool prompt).
    or_text: bool = False


# Native sampler stages, in the order they run unless `SamplingParams.order` says otherwise.
DEFAULT_SAMPLER_ORDER = ("penalties", "dry", "top_n_sigma", "temperature", "top_k", "top_p", "typical_p", "min_p", "xtc")


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. Neutral values disable a stage."""

    temperature: float = 1.0
    dynatemp_range: float = 0.0  # temperature ± this, scaled by entropy (dynamic temperature)
    dynatemp_exponent: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    top_n_sigma: float = 0.0
    xtc_threshold: float = 0.1
    xtc_probability: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")
    repetition_penalty: float = 1.0
    repetition_penalty_range: int = 1024
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    order: tuple[str, ...] = DEFAULT_SAMPLER_ORDER
    seed: int | None = None  # None: a fresh random seed
    logit_bias: dict[int, float] = field(default_factory=dict)  # -inf bans a token
    grammar: Grammar | None = None

    @property
    def greedy(self) -> bool:
        return (self.temperature <= 0.0 or self.top_k == 1) and self.mirostat_mode == 0


class MediaSpan(Protocol):
    start: int  # index in the prompt tokens where the image's placeholder ids begin
    length: int  # how many placeholder ids (KV positions) it takes


class PromptMedia(Protocol):
    """A prompt with images, from `TextEngine.tokenize_media`: text tokens, and each image as a run
    of placeholder ids (negative, equal for equal images, so a prefix cache compares them) that
    only the engine that made them can decode."""

    tokens: list[int]
    segments: tuple[MediaSpan, ...]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: list[int]
    sampling: SamplingParams
    max_tokens: int
    request_id: str = ""  # names the generation in stats and cancellation, never logged with text
    logprobs: int | None = None  # report the sampled token's logprob and this many alternatives
    prompt_logprobs: bool = False  # also report each prompt token's logprob (completions echo)
    render_special: bool = False  # show control tokens' text instead of skipping it
    use_prefix_cache: bool = True
    media: PromptMedia | None = None  # the images inside prompt_tokens, when it has any
    min_tokens: int = 0  # end-of-generation tokens cannot be sampled before this many were produced


TopLogprobs = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class TokenEvent:
    """One decoding step. `text` is UTF-8 complete: bytes of a split character are held back and
    arrive with the token that completes them, so `text` may be empty."""

    token_id: int
    text: str
    finish_reason: FinishReason | None = None
    cached_tokens: int = 0  # on the first event: prompt tokens served from the prefix cache
    logprob: float | None = None
    top_logprobs: TopLogprobs | None = None
    # On the first event, with `prompt_logprobs`: (token, logprob or None for the first, alternatives).
    prompt_logprobs: tuple[tuple[int, float | None, TopLogprobs], ...] | None = None


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    context_length: int
    loader: str
    path: str = ""
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""


@dataclass(frozen=True)
class GenerationStats:
    """What an engine has counted about its generations (no text, only counts), as of one moment.
    Served as `/v1/internal/model/info` → `generation`, in this field order."""

    active: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    tokens_generated: int = 0
    draft_tokens: int = 0  # speculative decoding: tokens drafted, and of those, accepted by the model
    draft_accepted: int = 0
    last_cancelled_tokens: int | None = None  # tokens the most recently cancelled generation produced
    paused: int = 0  # times a running generation gave up its KV cells to the others (it then resumed)
    caches_stored: int = 0  # idle slots' cached prefixes moved out of the KV cache to host memory
    caches_restored: int = 0  # of those, put back for a request that reused them
    queued: int = 0  # generations submitted and still waiting for a slot (`queue_depth()`)


@runtime_checkable
class TextEngine(Protocol):
    info: ModelInfo

    @property
    def vocab_size(self) -> int: ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]: ...

    def stats(self) -> GenerationStats: ...

    def effective_args(self) -> dict: ...  # the load arguments in effect (reference API names)

    def queue_depth(self) -> int: ...  # generations submitted and still waiting for a slot

    def stop(self, request_id: str | None = None) -> int: ...  # finish generations cleanly; how many

    def token_piece(self, token: int) -> bytes: ...  # the token's bytes (for logprobs)

    def check_grammar(self, grammar: Grammar) -> str | None: ...  # why a grammar is unusable, or None

    def unsupported_sampling(self, params: SamplingParams) -> list[str]: ...  # non-neutral stages it cannot apply

    def media_marker(self) -> str | None: ...  # the text marking an image in a prompt; None: no images

    def tokenize_media(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> PromptMedia: ...
    # blocking (decodes and encodes the images): call it off the event loop; raises EngineInputError

    def fim_tokens(self) -> tuple[int, int, int] | None: ...  # (prefix, suffix, middle) if the model does FIM

    def eog_tokens(self) -> frozenset[int]: ...  # every end-of-generation token

    async def distribution(
        self, prompt_tokens: list[int], sampling: SamplingParams | None, top_n: int
    ) -> list[tuple[int, float]]: ...  # next-token probabilities, before (None) or after the samplers

    @property
    def lora_names(self) -> list[str]: ...  # the applied LoRA adapters, in order

    async def set_loras(self, adapters: list[tuple[Path, float]]) -> None: ...  # (file, scale) each; [] removes all

    async def start(self) -> None: ...

    async def close(self) -> None: ...
