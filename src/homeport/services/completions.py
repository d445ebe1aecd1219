"""`/v1/completions`: prompts in, text completions out (streamed or whole)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from homeport.engines.base import TextEngine
from homeport.errors import UnsupportedParameterError
from homeport.schemas.completions import CompletionRequest
from homeport.services import generation
from homeport.services.generation import PreparedGeneration, Usage, debug_log
from homeport.services.ids import new_id, now


class CompletionService:
    def __init__(self, engine: TextEngine, *, debug: bool = False, max_queue: int = 256) -> None:
        self.engine = engine
        self.debug = debug
        self.max_queue = max_queue

    async def create(self, request: CompletionRequest) -> dict | AsyncIterator[dict]:
        """Validates everything first (errors are plain 4xx responses), then returns the whole
        response, or for `stream` an iterator of chunks."""
        _refuse_unsupported(request)
        generation.check_capacity(self.engine, self.max_queue)
        response_id = new_id("cmpl")
        prepared = [await self._prepare(request, prompt, response_id) for prompt in request.prompts()]
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return self._stream(response_id, prepared, include_usage)
        return await self._complete(response_id, prepared)

    async def _prepare(self, request: CompletionRequest, prompt: str | list[int], request_id: str) -> PreparedGeneration:
        if isinstance(prompt, str):
            if self.debug:
                debug_log.info("completion prompt: %r", prompt)
            tokens = await generation.tokenize(self.engine, prompt)
        else:
            generation.check_token_ids(self.engine, prompt, "prompt")
            tokens = list(prompt)
        return generation.prepare(
            self.engine,
            request,
            tokens,
            max_tokens=request.max_tokens,
            stops=request.stop_strings(),
            param="prompt",
            request_id=request_id,
        )

    def _envelope(self, response_id: str, created: int, choices: list[dict]) -> dict:
        return {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": self.engine.info.model_id,
            "choices": choices,
        }

    async def _complete(self, response_id: str, prepared: list[PreparedGeneration]) -> dict:
        usage = Usage()
        choices = []
        # Several prompts run one after another; each is its own choice, indexed like the prompts.
        for index, item in enumerate(prepared):
            text, finish_reason = await generation.collect(self.engine, item, usage)
            if self.debug:
                debug_log.info("completion output: %r", text)
            choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason})
        body = self._envelope(response_id, now(), choices)
        body["usage"] = usage.to_dict()
        return body

    async def _stream(self, response_id: str, prepared: list[PreparedGeneration], include_usage: bool) -> AsyncIterator[dict]:
        created = now()
        usage = Usage()
        extra = {"usage": None} if include_usage else {}
        for index, item in enumerate(prepared):
            async with aclosing(generation.run(self.engine, item, usage)) as deltas:
                async for delta in deltas:
                    if not delta.text and delta.finish_reason is None:
                        continue
                    choice = {"index": index, "text": delta.text, "logprobs": None, "finish_reason": delta.finish_reason}
                    yield {**self._envelope(response_id, created, [choice]), **extra}
        if include_usage:
            yield {**self._envelope(response_id, created, []), "usage": usage.to_dict()}


def _refuse_unsupported(request: CompletionRequest) -> None:
    generation.refuse_unsupported(request)
    if request.logprobs:
        raise UnsupportedParameterError("logprobs are not supported yet", param="logprobs")
    if request.echo:
        raise UnsupportedParameterError("echo is not supported yet", param="echo")
    if request.suffix:
        raise UnsupportedParameterError("suffix (fill in the middle) is not supported yet", param="suffix")
    if (request.best_of or 1) > 1:
        raise UnsupportedParameterError("best_of > 1 is not supported yet", param="best_of")
