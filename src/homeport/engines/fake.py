"""A deterministic engine for fast tests of the layers above engines.

Tokens are UTF-8 bytes (so multi-byte characters really split across tokens), plus BOS and EOS.
It replays a scripted text, or makes up deterministic words from the prompt and seed; it can be
told to fail at step N or to go slowly, so error frames and cancellation are testable.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from dataclasses import dataclass
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from homeport.engines.base import (
    GenerationRequest,
    GenerationStats,
    Grammar,
    ModelInfo,
    SamplingParams,
    TokenEvent,
    TopLogprobs,
)
from homeport.engines.runtime.generation import GenerationCounters
from homeport.engines.text import IncrementalUtf8
from homeport.errors import EngineError, EngineInputError

BOS_ID = 1
EOS_ID = 2
_BYTE_OFFSET = 3
IMAGE_MARKER = "<image>"
IMAGE_TOKENS = 4


@dataclass(frozen=True)
class FakeSpan:
    start: int
    length: int
    image: bytes


@dataclass
class FakeMedia:
    tokens: list[int]
    segments: tuple[FakeSpan, ...]


_WORDS = ("alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma", "theta", "zeta", "lambda")


class FakeEngine:
    def __init__(
        self,
        *,
        model_id: str = "fake-model",
        context_length: int = 512,
        script: str | None = None,
        fail_at_step: int | None = None,
        step_delay: float = 0.0,
        chat_template: str | None = None,
        fim: bool = False,
        vision: bool = False,
    ) -> None:
        self.info = ModelInfo(
            model_id=model_id,
            context_length=context_length,
            loader="fake",
            chat_template=chat_template,
            bos_token="<s>",
            eos_token="</s>",
        )
        self.script = script
        self.fail_at_step = fail_at_step
        self.step_delay = step_delay
        self._stats = GenerationCounters()
        self._stop_requests: set[str | None] = set()
        self.queued = 0  # tests set this to simulate a backlog
        self.fim = fim
        self.vision = vision  # accept images: each becomes IMAGE_TOKENS placeholder ids
        self.requests: list[GenerationRequest] = []  # what generate() was asked, for assertions
        self.loras: list[tuple[Path, float]] = []  # what set_loras() applied, for assertions

    @property
    def vocab_size(self) -> int:
        return 256 + _BYTE_OFFSET

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def lora_names(self) -> list[str]:
        return [path.stem for path, _ in self.loras]

    async def set_loras(self, adapters: list[tuple[Path, float]]) -> None:
        self.loras = list(adapters)

    def stats(self) -> GenerationStats:
        return self._stats.snapshot(queued=self.queue_depth())

    def effective_args(self) -> dict:
        return {"ctx_size": self.info.context_length}

    def queue_depth(self) -> int:
        return self.queued

    def stop(self, request_id: str | None = None) -> int:
        self._stop_requests.add(request_id)
        return self._stats.active

    def token_piece(self, token: int) -> bytes:
        return bytes([token - _BYTE_OFFSET]) if token >= _BYTE_OFFSET else b""

    def unsupported_sampling(self, params: SamplingParams) -> list[str]:
        return []

    def media_marker(self) -> str | None:
        return IMAGE_MARKER if self.vision else None

    def tokenize_media(self, text: str, images: Sequence[bytes], *, add_special: bool = True) -> FakeMedia:
        pieces = text.split(IMAGE_MARKER)
        if not self.vision or len(pieces) != len(images) + 1:
            raise EngineInputError("the images do not match the prompt's markers")
        tokens = self.tokenize(pieces[0], add_special=add_special)
        segments = []
        for image, piece in zip(images, pieces[1:]):
            if not image.startswith(b"\x89PNG"):
                raise EngineInputError("an image could not be decoded")
            segments.append(FakeSpan(len(tokens), IMAGE_TOKENS, image))
            tokens += [-(zlib.crc32(image) % 1000) - 2] * IMAGE_TOKENS
            tokens += self.tokenize(piece, add_special=False)
        return FakeMedia(tokens, tuple(segments))

    def check_grammar(self, grammar: Grammar) -> str | None:
        if grammar.kind == "gbnf" and "root" not in grammar.source:
            return "the grammar could not be parsed (GBNF, with a `root` rule)"
        return None

    def fim_tokens(self) -> tuple[int, int, int] | None:
        return (0, 0, 0) if self.fim else None

    def eog_tokens(self) -> frozenset[int]:
        return frozenset({EOS_ID})

    async def distribution(
        self, prompt_tokens: list[int], sampling: SamplingParams | None, top_n: int
    ) -> list[tuple[int, float]]:
        # A made-up but well-formed distribution: halving probabilities over the next bytes.
        count = min(top_n, 5 if sampling is not None and sampling.top_k else 20)
        return [(_BYTE_OFFSET + ord("a") + i, 0.5 ** (i + 1)) for i in range(count)]

    @staticmethod
    def _logprob(token: int) -> float:
        return -((token % 7) + 1) / 4.0

    def _top(self, token: int, k: int) -> TopLogprobs:
        alternatives = [(token, self._logprob(token))] + [
            (_BYTE_OFFSET + b, -3.0 - i) for i, b in enumerate(b"xyz0123456789abcdefghij") if _BYTE_OFFSET + b != token
        ]
        return tuple(alternatives[:k])

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        if parse_special and text.startswith(self.info.bos_token):
            add_special, text = True, text[len(self.info.bos_token):]
        body = [b + _BYTE_OFFSET for b in text.encode("utf-8")]
        return [BOS_ID, *body] if add_special else body

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(t - _BYTE_OFFSET for t in tokens if t >= _BYTE_OFFSET).decode("utf-8", errors="replace")

    def _extras(self, request: GenerationRequest, token: int, first: bool) -> dict:
        extra: dict = {}
        if request.logprobs is not None:
            extra["logprob"] = self._logprob(token)
            extra["top_logprobs"] = self._top(token, request.logprobs)
        if first and request.prompt_logprobs:
            prompt = request.prompt_tokens
            extra["prompt_logprobs"] = ((prompt[0], None, ()),) + tuple(
                (t, self._logprob(t), self._top(t, request.logprobs or 0)) for t in prompt[1:]
            )
        return extra

    def _continuation(self, request: GenerationRequest) -> str:
        if self.script is not None:
            return self.script
        seed = 0 if request.sampling.greedy else (request.sampling.seed or random.getrandbits(32))
        rng = random.Random(hash((tuple(request.prompt_tokens), seed)))
        return " " + " ".join(rng.choice(_WORDS) for _ in range(64))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        self.requests.append(request)
        tokens = [b + _BYTE_OFFSET for b in self._continuation(request).encode("utf-8")] + [EOS_ID]
        banned = {t for t, bias in request.sampling.logit_bias.items() if bias <= -100}
        first = True
        decoder = IncrementalUtf8()
        room = self.info.context_length - len(request.prompt_tokens)
        limit = min(request.max_tokens, room)
        produced = 0
        self._stats.active += 1
        outcome = "cancelled"

        def end(how: str) -> None:  # counted before the last event is seen, as the real engines do
            nonlocal outcome
            outcome = how
            self._stats.active -= 1
            self._stats.ended(how, produced)

        try:
            for step, token in enumerate(t for t in tokens if t not in banned):
                if self.fail_at_step is not None and step == self.fail_at_step:
                    end("failed")
                    raise EngineError("the fake engine failed as it was told to")
                if self.step_delay:
                    await asyncio.sleep(self.step_delay)
                else:
                    await asyncio.sleep(0)
                if self._stop_requests & {None, request.request_id}:
                    self._stop_requests.clear()
                    end("completed")
                    yield TokenEvent(token_id=-1, text=decoder.flush(), finish_reason="stop")
                    return
                produced += 1
                self._stats.tokens_generated += 1
                extra = self._extras(request, token, first)
                first = False
                if token == EOS_ID:
                    end("completed")
                    yield TokenEvent(token_id=token, text=decoder.flush(), finish_reason="stop", **extra)
                    return
                text = decoder.push(bytes([token - _BYTE_OFFSET]))
                if produced >= limit:
                    end("completed")
                    yield TokenEvent(token_id=token, text=text + decoder.flush(), finish_reason="length", **extra)
                    return
                yield TokenEvent(token_id=token, text=text, **extra)
        finally:
            if outcome == "cancelled":
                end("cancelled")
