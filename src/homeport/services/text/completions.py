"""`/v1/completions`: prompts in, text completions out (streamed or whole).

Each prompt gets `n` choices (indexed prompt by prompt, as OpenAI does); with `best_of`, that many
candidates are generated and the `n` with the highest mean token logprob are returned. All of a
request's generations run concurrently, so the engine decodes them in one batch. Instead of
`prompt`, the reference API's `messages` form: their text joined with no template, images where
the text writes `<__media__>` (`images.completion_prompt`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from homeport.engines.base import PromptMedia, TextEngine
from homeport.errors import InvalidRequestError
from homeport.schemas.completions import CompletionRequest
from homeport.services.engine_input import engine_input_from
from homeport.services.ids import new_id, now
from homeport.services.reply import Reply
from homeport.services.text import generation
from homeport.services.text.generation import Collected, PreparedGeneration, Usage, debug_log
from homeport.services.text.logprobs import LogprobFormatter, entries
from homeport.services.text.presets import PresetLibrary
from homeport.services.text.prompts import images
from homeport.services.text.prompts.images import ImageRef
from homeport.services.text.prompts.media_policy import OFFLINE, MediaPolicy
from homeport.services.text.sampling import build_sampling
from homeport.services.text.streams import merge


@dataclass(frozen=True, eq=False)
class _Choice:
    index: int
    prompt_index: int
    prompt_text: str  # for echo
    prepared: PreparedGeneration


@dataclass(frozen=True)
class _ImagePrompt:
    """A `messages` prompt with images: its text with a slot per image, and the image parts."""

    text: str
    refs: list[ImageRef]

    @property
    def shown(self) -> str:  # as the client wrote it, <__media__> markers included (for echo)
        return images.show_slots(self.text)


Prompt = str | list[int] | _ImagePrompt


class CompletionService:
    def __init__(
        self,
        engine: TextEngine,
        presets: PresetLibrary,
        *,
        debug: bool = False,
        max_queue: int = 256,
        media: MediaPolicy = OFFLINE,
    ) -> None:
        self.engine = engine
        self.presets = presets
        self.debug = debug
        self.max_queue = max_queue
        self.media = media  # whether image URLs are fetched (--allow-remote-media), and from where

    async def create(self, request: CompletionRequest) -> Reply:
        """Validates everything first (errors are plain 4xx responses), then returns the whole
        response, or for `stream` an iterator of chunks."""
        request = self.presets.apply(request)
        prompts = self._prompts(request)
        n = request.n or 1
        best_of = request.best_of or n
        _check_combinations(request, n, best_of, len(prompts))
        generation.check_capacity(self.engine, self.max_queue)
        response_id = new_id("cmpl")
        sampling = build_sampling(request, self.engine)
        wants_logprobs = request.logprobs is not None
        # best_of ranks candidates by logprob, so it needs them even when the client does not.
        engine_logprobs = request.logprobs if wants_logprobs else (0 if best_of > n else None)
        candidates: list[list[_Choice]] = []
        for prompt_index, prompt in enumerate(prompts):
            tokens, prompt_text, media = await self._prompt_tokens(request, prompt)
            base = generation.prepare(
                self.engine,
                request,
                tokens,
                max_tokens=request.max_tokens,
                stops=request.stop_strings(),
                param="prompt",
                request_id=response_id,
                sampling=sampling,
                logprobs=engine_logprobs,
                prompt_logprobs=bool(request.echo and wants_logprobs),
                media=media,
            )
            candidates.append(
                [
                    _Choice(prompt_index * n + i, prompt_index, prompt_text, generation.with_seed_offset(base, i))
                    for i in range(best_of)
                ]
            )
        formatter = LogprobFormatter(self.engine, request.logprobs or 0) if wants_logprobs else None
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            choices = [choice for group in candidates for choice in group]
            body = self._stream(response_id, choices, bool(request.echo), formatter, include_usage)
        else:
            body = await self._complete(response_id, candidates, n, bool(request.echo), formatter)
        return Reply(body, sampling.headers())

    def _prompts(self, request: CompletionRequest) -> list[Prompt]:
        """`prompt`'s prompts, or the one `messages` makes (exactly one of the two is sent)."""
        if (request.prompt is None) == (request.messages is None):
            raise InvalidRequestError(
                "send either prompt (text or token ids) or messages (text and images), exactly one of them",
                param="prompt",
            )
        if request.messages is None:
            return request.prompts()
        text, refs = images.completion_prompt(request.messages)
        if not refs:
            return [text]  # text only: an ordinary text prompt (suffix, echo, truncation all apply)
        if request.suffix is not None:
            raise InvalidRequestError("suffix (fill in the middle) cannot be combined with images", param="suffix")
        if request.echo and request.logprobs is not None:
            # Prompt logprobs would have to step over the image placeholders; not supported.
            raise InvalidRequestError("echo with logprobs is not available for a prompt with images", param="echo")
        images.vision_marker(self.engine, refs)  # a model without vision: a 400 before anything is fetched
        return [_ImagePrompt(text, refs)]

    async def _prompt_tokens(
        self, request: CompletionRequest, prompt: Prompt
    ) -> tuple[list[int], str, PromptMedia | None]:
        """The prompt's tokens, its text (for echo) and its images, if any."""
        if isinstance(prompt, _ImagePrompt):
            if self.debug:
                debug_log.info("completion prompt: %r", prompt.shown)
            with engine_input_from("messages"):  # the reference API's completions with `messages`
                media = await asyncio.to_thread(
                    images.tokenize_with_images, self.engine, prompt.text, prompt.refs, self.media,
                    add_special=request.add_bos_token,
                )
            # Not truncated (a cut could fall inside an image): too long for the context is a 400.
            return media.tokens, prompt.shown, media
        if isinstance(prompt, list):
            generation.check_token_ids(self.engine, prompt, "prompt")
            if request.suffix:
                raise InvalidRequestError("suffix needs a text prompt", param="suffix")
            tokens = list(prompt)
            return await self._truncate(request, tokens), self.engine.detokenize(tokens), None
        if self.debug:
            debug_log.info("completion prompt: %r suffix: %r", prompt, request.suffix)
        if request.suffix is not None:
            tokens = await self._fill_in_the_middle(request, prompt, request.suffix)
        else:
            tokens = await generation.tokenize(self.engine, prompt, add_special=request.add_bos_token)
        return await self._truncate(request, tokens), prompt, None

    async def _fill_in_the_middle(self, request: CompletionRequest, prefix: str, suffix: str) -> list[int]:
        fim = self.engine.fim_tokens()
        if fim is None:
            raise InvalidRequestError(
                f"suffix (fill in the middle) needs a model with FIM tokens; {self.engine.info.model_id} has none",
                param="suffix",
            )
        pre, suf, mid = fim
        bos = await self._bos() if request.add_bos_token else []
        prefix_tokens = await generation.tokenize(self.engine, prefix, add_special=False)
        suffix_tokens = await generation.tokenize(self.engine, suffix, add_special=False)
        return [*bos, pre, *prefix_tokens, suf, *suffix_tokens, mid]

    async def _bos(self) -> list[int]:
        """The tokens the tokenizer puts before any text (BOS, or nothing)."""
        return await generation.tokenize(self.engine, "", add_special=True)

    async def _truncate(self, request: CompletionRequest, tokens: list[int]) -> list[int]:
        """With `truncation_length`, a prompt too long for it loses its oldest tokens (the
        reference API's behaviour); without it, an over-long prompt is a 400."""
        if not request.truncation_length:
            return tokens
        room = generation.context_limit(self.engine, request) - (request.max_tokens or 0)
        if room <= 0 or len(tokens) <= room:
            return tokens
        keep_first = tokens[:1] if tokens[:1] == (await self._bos())[:1] else []
        return keep_first + tokens[len(tokens) - room + len(keep_first) :]

    def _visible(self, prompt_logprobs: tuple | None) -> list:
        """Echoed prompt entries, without control tokens such as BOS that are not in the text."""
        return [entry for entry in prompt_logprobs or () if self.engine.detokenize([entry[0]])]

    def _envelope(self, response_id: str, created: int, choices: list[dict]) -> dict:
        return {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": self.engine.info.model_id,
            "choices": choices,
        }

    async def _complete(
        self,
        response_id: str,
        candidates: list[list[_Choice]],
        n: int,
        echo: bool,
        formatter: LogprobFormatter | None,
    ) -> dict:
        usage = Usage()
        flat = [choice for group in candidates for choice in group]
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(generation.collect(self.engine, c.prepared, usage)) for c in flat]
        results = dict(zip(flat, (task.result() for task in running)))
        choices = []
        for group in candidates:
            best = sorted(group, key=lambda c: _mean_logprob(results[c]), reverse=True)[:n] if len(group) > n else group
            for rank, choice in enumerate(best):
                result = results[choice]
                if self.debug:
                    debug_log.info("completion output: %r", result.text)
                text = choice.prompt_text + result.text if echo else result.text
                logprobs = None
                if formatter is not None:
                    prompt_entries = self._visible(result.prompt_logprobs) if echo else []
                    logprobs = formatter.legacy(prompt_entries + entries(result.tokens), 0)
                index = choice.prompt_index * n + rank
                choices.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": result.finish_reason})
        body = self._envelope(response_id, now(), choices)
        body["usage"] = usage.to_dict()
        return body

    async def _stream(
        self,
        response_id: str,
        choices: list[_Choice],
        echo: bool,
        formatter: LogprobFormatter | None,
        include_usage: bool,
    ) -> AsyncIterator[dict]:
        created = now()
        usage = Usage()
        extra = {"usage": None} if include_usage else {}
        offsets = [0] * len(choices)  # where each choice's next text starts (logprobs text_offset)
        started = [False] * len(choices)

        def chunk(choice: _Choice, text: str, logprobs: dict | None, finish_reason: str | None) -> dict:
            body = {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
            return {**self._envelope(response_id, created, [body]), **extra}

        streams = [generation.run(self.engine, c.prepared, usage) for c in choices]
        async with aclosing(merge(streams)) as deltas:
            async for position, delta in deltas:
                choice = choices[position]
                if echo and not started[position]:
                    # The prompt goes first, as its own chunk, with its logprobs when asked for.
                    started[position] = True
                    prompt_lp = formatter.legacy(self._visible(delta.prompt_logprobs), 0) if formatter else None
                    yield chunk(choice, choice.prompt_text, prompt_lp, None)
                    offsets[position] = len(choice.prompt_text)
                if not delta.text and delta.finish_reason is None:
                    continue
                logprobs = None
                if formatter is not None:
                    logprobs = formatter.legacy(entries(delta.tokens), offsets[position])
                    offsets[position] += len(delta.text)
                yield chunk(choice, delta.text, logprobs, delta.finish_reason)
        if include_usage:
            yield {**self._envelope(response_id, created, []), "usage": usage.to_dict()}


def _mean_logprob(result: Collected) -> float:
    logprobs = [t.logprob for t in result.tokens if t.logprob is not None]
    return sum(logprobs) / len(logprobs) if logprobs else float("-inf")


def _check_combinations(request: CompletionRequest, n: int, best_of: int, prompts: int) -> None:
    if best_of < n:
        raise InvalidRequestError(f"best_of ({best_of}) must be at least n ({n})", param="best_of")
    if request.stream and best_of > n:
        raise InvalidRequestError("best_of cannot be used with stream (the best choice is known only at the end)", param="best_of")
    if prompts * best_of > 128:
        raise InvalidRequestError("at most 128 generations per request (prompts × best_of)", param="best_of")
