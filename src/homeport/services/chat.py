"""`/v1/chat/completions`: messages → the model's prompt → an assistant message (streamed or whole)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from homeport.engines.base import TextEngine
from homeport.errors import InvalidRequestError, UnsupportedParameterError
from homeport.schemas.chat import ChatCompletionRequest, ChatMessage, TextPart
from homeport.services import generation
from homeport.services.generation import PreparedGeneration, Usage, debug_log
from homeport.services.ids import new_id, now
from homeport.services.logprobs import LogprobFormatter
from homeport.services.presets import PresetLibrary
from homeport.services.reply import Reply
from homeport.services.sampling import build_sampling
from homeport.services.streams import merge
from homeport.services.prompts.chat_templates import ChatTemplate, ChatTemplateRenderer


class ChatPromptBuilder:
    """Turns OpenAI messages into the model's prompt text through its chat template."""

    def __init__(self, template: ChatTemplate, renderer: ChatTemplateRenderer, *, bos_token: str, eos_token: str) -> None:
        self.template = template
        self.renderer = renderer
        self.bos_token = bos_token
        self.eos_token = eos_token

    def build(self, messages: list[ChatMessage]) -> str:
        normalized = [_normalize(i, message) for i, message in enumerate(messages)]
        return self.renderer.render(
            self.template,
            normalized,
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


def _normalize(index: int, message: ChatMessage) -> dict:
    """One message as templates expect it: a known role and plain-string content."""
    content = message.content
    if isinstance(content, list):
        if any(not isinstance(part, TextPart) for part in content):
            raise InvalidRequestError(
                "this model does not accept images; send text content only",
                param=f"messages[{index}].content",
            )
        content = "\n".join(part.text for part in content)
    if content is None:
        # An assistant turn that only called tools: keep the calls visible to the model as text.
        content = json.dumps([call.get("function", call) for call in message.tool_calls or []], ensure_ascii=False)
    normalized = {"role": "system" if message.role == "developer" else message.role, "content": content}
    if message.name:
        normalized["name"] = message.name
    if message.tool_call_id:
        normalized["tool_call_id"] = message.tool_call_id
    return normalized


class ChatService:
    def __init__(
        self,
        engine: TextEngine,
        prompts: ChatPromptBuilder,
        presets: PresetLibrary,
        *,
        debug: bool = False,
        max_queue: int = 256,
    ) -> None:
        self.engine = engine
        self.prompts = prompts
        self.presets = presets
        self.debug = debug
        self.max_queue = max_queue

    async def create(self, request: ChatCompletionRequest) -> Reply:
        request = self.presets.apply(request)
        _refuse_unsupported(request)
        generation.check_capacity(self.engine, self.max_queue)
        response_id = new_id("chatcmpl")
        prompt = self.prompts.build(request.messages)
        if self.debug:
            debug_log.info("chat prompt: %r", prompt)
        # A template that writes the BOS token itself must not get a second one from the tokenizer.
        starts_with_bos = bool(self.prompts.bos_token) and prompt.startswith(self.prompts.bos_token)
        tokens = await generation.tokenize(self.engine, prompt, add_special=not starts_with_bos)
        sampling = build_sampling(request, self.engine)
        prepared = generation.prepare(
            self.engine,
            request,
            tokens,
            max_tokens=request.token_limit(),
            stops=[*self.prompts.template.stop, *request.stop_strings()],
            param="messages",
            request_id=response_id,
            sampling=sampling,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        )
        choices = [generation.with_seed_offset(prepared, i) for i in range(request.n or 1)]
        formatter = LogprobFormatter(self.engine, request.top_logprobs or 0) if request.logprobs else None
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return Reply(self._stream(response_id, choices, formatter, include_usage), sampling.headers())
        return Reply(await self._complete(response_id, choices, formatter), sampling.headers())

    def _envelope(self, response_id: str, created: int, obj: str) -> dict:
        return {"id": response_id, "object": obj, "created": created, "model": self.engine.info.model_id}

    async def _complete(
        self, response_id: str, choices: list[PreparedGeneration], formatter: LogprobFormatter | None
    ) -> dict:
        usage = Usage()
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(generation.collect(self.engine, c, usage)) for c in choices]
        bodies = []
        for index, task in enumerate(running):
            result = task.result()
            if self.debug:
                debug_log.info("chat output: %r", result.text)
            message = {"role": "assistant", "content": result.text, "refusal": None}
            logprobs = formatter.chat(result.tokens) if formatter else None
            bodies.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": result.finish_reason})
        return {**self._envelope(response_id, now(), "chat.completion"), "choices": bodies, "usage": usage.to_dict()}

    async def _stream(
        self,
        response_id: str,
        choices: list[PreparedGeneration],
        formatter: LogprobFormatter | None,
        include_usage: bool,
    ) -> AsyncIterator[dict]:
        envelope = self._envelope(response_id, now(), "chat.completion.chunk")
        extra = {"usage": None} if include_usage else {}

        def chunk(index: int, delta: dict, finish_reason: str | None, logprobs: dict | None = None) -> dict:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            return {**envelope, "choices": [choice], **extra}

        for index in range(len(choices)):
            yield chunk(index, {"role": "assistant", "content": "", "refusal": None}, None)
        usage = Usage()
        streams = [generation.run(self.engine, c, usage) for c in choices]
        async with aclosing(merge(streams)) as deltas:
            async for index, delta in deltas:
                logprobs = formatter.chat(delta.tokens) if formatter and delta.tokens else None
                if delta.text or logprobs:
                    yield chunk(index, {"content": delta.text}, None, logprobs)
                if delta.finish_reason is not None:
                    yield chunk(index, {}, delta.finish_reason)
        if include_usage:
            yield {**envelope, "choices": [], "usage": usage.to_dict()}


def _refuse_unsupported(request: ChatCompletionRequest) -> None:
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    if request.tools or request.functions:
        param = "tools" if request.tools else "functions"
        raise UnsupportedParameterError("tool calling is not supported yet", param=param)
    if request.tool_choice not in (None, "none") or request.function_call not in (None, "none"):
        param = "tool_choice" if request.tool_choice not in (None, "none") else "function_call"
        raise InvalidRequestError(f"{param} needs tools, and none were given", param=param)
