"""The chat pipeline: a conversation → the model's prompt → its reply, as OpenAI chat bodies and
chunks (`/v1/chat/completions`) or as neutral events for the other wire adapters (services/wire)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from homeport.engines.base import PromptMedia, TextEngine
from homeport.errors import InvalidRequestError
from homeport.services.engine_input import engine_input_from
from homeport.services.ids import new_id, now
from homeport.services.reply import Reply
from homeport.services.text import generation
from homeport.services.text.chat_output import (
    DeltaAssembler,
    EventAssembler,
    assemble_message,
    finish_reason_for,
    parser_for_plan,
)
from homeport.services.text.conversation import Conversation
from homeport.services.text.events import Event, Finish, UsageReport
from homeport.services.text.generation import PreparedGeneration, Usage, debug_log
from homeport.services.text.logprobs import LogprobFormatter
from homeport.services.text.presets import PresetLibrary
from homeport.services.text.prompts import BuiltPrompt, ChatPromptService, images
from homeport.services.text.prompts.media_policy import OFFLINE, MediaPolicy
from homeport.services.text.sampling import Sampling, build_sampling
from homeport.services.text.streams import merge
from homeport.services.text.thinking_budget import ReasoningMeter
from homeport.services.text.tool_calls import ToolCallParser, parser_by_name, parser_for
from homeport.services.text.tool_use import ToolPlan, plan_tools


class ChatService:
    def __init__(
        self,
        engine: TextEngine,
        prompts: ChatPromptService,
        presets: PresetLibrary,
        *,
        debug: bool = False,
        max_queue: int = 256,
        media: MediaPolicy = OFFLINE,
    ) -> None:
        self.engine = engine
        self.prompts = prompts
        self.presets = presets
        self.debug = debug
        self.max_queue = max_queue
        self.media = media  # whether image URLs are fetched (--allow-remote-media), and from where

    async def create(self, conversation: Conversation) -> Reply:
        """The OpenAI chat adapter's output side: a chat completion body, or its chunks."""
        ready = await self._prepare(conversation)
        fields, choices, output, sampling = ready.conversation.sampling, ready.choices, ready.output, ready.sampling
        logprobs = ready.conversation.logprobs
        formatter = LogprobFormatter(self.engine, logprobs.top or 0) if logprobs.enabled else None
        if fields.stream:
            include_usage = bool(fields.stream_options and fields.stream_options.include_usage)
            return Reply(self._stream(ready.response_id, choices, formatter, output, include_usage), sampling.headers())
        return Reply(await self._complete(ready.response_id, choices, formatter, output), sampling.headers())

    async def turn(self, conversation: Conversation, *, thinking_budget: int | None = None) -> ChatTurn:
        """One generation as neutral events, for the other wire adapters (Anthropic Messages, OpenAI
        Responses). Everything that can be refused is refused here, before any event.
        `thinking_budget`: the most tokens the reply may reason for (thinking_budget.py)."""
        ready = await self._prepare(conversation)
        client_stops = conversation.limits.stop_strings()
        events = self._events(ready.choices[0], ready.output, client_stops, thinking_budget)
        return ChatTurn(
            events=events,
            headers=ready.sampling.headers(),
            model=self.engine.info.model_id,
            prompt_tokens=len(ready.choices[0].request.prompt_tokens),
            dropped_messages=ready.dropped_messages,
        )

    async def count_tokens(self, conversation: Conversation) -> int:
        """How many tokens the conversation's prompt is, as it would be generated from."""
        conversation = self.presets.apply_to(conversation)
        plan = plan_tools(conversation)
        built = await self._build_prompt(conversation, plan)
        tokens, _ = await self._prompt_tokens(conversation, built.text)
        return len(tokens)

    async def _prepare(self, conversation: Conversation) -> _Ready:
        conversation = self.presets.apply_to(conversation)
        logprobs, limits = conversation.logprobs, conversation.limits
        if logprobs.top is not None and not logprobs.enabled:
            raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        plan = plan_tools(conversation)
        generation.check_capacity(self.engine, self.max_queue)
        response_id = new_id("chatcmpl")
        sampling = self._sampling(conversation, plan)
        built = await self._build_prompt(conversation, plan)
        prompt = built.text
        if self.debug:
            debug_log.info("chat prompt: %r", prompt)
        tokens, media = await self._prompt_tokens(conversation, prompt)
        sampling, guided = self._guided(sampling, plan, built)
        prepared = generation.prepare(
            self.engine,
            conversation.sampling,
            tokens,
            max_tokens=limits.max_tokens,
            stops=[*built.stops, *limits.stop_strings()],
            param="messages",
            request_id=response_id,
            sampling=sampling,
            logprobs=(logprobs.top or 0) if logprobs.enabled else None,
            render_special=bool(plan and plan.parses_calls) or "<|channel|>" in built.template_source,
            media=media,
        )
        choices = [generation.with_seed_offset(prepared, i) for i in range(conversation.sampling.n or 1)]
        # Under homeport's own tool prompt the model was told the generic JSON call format.
        model_parser = (
            parser_by_name("generic")
            if built.generic_tools
            else parser_for(built.template_source, self.engine.info.model_id)
        )
        output = _Output(
            starts_in_reasoning=built.starts_in_reasoning,
            plan=plan,
            parser=parser_for_plan(plan, model_parser, guided=guided),
        )
        return _Ready(conversation, response_id, choices, output, sampling, built.dropped_messages)

    async def _events(
        self,
        prepared: PreparedGeneration,
        output: _Output,
        client_stops: tuple[str, ...],
        thinking_budget: int | None = None,
    ) -> AsyncIterator[Event]:
        usage = Usage()
        assembler = EventAssembler(
            starts_in_reasoning=output.starts_in_reasoning, plan=output.plan, parser=output.parser
        )
        meter = ReasoningMeter(starts_in_reasoning=output.starts_in_reasoning, budget=thinking_budget)
        last = None  # the delta that ended the reply
        async with aclosing(generation.run(self.engine, prepared, usage)) as deltas:
            async for delta in deltas:
                for event in assembler.feed(delta.text):
                    yield event
                if delta.finish_reason is not None:
                    last = delta
                elif meter.feed(delta.text, usage.completion_tokens):
                    break  # the thinking budget is spent: this generation stops here
        if last is None:
            for event in assembler.feed(meter.closing()):
                yield event
            async with aclosing(self._answer_after_thinking(prepared, meter, usage)) as deltas:
                async for delta in deltas:
                    for event in assembler.feed(delta.text):
                        yield event
                    if delta.finish_reason is not None:
                        last = delta
        for event in assembler.finish():
            yield event
        reason = finish_reason_for(assembler.called_tools, output.plan, last.finish_reason)
        stop = last.stop_sequence if last.stop_sequence in client_stops else None
        yield Finish(reason=reason, stop_sequence=stop)
        yield UsageReport(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, reasoning_tokens=meter.reasoning_tokens
        )

    async def _answer_after_thinking(
        self, prepared: PreparedGeneration, meter: ReasoningMeter, usage: Usage
    ) -> AsyncIterator[generation.TextDelta]:
        """The second generation of a reply whose thinking budget ran out: its prompt is the first
        one + the reasoning so far + the closing marker (mostly a prefix-cache hit), its limit what
        is left of max_tokens. The marker's tokens count as output; the prompt's only once."""
        added = await generation.tokenize(self.engine, meter.continuation(), add_special=False)
        usage.completion_tokens += len(await generation.tokenize(self.engine, meter.closing(), add_special=False))
        left = prepared.request.max_tokens - usage.completion_tokens
        if left <= 0:
            yield generation.TextDelta("", "length")
            return
        # min_tokens: an answer follows the cut reasoning (a model would often end its turn at once).
        request = dataclasses.replace(
            prepared.request, prompt_tokens=[*prepared.request.prompt_tokens, *added], max_tokens=left, min_tokens=1
        )
        second = Usage()
        try:
            async with aclosing(generation.run(self.engine, dataclasses.replace(prepared, request=request), second)) as deltas:
                async for delta in deltas:
                    yield delta
        finally:
            usage.completion_tokens += second.completion_tokens

    async def _build_prompt(self, conversation: Conversation, plan: ToolPlan | None) -> BuiltPrompt:
        """The prompt, with the oldest turns dropped when the history does not fit the context
        (less the room asked for the reply). Rendering and counting tokens is CPU work: in a thread."""
        limit = generation.context_limit(self.engine, conversation.sampling)
        budget = limit - (conversation.limits.max_tokens or 1)

        def count(text: str) -> int:
            return len(self.engine.tokenize(text, add_special=False))

        return await asyncio.to_thread(self.prompts.build, conversation, plan=plan, count_tokens=count, budget=budget)

    async def _prompt_tokens(self, conversation: Conversation, prompt: str) -> tuple[list[int], PromptMedia | None]:
        """The prompt's tokens, and its images when it kept any (their bytes decoded or fetched and
        their placeholders laid out by the engine, off the event loop)."""
        # A template that writes the BOS token itself must not get a second one from the tokenizer.
        bos = self.engine.info.bos_token
        add_special = not (bos and prompt.startswith(bos))
        if not images.has_slots(prompt):
            return await generation.tokenize(self.engine, prompt, add_special=add_special), None
        refs = images.image_refs(conversation.messages)
        images.vision_marker(self.engine, refs)  # a model without vision: a 400 before anything is fetched
        with engine_input_from("messages"):
            media = await asyncio.to_thread(
                images.tokenize_with_images, self.engine, prompt, refs, self.media, add_special=add_special
            )
        return media.tokens, media

    def _sampling(self, conversation: Conversation, plan: ToolPlan | None) -> Sampling:
        """The conversation's sampling, with a forced tool_choice's grammar."""
        sampling = build_sampling(conversation.sampling, self.engine)
        forced = plan.grammar() if plan else None
        if forced is None:
            return sampling
        if sampling.params.grammar is not None:
            raise InvalidRequestError(
                "a forced tool_choice cannot be combined with response_format or grammar_string", param="tool_choice"
            )
        problem = self.engine.check_grammar(forced)
        if problem:
            raise InvalidRequestError(f"a tool's parameters cannot be enforced: {problem}", param="tools")
        return dataclasses.replace(sampling, params=dataclasses.replace(sampling.params, grammar=forced))

    def _guided(self, sampling: Sampling, plan: ToolPlan | None, built: BuiltPrompt) -> tuple[Sampling, bool]:
        """`auto` under homeport's tool prompt: held to plain text or valid calls where the engine
        can enforce it and the request asked for no format of its own; and whether it is."""
        guided = plan.guided_grammar() if plan and built.generic_tools else None
        if guided is None or sampling.params.grammar is not None or self.engine.check_grammar(guided) is not None:
            return sampling, False
        return dataclasses.replace(sampling, params=dataclasses.replace(sampling.params, grammar=guided)), True

    def _envelope(self, response_id: str, created: int, obj: str) -> dict:
        return {"id": response_id, "object": obj, "created": created, "model": self.engine.info.model_id}

    async def _complete(
        self, response_id: str, choices: list[PreparedGeneration], formatter: LogprobFormatter | None, output: _Output
    ) -> dict:
        usage = Usage()
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(generation.collect(self.engine, c, usage)) for c in choices]
        bodies = []
        for index, task in enumerate(running):
            result = task.result()
            if self.debug:
                debug_log.info("chat output: %r", result.text)
            message, called = assemble_message(
                result.text, starts_in_reasoning=output.starts_in_reasoning, plan=output.plan, parser=output.parser
            )
            logprobs = formatter.chat(result.tokens) if formatter else None
            finish_reason = finish_reason_for(called, output.plan, result.finish_reason)
            bodies.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason})
        return {**self._envelope(response_id, now(), "chat.completion"), "choices": bodies, "usage": usage.to_dict()}

    async def _stream(
        self,
        response_id: str,
        choices: list[PreparedGeneration],
        formatter: LogprobFormatter | None,
        output: _Output,
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
        assemblers = [
            DeltaAssembler(starts_in_reasoning=output.starts_in_reasoning, plan=output.plan, parser=output.parser)
            for _ in choices
        ]
        streams = [generation.run(self.engine, c, usage) for c in choices]
        async with aclosing(merge(streams)) as deltas:
            async for index, delta in deltas:
                assembler = assemblers[index]
                logprobs = formatter.chat(delta.tokens) if formatter and delta.tokens else None
                parts = assembler.feed(delta.text)
                if delta.finish_reason is not None:
                    parts += assembler.finish()
                if logprobs and not parts:
                    parts = [{"content": ""}]
                for i, part in enumerate(parts):
                    yield chunk(index, part, None, logprobs if i == 0 else None)
                if delta.finish_reason is not None:
                    finish = finish_reason_for(assembler.called_tools, output.plan, delta.finish_reason)
                    yield chunk(index, {}, finish)
        if include_usage:
            yield {**envelope, "choices": [], "usage": usage.to_dict()}


@dataclass(frozen=True)
class ChatTurn:
    """A validated generation: its neutral events (events.py), to be consumed once."""

    events: AsyncIterator[Event]
    headers: dict[str, str]
    model: str
    prompt_tokens: int
    dropped_messages: int = 0  # oldest messages left out so the prompt fits the context


@dataclass(frozen=True)
class _Ready:
    conversation: Conversation  # with its preset applied
    response_id: str
    choices: list[PreparedGeneration]
    output: _Output
    sampling: Sampling
    dropped_messages: int = 0


@dataclass(frozen=True)
class _Output:
    """How a request's raw output becomes messages: reasoning split, and which calls to look for."""

    starts_in_reasoning: bool
    plan: ToolPlan | None
    parser: ToolCallParser | None
