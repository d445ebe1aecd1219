"""`/v1/responses`: one turn of the chat pipeline as an OpenAI Response — streamed, whole, or in
the background — stored (store: true) so it can be retrieved, listed, chained and deleted.

A stored response is written once, when it has ended (completed, incomplete, failed or
cancelled), in one transaction. A background response lives in memory while it runs (its events
kept, so a client can stream it again from `starting_after`); a restart forgets a running one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from homeport.errors import ContextLengthExceededError, HomeportError, InvalidRequestError, NotFoundError
from homeport.schemas.responses import ResponsesRequest
from homeport.services.state.responses_store import ResponseStore
from homeport.services.text.chat import ChatService, ChatTurn
from homeport.services.wire.responses_input import input_items, to_conversation
from homeport.services.wire.responses_output import Named, ResponseAssembler, new_response

log = logging.getLogger(__name__)
_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_KEEP_FINISHED_RUNS = 64


@dataclass
class _Run:
    """A background response: its events so far, for pollers and re-streamers."""

    assembler: ResponseAssembler
    items: list[dict]
    history: list[dict]
    release: Callable[[], None] | None
    events: list[Named] = field(default_factory=list)
    done: bool = False
    task: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, events: list[Named]) -> None:
        self.events.extend(events)
        self.changed.set()
        self.changed = asyncio.Event()


class ResponsesService:
    def __init__(self, store: ResponseStore) -> None:
        self.store = store
        self._runs: dict[str, _Run] = {}

    async def create(
        self, chat: ChatService, body: ResponsesRequest, *, release: Callable[[], None] | None = None
    ) -> tuple[dict | AsyncIterator[Named], dict[str, str]]:
        """`release`: for background runs, called when the run ends (the model stays pinned until then)."""
        if body.background and not body.store:
            raise InvalidRequestError("background responses must be stored (store: true)", param="background")
        history: list[dict] = []
        if body.previous_response_id:
            found = await asyncio.to_thread(self.store.conversation, body.previous_response_id)
            if found is None:
                raise NotFoundError(
                    f"Previous response with id '{body.previous_response_id}' not found.", param="previous_response_id"
                )
            history = found
        # Off the event loop: item references are store look-ups, input files are decoded.
        items = await asyncio.to_thread(input_items, body, self.store.item)
        turn = await chat.turn(await asyncio.to_thread(to_conversation, body, history + items))
        if turn.dropped_messages and body.truncation != "auto":
            # OpenAI's default ("disabled"): a conversation that does not fit is a 400, not silently cut.
            await turn.events.aclose()
            raise ContextLengthExceededError(
                f"the conversation does not fit the model's context ({turn.prompt_tokens} tokens fit once "
                f"{turn.dropped_messages} of the oldest items are dropped); send truncation: \"auto\" to drop them",
                param="input",
            )
        assembler = ResponseAssembler(new_response(body, turn.model, "queued" if body.background else "in_progress"))
        events = self._events(turn, assembler, body, items, history)
        if body.background:
            await self._save(assembler, items, history)  # queued, retrievable even across a restart
            run = _Run(assembler, items, history, release)
            self._runs[assembler.response["id"]] = run
            run.task = asyncio.create_task(self._background(run, events))
            if body.stream:
                return self._follow(run, -1), turn.headers
            return _copy(assembler.response), turn.headers
        if body.stream:
            return events, turn.headers
        async with aclosing(events) as stream:
            async for _ in stream:
                pass
        return assembler.response, turn.headers

    async def _events(
        self,
        turn: ChatTurn,
        assembler: ResponseAssembler,
        body: ResponsesRequest,
        items: list[dict],
        history: list[dict],
    ) -> AsyncIterator[Named]:
        for event in assembler.start():
            yield event
        try:
            async with aclosing(turn.events) as events:
                async for neutral in events:
                    for event in assembler.feed(neutral):
                        if event[0] in _TERMINAL and body.store:
                            await self._save(assembler, items, history)  # stored before the client hears it ended
                        yield event
        except HomeportError as exc:
            failed = assembler.fail(_failure_code(exc), exc.message)
            if body.store:
                await self._save(assembler, items, history)
            for event in failed:
                yield event

    async def _save(self, assembler: ResponseAssembler, items: list[dict], history: list[dict]) -> None:
        response = _copy(assembler.response)
        conversation = [*history, *items, *response["output"]]
        await asyncio.to_thread(self.store.put, response, items, conversation)

    async def _background(self, run: _Run, events: AsyncIterator[Named]) -> None:
        try:
            async with aclosing(events) as stream:
                async for event in stream:
                    run.publish([event])
        except asyncio.CancelledError:
            await asyncio.shield(self._settle_cancelled(run))
            return
        except Exception as exc:  # noqa: BLE001 - a run nobody awaits must still end, failed and stored
            log.error("background response failed: %s", type(exc).__name__)
            run.publish(run.assembler.fail("server_error", "The server had an error while processing your request."))
            await self._save(run.assembler, run.items, run.history)
        await self._settle(run)

    async def _settle_cancelled(self, run: _Run) -> None:
        run.assembler.cancel()
        await self._save(run.assembler, run.items, run.history)
        await self._settle(run)

    async def _settle(self, run: _Run) -> None:
        if run.done:
            return
        run.done = True
        run.publish([])
        if run.release is not None:
            run.release()
        self._forget_old_runs()

    def _forget_old_runs(self) -> None:
        finished = [rid for rid, run in self._runs.items() if run.done]
        for rid in finished[: max(0, len(finished) - _KEEP_FINISHED_RUNS)]:
            del self._runs[rid]

    async def _follow(self, run: _Run, after: int) -> AsyncIterator[Named]:
        seen = 0
        while True:
            changed = run.changed
            while seen < len(run.events):
                name, data = run.events[seen]
                seen += 1
                if data["sequence_number"] > after:
                    yield name, data
            if run.done:
                return
            await changed.wait()

    # --- the stored side ---------------------------------------------------------------------

    async def retrieve(self, response_id: str) -> dict:
        run = self._runs.get(response_id)
        if run is not None:
            return _copy(run.assembler.response)
        found = await asyncio.to_thread(self.store.get, response_id)
        if found is None:
            raise _missing(response_id)
        return found

    async def stream_again(self, response_id: str, starting_after: int | None) -> AsyncIterator[Named]:
        run = self._runs.get(response_id)
        if run is None:
            await self.retrieve(response_id)  # a 404 when it does not exist at all
            raise InvalidRequestError(
                "only a background response this server is running (or ran recently) can be streamed again",
                param="stream",
            )
        return self._follow(run, -1 if starting_after is None else starting_after)

    async def list_input_items(self, response_id: str, *, after: str | None, limit: int, order: str) -> dict:
        run = self._runs.get(response_id)
        items = (
            run.items
            if run is not None and not run.done
            else await asyncio.to_thread(self.store.input_items, response_id)
        )
        if items is None:
            raise _missing(response_id)
        items = list(reversed(items)) if order == "desc" else list(items)
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise InvalidRequestError(f"no input item {after!r} in this response", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    async def delete(self, response_id: str) -> dict:
        run = self._runs.pop(response_id, None)
        if run is not None and run.task is not None and not run.done:
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
            if not run.done:
                await self._settle(run)
        deleted = await asyncio.to_thread(self.store.delete, response_id)
        if not deleted and run is None:
            raise _missing(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def cancel(self, response_id: str) -> dict:
        run = self._runs.get(response_id)
        if run is None:
            await self.retrieve(response_id)  # 404 if unknown
            raise InvalidRequestError("Only background responses can be cancelled.", param="response_id")
        if not run.done and run.task is not None:
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
            if not run.done:  # cancelled before it ever ran: none of its own cleanup did either
                await self._settle_cancelled(run)
        return _copy(run.assembler.response)


def _failure_code(error: HomeportError) -> str:
    """A failed response's `error.code`: the spec allows only its own codes (ResponseErrorCode)."""
    return "rate_limit_exceeded" if error.status_code == 429 else "server_error"


def _missing(response_id: str) -> NotFoundError:
    return NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")


def _copy(response: dict) -> dict:
    return json.loads(json.dumps(response))
