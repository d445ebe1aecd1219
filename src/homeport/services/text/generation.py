"""Running one generation: request parameters → engine request, engine tokens → text deltas.

Shared by completions and chat, so stop strings, usage, limits, logprobs and pacing behave the
same for both and for every engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from homeport.engines.base import GenerationRequest, PromptMedia, TextEngine, TokenEvent
from homeport.errors import ContextLengthExceededError, InvalidRequestError, ServiceUnavailableError
from homeport.schemas.common import SamplingFields
from homeport.services.text.sampling import Sampling, build_sampling
from homeport.services.text.stop_strings import StopMatcher

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
    tokens: tuple[TokenEvent, ...] = ()  # with logprobs: the tokens consumed since the last delta
    prompt_logprobs: tuple | None = None  # on the first delta, when prompt logprobs were asked for
    stop_sequence: str | None = None  # on the last delta: the stop string that ended it, if one did


@dataclass(frozen=True)
class PreparedGeneration:
    """A validated generation, ready to run: nothing about it can fail as a bad request any more."""

    request: GenerationRequest
    stops: tuple[str, ...]
    max_tokens_second: float = 0.0
    eog_tokens: frozenset[int] = field(default_factory=frozenset)


def check_capacity(engine: TextEngine, max_queue: int) -> None:
    """Past the bounded queue, a clear 503 the client can retry, before any stream starts."""
    if engine.queue_depth() >= max_queue:
        raise ServiceUnavailableError(
            f"The server is busy: {max_queue} requests are already waiting. Retry shortly.",
            code="server_busy",
            headers={"Retry-After": "1"},
        )


def context_limit(engine: TextEngine, fields: SamplingFields) -> int:
    limit = engine.info.context_length
    return min(limit, fields.truncation_length) if fields.truncation_length else limit


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


def prepare(
    engine: TextEngine,
    fields: SamplingFields,
    prompt_tokens: list[int],
    *,
    max_tokens: int | None,
    stops: Sequence[str],
    param: str,
    request_id: str,
    sampling: Sampling | None = None,
    logprobs: int | None = None,
    prompt_logprobs: bool = False,
    render_special: bool = False,
    media: PromptMedia | None = None,
) -> PreparedGeneration:
    """`render_special` keeps control tokens' text in the output even with skip_special_tokens
    (tool-call and channel markers are control tokens in several families)."""
    if not prompt_tokens:
        raise InvalidRequestError(f"the {param} is empty", param=param)
    limit = context_limit(engine, fields)
    if fields.auto_max_new_tokens:
        max_tokens = None
    budget = completion_budget(len(prompt_tokens), max_tokens, limit, param)
    sampling = sampling or build_sampling(fields, engine)
    request = GenerationRequest(
        prompt_tokens=prompt_tokens,
        sampling=sampling.params,
        max_tokens=budget,
        request_id=request_id,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        render_special=render_special or not fields.skip_special_tokens,
        media=media,
    )
    return PreparedGeneration(
        request=request,
        stops=tuple(stops),
        max_tokens_second=fields.max_tokens_second,
        eog_tokens=engine.eog_tokens() if logprobs is not None else frozenset(),
    )


def with_seed_offset(prepared: PreparedGeneration, offset: int) -> PreparedGeneration:
    """Choice i samples with seed + i, so choices differ yet a seeded request is reproducible."""
    sampling = prepared.request.sampling
    if offset == 0:
        return prepared
    seed = None if sampling.seed is None else sampling.seed + offset
    request = dataclasses.replace(prepared.request, sampling=dataclasses.replace(sampling, seed=seed))
    return dataclasses.replace(prepared, request=request)


class _Pacer:
    """`max_tokens_second`: lets tokens out no faster than the given rate (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


async def run(engine: TextEngine, prepared: PreparedGeneration, usage: Usage) -> AsyncIterator[TextDelta]:
    """Yields text as it is generated, then a last delta carrying the finish reason.

    Leaving early (a stop string, or the consumer closing us) closes the engine stream, which
    cancels the generation at the engine's next step.
    """
    usage.prompt_tokens += len(prepared.request.prompt_tokens)
    matcher = StopMatcher(prepared.stops)
    pacer = _Pacer(prepared.max_tokens_second)
    keep_tokens = prepared.request.logprobs is not None
    pending: list[TokenEvent] = []
    prompt_logprobs = None
    async with aclosing(engine.generate(prepared.request)) as events:
        async for event in events:
            usage.cached_tokens += event.cached_tokens
            if event.prompt_logprobs is not None:
                prompt_logprobs = event.prompt_logprobs
            if event.token_id >= 0:  # -1: a stop requested from outside, no token sampled
                usage.completion_tokens += 1
                if pacer.interval:
                    await pacer.wait()
                if keep_tokens and event.token_id not in prepared.eog_tokens:
                    pending.append(event)
            text, stopped = matcher.push(event.text)
            finish = "stop" if stopped else event.finish_reason
            if finish is not None:
                tail = "" if stopped else matcher.flush()
                yield TextDelta(text + tail, finish, tuple(pending), prompt_logprobs, matcher.matched)
                return
            if text:
                yield TextDelta(text, None, tuple(pending), prompt_logprobs)
                pending, prompt_logprobs = [], None
    # An engine stream that ends without a finish reason is a bug, not a silent empty answer.
    raise RuntimeError("the engine stream ended without a finish reason")


@dataclass
class Collected:
    text: str
    finish_reason: str
    tokens: list[TokenEvent]
    prompt_logprobs: tuple | None


async def collect(engine: TextEngine, prepared: PreparedGeneration, usage: Usage) -> Collected:
    """The whole output (non-streaming responses collect the stream)."""
    result = Collected(text="", finish_reason="stop", tokens=[], prompt_logprobs=None)
    parts: list[str] = []
    async with aclosing(run(engine, prepared, usage)) as deltas:
        async for delta in deltas:
            parts.append(delta.text)
            result.tokens.extend(delta.tokens)
            if delta.prompt_logprobs is not None:
                result.prompt_logprobs = delta.prompt_logprobs
            if delta.finish_reason is not None:
                result.finish_reason = delta.finish_reason
    result.text = "".join(parts)
    return result
