"""Running one generation: request parameters → engine request, engine tokens → text deltas.

Shared by completions and chat, so stop strings, usage and limits behave the same for both and
for every engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from homeport.engines.base import GenerationRequest, SamplingParams, TextEngine
from homeport.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ServiceUnavailableError,
    UnsupportedParameterError,
)
from homeport.schemas.common import SamplingFields
from homeport.services.stop_strings import StopMatcher

debug_log = logging.getLogger("homeport.debug")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass(frozen=True)
class TextDelta:
    text: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class PreparedGeneration:
    """A validated generation, ready to run: nothing about it can fail as a bad request any more."""

    request: GenerationRequest
    stops: tuple[str, ...]


def refuse_unsupported(fields: SamplingFields) -> None:
    """Known fields homeport cannot honour yet are refused, never silently ignored."""
    if (fields.n or 1) > 1:
        raise UnsupportedParameterError("n > 1 is not supported yet; send n=1", param="n")


def sampling_params(fields: SamplingFields, engine: TextEngine) -> SamplingParams:
    bias: dict[int, float] = {}
    for key, value in (fields.logit_bias or {}).items():
        token = int(key)
        if not 0 <= token < engine.vocab_size:
            raise InvalidRequestError(
                f"logit_bias names token {token}, outside this model's vocabulary (0..{engine.vocab_size - 1})",
                param="logit_bias",
            )
        bias[token] = value
    seed = fields.seed if fields.seed is not None and fields.seed >= 0 else None
    top_k = fields.top_k if fields.top_k is not None and fields.top_k > 0 else 0
    return SamplingParams(
        temperature=1.0 if fields.temperature is None else fields.temperature,
        top_p=1.0 if fields.top_p is None else fields.top_p,
        top_k=top_k,
        min_p=fields.min_p or 0.0,
        repetition_penalty=fields.repetition_penalty or 1.0,
        repetition_penalty_range=1024 if fields.repetition_penalty_range is None else fields.repetition_penalty_range,
        frequency_penalty=fields.frequency_penalty or 0.0,
        presence_penalty=fields.presence_penalty or 0.0,
        seed=seed,
        logit_bias=bias,
    )


def completion_budget(prompt_tokens: int, max_tokens: int | None, context_length: int, param: str) -> int:
    """How many tokens may be generated; a prompt that leaves no room is a 400, before any stream."""
    if max_tokens is None:
        if prompt_tokens >= context_length:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context_length} tokens. However, your "
                f"{param} resulted in {prompt_tokens} tokens. Please reduce the length of the {param}.",
                param=param,
            )
        return context_length - prompt_tokens
    if prompt_tokens + max_tokens > context_length:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, {max_tokens} in the "
            f"completion). Please reduce the length of the {param} or completion.",
            param=param,
        )
    return max_tokens


async def tokenize(engine: TextEngine, text: str, *, add_special: bool = True) -> list[int]:
    # Tokenizing a long prompt is real CPU work: keep it off the event loop.
    return await asyncio.to_thread(engine.tokenize, text, add_special=add_special)


def check_token_ids(engine: TextEngine, tokens: Sequence[int], param: str) -> None:
    bad = next((t for t in tokens if t >= engine.vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"token id {bad} is outside this model's vocabulary (0..{engine.vocab_size - 1})", param=param
        )


def check_capacity(engine: TextEngine, max_queue: int) -> None:
    """Past the bounded queue, a clear 503 the client can retry, before any stream starts."""
    if engine.queue_depth() >= max_queue:
        raise ServiceUnavailableError(
            f"The server is busy: {max_queue} requests are already waiting. Retry shortly.",
            code="server_busy",
            headers={"Retry-After": "1"},
        )


def prepare(
    engine: TextEngine,
    fields: SamplingFields,
    prompt_tokens: list[int],
    *,
    max_tokens: int | None,
    stops: Sequence[str],
    param: str,
    request_id: str,
) -> PreparedGeneration:
    if not prompt_tokens:
        raise InvalidRequestError(f"the {param} is empty", param=param)
    budget = completion_budget(len(prompt_tokens), max_tokens, engine.info.context_length, param)
    request = GenerationRequest(
        prompt_tokens=prompt_tokens,
        sampling=sampling_params(fields, engine),
        max_tokens=budget,
        request_id=request_id,
    )
    return PreparedGeneration(request=request, stops=tuple(stops))


async def run(engine: TextEngine, prepared: PreparedGeneration, usage: Usage) -> AsyncIterator[TextDelta]:
    """Yields text as it is generated, then a last delta carrying the finish reason.

    Leaving early (a stop string, or the consumer closing us) closes the engine stream, which
    cancels the generation at the engine's next step.
    """
    usage.prompt_tokens += len(prepared.request.prompt_tokens)
    matcher = StopMatcher(prepared.stops)
    async with aclosing(engine.generate(prepared.request)) as events:
        async for event in events:
            usage.cached_tokens += event.cached_tokens
            if event.token_id >= 0:  # -1: a stop requested from outside, no token sampled
                usage.completion_tokens += 1
            text, stopped = matcher.push(event.text)
            if stopped:
                yield TextDelta(text, "stop")
                return
            if event.finish_reason is not None:
                yield TextDelta(text + matcher.flush(), event.finish_reason)
                return
            if text:
                yield TextDelta(text)
    # An engine stream that ends without a finish reason is a bug, not a silent empty answer.
    raise RuntimeError("the engine stream ended without a finish reason")


async def collect(engine: TextEngine, prepared: PreparedGeneration, usage: Usage) -> tuple[str, str]:
    """The whole text and its finish reason (non-streaming responses collect the stream)."""
    parts: list[str] = []
    finish_reason = "stop"
    async with aclosing(run(engine, prepared, usage)) as deltas:
        async for delta in deltas:
            parts.append(delta.text)
            if delta.finish_reason is not None:
                finish_reason = delta.finish_reason
    return "".join(parts), finish_reason
