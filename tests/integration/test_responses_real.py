"""OpenAI's Responses API on the real default model, driven by the official `openai` client;
every body and stream event is checked against the vendored OpenAI spec. A restart between
storing and retrieving shows the SQLite store keeps responses."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from support.openapi import SpecValidator
from support.server import API_KEY, start_server, stop_server

SPEC = SpecValidator()
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("responses")


@pytest.fixture(scope="module")
def server(home):
    running = start_server(home, "--api-key", API_KEY, "--state-db", str(home / "state" / "hp.db"), model=None)
    yield running
    stop_server(running)


@pytest.fixture
def client(server):
    return server.openai()


def _valid(response) -> dict:
    body = response.model_dump(mode="json", exclude_unset=True) if hasattr(response, "model_dump") else response
    SPEC.validate("Response", body)
    return body


def test_create_retrieve_and_list_input_items(client):
    created = client.responses.create(model="m", input="Say hello.", max_output_tokens=12, temperature=0.2)
    body = _valid(created)
    assert created.status in ("completed", "incomplete") and created.id.startswith("resp_")
    assert created.output_text
    again = client.responses.retrieve(created.id)
    assert _valid(again)["output"] == body["output"]
    items = client.responses.input_items.list(created.id)
    SPEC.validate("ResponseItemList", items.model_dump(mode="json", exclude_unset=True))
    assert [i.content[0].text for i in items.data] == ["Say hello."]


def test_max_output_tokens_makes_the_response_incomplete(client):
    response = client.responses.create(model="m", input="Write a long story about a dragon.", max_output_tokens=3)
    _valid(response)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"


def test_stream_events_follow_the_spec_in_order(client):
    with client.responses.stream(model="m", input="Count to three.", max_output_tokens=10) as stream:
        events = list(stream)
    final = events[-1].response  # the SDK's get_final_response() knows only response.completed, not .incomplete
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.delta" in kinds and "response.content_part.done" in kinds
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    for event in events:
        SPEC.validate("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text


def test_function_call_and_output_round_trip(client):
    first = client.responses.create(
        model="m",
        input="What's the weather in Paris?",
        tools=[WEATHER],
        max_output_tokens=60,
        tool_choice={"type": "function", "name": "get_weather"},
    )
    _valid(first)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    second = client.responses.create(
        model="m",
        previous_response_id=first.id,
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=15,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 21}'}],
    )
    assert _valid(second)["previous_response_id"] == first.id and second.output_text


def test_streamed_function_call_arguments_concatenate(client):
    # Greedy and one call: a sampled 135M model sometimes starts a second call that the token
    # limit then cuts off with no arguments yet.
    with client.responses.stream(
        model="m", input="Weather in Oslo?", tools=[WEATHER], max_output_tokens=80, tool_choice="required",
        parallel_tool_calls=False, temperature=0,
    ) as stream:
        events = list(stream)
    done = {e.item_id: e.arguments for e in events if e.type == "response.function_call_arguments.done"}
    deltas = dict.fromkeys(done, "")
    for event in events:
        if event.type == "response.function_call_arguments.delta":
            deltas[event.item_id] += event.delta
    assert len(done) == 1 and deltas == done
    assert all("city" in json.loads(arguments) for arguments in done.values())


def test_parse_enforces_a_json_schema(client):
    class City(BaseModel):  # bounded strings: the grammar closes the JSON well within max_output_tokens
        name: str = Field(max_length=20)
        country: str = Field(max_length=20)

    parsed = client.responses.parse(
        model="m", input="Name a city in France.", text_format=City, max_output_tokens=80, temperature=0.2
    )
    assert isinstance(parsed.output_parsed, City)


def test_built_in_tools_and_unknown_ids_are_refused(client):
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input="hi", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="hi", previous_response_id="resp_missing", max_output_tokens=2)


def test_background_poll_and_stream_again(client, server):
    queued = client.responses.create(model="m", input="Say hi.", background=True, max_output_tokens=8)
    assert queued.status == "queued"
    deadline = time.monotonic() + 120
    current = queued
    while current.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        current = client.responses.retrieve(queued.id)
    assert current.status in ("completed", "incomplete")
    _valid(current)
    with (
        httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http,
        http.stream("GET", f"/v1/responses/{queued.id}", params={"stream": "true", "starting_after": 2}) as r,
    ):
        frames = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert frames and all(f["sequence_number"] > 2 for f in frames)
    assert frames[-1]["type"] in ("response.completed", "response.incomplete")


def test_background_cancel(client):
    queued = client.responses.create(
        model="m", input="Write a very long essay.", background=True, max_output_tokens=2000
    )
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(queued.id).status == "cancelled"


def test_delete(client):
    created = client.responses.create(model="m", input="hi", max_output_tokens=2)
    assert client.responses.delete(created.id) is None
    import openai

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_a_previous_response_id_turn_reuses_the_prefix_cache(client):
    # Long enough that the shared prefix spans whole prefill chunks (the cache reuses those only).
    instructions = "You are a careful assistant. Answer in one short sentence."
    story = "The lighthouse keeper on the northern island kept a logbook of every ship that passed. " * 12
    first = client.responses.create(
        model="m", instructions=instructions, input=story + "What did the keeper keep?", max_output_tokens=8,
        temperature=0,
    )
    second = client.responses.create(
        model="m", instructions=instructions, previous_response_id=first.id, input="Where was the island?",
        max_output_tokens=8, temperature=0,
    )
    _valid(second)
    assert second.usage.input_tokens > first.usage.input_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0


def test_item_references_and_text_files_are_read(client):
    import openai

    first = client.responses.create(model="m", input="Name a colour.", max_output_tokens=5, temperature=0)
    notes = base64.b64encode(b"Meeting moved to Thursday at 10.").decode()
    file_part = {"type": "input_file", "filename": "notes.txt", "file_data": f"data:text/plain;base64,{notes}"}
    second = client.responses.create(
        model="m",
        max_output_tokens=6,
        input=[
            {"type": "item_reference", "id": first.output[0].id},
            {"role": "user", "content": [file_part, {"type": "input_text", "text": "When is the meeting?"}]},
        ],
    )
    _valid(second)
    items = client.responses.input_items.list(second.id, order="asc")
    SPEC.validate("ResponseItemList", items.model_dump(mode="json", exclude_unset=True))
    assert items.data[0].id == first.output[0].id and items.data[0].role == "assistant"
    assert items.data[1].content[0].type == "input_file" and items.data[1].content[0].filename == "notes.txt"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model="m", input=[{"type": "item_reference", "id": "msg_nope"}], max_output_tokens=2)
    assert unknown.value.body["param"] == "input[0].id"
    pdf = base64.b64encode(b"%PDF-1.4 fake").decode()
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="m",
            max_output_tokens=2,
            input=[{"role": "user", "content": [{"type": "input_file", "filename": "a.pdf", "file_data": pdf}]}],
        )
    assert refused.value.body["param"] == "input[0].content[0].file_data" and "PDF" in refused.value.body["message"]


def test_a_generation_failing_mid_stream_ends_with_response_failed(client, server):
    """Unloading the model under a running stream fails its generation; the next request loads
    the model again."""
    essay = {
        "type": "function",
        "name": "write_essay",
        "description": "Write an essay",
        "parameters": {"type": "object", "properties": {"essay": {"type": "string", "minLength": 1500}}, "required": ["essay"]},
    }
    unloaded = threading.Event()
    events = []
    with client.responses.stream(
        model="m", input="Write an essay about the sea.", tools=[essay], max_output_tokens=3000,
        tool_choice={"type": "function", "name": "write_essay"},  # the grammar keeps it writing
    ) as stream:
        for event in stream:
            events.append(event)
            if event.type == "response.function_call_arguments.delta" and not unloaded.is_set():
                unloaded.set()
                with server.http() as http:
                    assert http.post("/v1/internal/model/unload", json={}).status_code == 200
    assert unloaded.is_set()
    for event in events:
        SPEC.validate("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.error.code == "server_error"
    assert "unloaded" in failed.response.error.message
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert client.responses.retrieve(failed.response.id).status == "failed"  # stored as it ended


def test_a_stored_response_survives_a_restart(home, server):
    client = server.openai()
    created = client.responses.create(model="m", input="Remember the word apple.", max_output_tokens=5)
    stop_server(server)
    restarted = start_server(home, "--api-key", API_KEY, "--state-db", str(home / "state" / "hp.db"), model=None)
    try:
        again = restarted.openai().responses.retrieve(created.id)
        assert again.output_text == created.output_text and again.id == created.id
        chained = restarted.openai().responses.create(
            model="m", input="Which word?", previous_response_id=created.id, max_output_tokens=5
        )
        assert chained.status in ("completed", "incomplete")
        items = restarted.openai().responses.input_items.list(chained.id, order="asc", limit=1)
        assert items.has_more is False and items.data[0].content[0].text == "Which word?"
    finally:
        stop_server(restarted)
        server.process = restarted.process  # the module fixture stops whichever runs last
