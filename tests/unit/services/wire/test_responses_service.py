"""ResponsesService on a scripted chat turn and a real SQLite store: background runs are polled,
re-streamed from `starting_after` and cancelled (even before they start), and end up stored."""

from __future__ import annotations

import asyncio

import pytest

from homeport.errors import ContextLengthExceededError, EngineError, InvalidRequestError, NotFoundError
from homeport.schemas.responses import ResponsesRequest
from homeport.services.state.responses_store import ResponseStore
from homeport.services.text.chat import ChatTurn
from homeport.services.text.events import Finish, TextDelta, UsageReport
from homeport.services.wire.responses import ResponsesService
from support.openapi import SpecValidator


class FakeChat:
    def __init__(self, words: int, pause: float = 0.0, dropped: int = 0, fail_at: int | None = None) -> None:
        self.words, self.pause, self.dropped, self.fail_at = words, pause, dropped, fail_at
        self.requests = []

    async def turn(self, request) -> ChatTurn:
        self.requests.append(request)

        async def events():
            for i in range(self.words):
                await asyncio.sleep(self.pause)
                if i == self.fail_at:
                    raise EngineError("the model was unloaded")
                yield TextDelta(f"w{i} ")
            yield Finish("stop")
            yield UsageReport(3, self.words)

        return ChatTurn(events=events(), headers={}, model="fake", prompt_tokens=3, dropped_messages=self.dropped)


def _body(**fields) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"input": "hi", **fields})


@pytest.fixture
def service(tmp_path):
    return ResponsesService(ResponseStore(tmp_path / "state.db"))


async def test_background_run_is_polled_restreamed_and_stored(service):
    released = []
    queued, _ = await service.create(
        FakeChat(3), _body(background=True), release=lambda: released.append(1)
    )
    assert queued["status"] == "queued"
    replay = await service.stream_again(queued["id"], 1)
    events = [data async for _, data in replay]
    assert events[0]["sequence_number"] == 2 and events[-1]["type"] == "response.completed"
    stored = await service.retrieve(queued["id"])
    assert stored["status"] == "completed" and released == [1]
    assert service.store.get(queued["id"])["output"][0]["content"][0]["text"] == "w0 w1 w2 "


async def test_cancel_before_and_during_a_run(service):
    for pause in (0.0, 0.01):
        released = []
        queued, _ = await service.create(
            FakeChat(1000, pause), _body(background=True), release=lambda sink=released: sink.append(1)
        )
        if pause:
            await asyncio.sleep(0.05)
        cancelled = await service.cancel(queued["id"])
        assert cancelled["status"] == "cancelled" and released == [1]
        assert service.store.get(queued["id"])["status"] == "cancelled"


async def test_previous_response_id_rebuilds_the_conversation(service):
    chat = FakeChat(2)
    first, _ = await service.create(chat, _body(instructions="sys"))
    await service.create(chat, _body(input="again", previous_response_id=first["id"]))
    roles = [
        (m.role, m.parts[0].text) for m in chat.requests[1].messages
    ]
    assert roles == [("user", "hi"), ("assistant", "w0 w1 "), ("user", "again")]  # instructions are not carried over
    with pytest.raises(NotFoundError):
        await service.create(chat, _body(previous_response_id="resp_nope"))


async def test_unstored_responses_are_not_kept(service):
    response, _ = await service.create(FakeChat(1), _body(store=False))
    with pytest.raises(NotFoundError):
        await service.retrieve(response["id"])


async def test_a_conversation_that_does_not_fit_is_a_400_unless_truncation_is_auto(service):
    cut = FakeChat(words=2, dropped=3)  # the chat service had to drop the 3 oldest messages
    for truncation in (None, "disabled"):
        with pytest.raises(ContextLengthExceededError) as refused:
            await service.create(cut, _body(truncation=truncation))
        assert refused.value.param == "input"
    answer, _ = await service.create(cut, _body(truncation="auto"))
    assert answer["status"] == "completed"


async def test_a_failure_mid_stream_ends_failed_with_a_spec_error_code_and_is_stored(service):
    events, _ = await service.create(FakeChat(5, fail_at=2), _body(stream=True))
    received = [data async for _, data in events]
    failed = received[-1]
    assert failed["type"] == "response.failed" and failed["response"]["error"]["code"] == "server_error"
    spec = SpecValidator()
    for data in received:
        spec.validate("ResponseStreamEvent", data)
    assert service.store.get(failed["response"]["id"])["status"] == "failed"


async def test_item_references_resolve_from_the_store(service):
    chat = FakeChat(2)
    first, _ = await service.create(chat, _body(input="first"))
    output_id, input_id = first["output"][0]["id"], service.store.input_items(first["id"])[0]["id"]
    refs = [{"type": "item_reference", "id": input_id}, {"type": "item_reference", "id": output_id}]
    await service.create(chat, _body(input=[*refs, {"role": "user", "content": "next"}]))
    texts = [m.parts[0].text for m in chat.requests[1].messages]
    assert texts == ["first", "w0 w1 ", "next"]
    with pytest.raises(InvalidRequestError) as unknown:
        await service.create(chat, _body(input=[{"type": "item_reference", "id": "msg_gone"}]))
    assert unknown.value.param == "input[0].id"
