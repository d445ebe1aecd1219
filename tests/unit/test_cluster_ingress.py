"""homeport.cluster's request path without a cluster: the ASGI bridge a replica runs requests
through, and the ingress (retry before the first byte, an error event mid-stream, readiness, a
client leaving, a full queue) over a fake deployment handle whose "replicas" are real homeport
apps on the fake engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading

import httpx
import openai
import pytest

from homeport.cluster import ingress as ingress_module
from homeport.cluster.forwarding import ForwardedRequest, ResponseStart, run_asgi
from homeport.cluster.ingress import ClusterIngress
from homeport.cluster.prefix import prompt_key
from homeport.engines.fake import FakeEngine

JSON = {"content-type": "application/json"}


def chat(messages, **extra) -> bytes:
    return json.dumps({"model": "m", "messages": messages, **extra}).encode()


# --- the replica's ASGI bridge --------------------------------------------------------------

def _request(body: bytes, path="/v1/chat/completions", method="POST") -> ForwardedRequest:
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    return ForwardedRequest(method, path, b"", headers, body, ("127.0.0.1", 1), prompt_key(path, body))


async def test_run_asgi_returns_a_whole_answer_in_its_first_item(make_client):
    app = make_client(FakeEngine(script="hello there")).app
    items = [item async for item in run_asgi(app, _request(chat([{"role": "user", "content": "hi"}])), "r1")]
    assert len(items) == 1 and isinstance(items[0], ResponseStart)
    assert items[0].status == 200 and not items[0].more and items[0].replica == "r1"
    assert b"hello there" in items[0].body


async def test_run_asgi_streams_and_a_closed_iterator_stops_the_generation(make_client):
    engine = FakeEngine(script="one two three four five six seven eight nine ten " * 5, step_delay=0.02)
    app = make_client(engine).app
    stream = run_asgi(app, _request(chat([{"role": "user", "content": "hi"}], stream=True, max_tokens=200)), "r1")
    start = await stream.__anext__()
    assert start.status == 200 and start.more and start.body.startswith(b"data: ")
    await stream.__anext__()
    await stream.aclose()  # what Serve does when the ingress cancels (the client left)
    for _ in range(100):
        if engine.stats().active == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.stats().active == 0


# --- the ingress over a fake handle --------------------------------------------------------

class ReplicaDied(Exception):
    pass


class FakeStream:
    def __init__(self, items, die_before=False, die_after=None):
        self.items, self.die_before, self.die_after, self.sent, self.cancelled = items, die_before, die_after, 0, False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.die_before:
            raise ReplicaDied()
        if self.die_after is not None and self.sent >= self.die_after:
            raise ReplicaDied()
        self.sent += 1
        return await self.items.__anext__()

    def cancel(self):
        self.cancelled = True


class FakeHandle:
    """`plan`: per call, (replica name, die before the first item, items after which it dies)."""

    def __init__(self, apps, plan=()):
        self.apps, self.plan, self.calls, self.requests = apps, list(plan), [], []

    def options(self, **_):
        return self

    @property
    def handle(self):
        return self

    def remote(self, request):
        if self.plan:
            name, die_before, die_after = self.plan.pop(0)
        else:  # a pinned request goes to its replica, as the router sends it
            name, die_before, die_after = (request.pin if request.pin in self.apps else next(iter(self.apps))), False, None
        self.calls.append(name)
        self.requests.append(request)
        return FakeStream(run_asgi(self.apps[name], request, name), die_before, die_after)


async def _ingress(handle, **options) -> tuple[ClusterIngress, httpx.AsyncClient]:
    ingress = ClusterIngress(lambda: handle, retryable=(ReplicaDied,), **options)
    await ingress.start()
    return ingress, httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress), base_url="http://localhost")


async def test_the_ingress_forwards_and_names_the_replica(make_client):
    handle = FakeHandle({"r1": make_client(FakeEngine(script="forty two")).app})
    _, http = await _ingress(handle, aliases={"m": "fake-model"})
    async with http:
        client = openai.AsyncOpenAI(base_url="http://localhost/v1", api_key="k", http_client=http, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "q"}])
        assert raw.headers["x-homeport-replica"] == "r1"
        assert raw.parse().choices[0].message.content == "forty two"
        stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "forty two"
        assert handle.requests[0].model == "fake-model" and "q" in handle.requests[0].prompt_key
        assert (await http.get("/health")).status_code == 200


async def test_a_replica_lost_before_answering_is_retried_on_another(make_client):
    apps = {"r1": make_client(FakeEngine(script="a")).app, "r2": make_client(FakeEngine(script="b")).app}
    handle = FakeHandle(apps, plan=[("r1", True, None), ("r2", False, None)])
    _, http = await _ingress(handle)
    async with http:
        response = await http.post("/v1/chat/completions", content=chat([{"role": "user", "content": "q"}]), headers=JSON)
    assert response.status_code == 200 and response.headers["x-homeport-replica"] == "r2"
    assert handle.calls == ["r1", "r2"]


async def test_every_replica_lost_before_answering_is_a_503(make_client):
    apps = {"r1": make_client(FakeEngine(script="a")).app}
    handle = FakeHandle(apps, plan=[("r1", True, None)] * ingress_module.RETRIES)
    _, http = await _ingress(handle)
    async with http:
        response = await http.post("/v1/chat/completions", content=chat([{"role": "user", "content": "q"}]), headers=JSON)
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_replica"


async def test_a_replica_lost_mid_stream_ends_it_with_an_error_event_and_done(make_client):
    app = make_client(FakeEngine(script="one two three four five six seven eight")).app
    handle = FakeHandle({"r1": app}, plan=[("r1", False, 3)])
    _, http = await _ingress(handle)
    async with http:
        body = chat([{"role": "user", "content": "q"}], stream=True)
        async with http.stream("POST", "/v1/chat/completions", content=body, headers=JSON) as response:
            text = "".join([part async for part in response.aiter_text()])
    assert response.status_code == 200
    frames = [f for f in text.split("\n\n") if f]
    assert '"replica_lost"' in frames[-2] and frames[-1] == "data: [DONE]"
    assert any('"content"' in f for f in frames[:-2])


async def _cut_stream(http, path: str, body: dict) -> list[str]:
    async with http.stream("POST", path, content=json.dumps(body).encode(), headers=JSON) as response:
        text = "".join([part async for part in response.aiter_text()])
    assert response.status_code == 200
    return [f for f in text.split("\n\n") if f]


async def test_a_replica_lost_mid_stream_ends_anthropic_and_responses_streams_in_their_own_format(make_client):
    app = make_client(FakeEngine(script="one two three four five six seven eight")).app
    handle = FakeHandle({"r1": app}, plan=[("r1", False, 3), ("r1", False, 3)])
    _, http = await _ingress(handle)
    question = [{"role": "user", "content": "q"}]
    async with http:
        messages = await _cut_stream(http, "/v1/messages", {"model": "m", "max_tokens": 50, "messages": question,
                                                             "stream": True})
        responses = await _cut_stream(http, "/v1/responses", {"model": "m", "input": "q", "stream": True,
                                                               "store": False})
    name, data = messages[-1].split("\n")
    assert name == "event: error" and json.loads(data[6:]) == {
        "type": "error", "error": {"type": "overloaded_error", "message": "The model replica serving this stream stopped."}}
    assert all("[DONE]" not in f for f in messages + responses)
    numbers = [json.loads(f.split("\n")[1][6:])["sequence_number"] for f in responses]
    assert responses[-1].startswith("event: error") and numbers == list(range(len(numbers)))  # next in line
    assert json.loads(responses[-1].split("\n")[1][6:])["code"] == "replica_lost"


async def test_the_shutdown_deadline_ends_a_relayed_stream_with_an_error_event_and_stops_the_call(make_client):
    engine = FakeEngine(script="one two three four five six seven eight nine ten " * 10, step_delay=0.02)
    handle = FakeHandle({"r1": make_client(engine).app})
    ingress, http = await _ingress(handle)
    async with http:
        body = chat([{"role": "user", "content": "q"}], stream=True, max_tokens=100)
        request = asyncio.create_task(http.post("/v1/chat/completions", content=body, headers=JSON))
        await asyncio.sleep(0.3)  # streaming (httpx's ASGI transport hands the body over at the end)
        cut = await ingress.state.drain.run(0.1)
        text = (await request).text
    frames = [f for f in text.split("\n\n") if f]
    assert cut == 1 and '"server_shutdown"' in frames[-2] and frames[-1] == "data: [DONE]"
    assert len(frames) < 60  # cut: not all 100 words
    for _ in range(100):
        if engine.stats().active == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.stats().active == 0  # the replica's generation stopped


async def test_calls_for_every_replica_reach_each_and_metrics_are_labelled_by_replica(make_client):
    engines = {"r1": FakeEngine(script="a b c"), "r2": FakeEngine(script="d e f")}
    apps = {name: make_client(engine, api_key="k", admin_key="admin").app for name, engine in engines.items()}
    handle = FakeHandle(apps)
    _, http = await _ingress(handle, replicas=lambda: ["r1", "r2"])
    async with http:
        http.headers["authorization"] = "Bearer k"
        await http.post("/v1/chat/completions", content=chat([{"role": "user", "content": "q"}]), headers=JSON)
        handle.calls.clear()
        stopped = await http.post("/v1/internal/stop-generation", headers=JSON, content=b"{}")
        assert stopped.status_code == 200 and sorted(handle.calls) == ["r1", "r2"]
        assert stopped.headers["x-homeport-replica"] == "r1,r2"
        refused = await http.post("/v1/internal/model/unload", headers=JSON, content=b"{}")  # no admin key
        assert refused.status_code == 401 and len(handle.calls) == 4
        handle.calls.clear()
        metrics = await http.get("/metrics")
        chat_only = await http.post("/v1/chat/completions", content=chat([{"role": "user", "content": "q"}]), headers=JSON)
    assert metrics.status_code == 200 and sorted(handle.calls[:2]) == ["r1", "r2"]
    assert chat_only.status_code == 200 and len(handle.calls) == 3  # any other call: one replica
    lines = metrics.text.splitlines()
    helps = [line for line in lines if line.startswith("# HELP ")]
    assert helps and len(helps) == len(set(helps))  # each family described once
    samples = [line for line in lines if line and not line.startswith("#")]
    assert samples and all('replica="r1"' in line or 'replica="r2"' in line for line in samples)
    stops = [line for line in samples if line.startswith("homeport_http_requests_total{") and "stop-generation" in line]
    assert {('replica="r1"' in line) for line in stops} == {True, False}  # one sample per replica


async def test_ready_is_503_while_no_replica_is_deployed(monkeypatch):
    monkeypatch.setattr(ingress_module, "READY_WAIT_S", 0.2)
    release = threading.Event()
    ingress = ClusterIngress(lambda: release.wait(10) and None, retryable=(ReplicaDied,))
    task = asyncio.create_task(ingress.start())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress), base_url="http://localhost") as http:
            assert (await http.get("/health")).status_code == 200
            ready = await http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "no_replica"
    finally:
        release.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Busy(Exception):
    pass


class BlockedStream:
    """A call queued at the router: no answer until it is cancelled (then Serve raises)."""

    def __init__(self):
        self.cancelled = asyncio.Event()

    async def __anext__(self):
        await self.cancelled.wait()
        raise RuntimeError("request cancelled")

    def cancel(self):
        self.cancelled.set()


class OneStreamHandle:
    def __init__(self, stream):
        self.stream = stream

    def options(self, **_):
        return self

    @property
    def handle(self):
        return self

    def remote(self, request):
        if isinstance(self.stream, Exception):
            raise self.stream
        return self.stream


async def test_a_client_that_leaves_while_queued_cancels_its_call():
    stream = BlockedStream()
    ingress = ClusterIngress(lambda: OneStreamHandle(stream), retryable=(ReplicaDied,))
    await ingress.start()
    left, sent = asyncio.Event(), []
    messages = [{"type": "http.request", "body": chat([{"role": "user", "content": "q"}]), "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
    call = asyncio.create_task(ingress(scope, receive, send))
    await asyncio.sleep(0.05)
    assert not call.done() and not stream.cancelled.is_set()
    left.set()
    await asyncio.wait_for(call, 5)
    assert stream.cancelled.is_set() and sent == []


async def test_a_full_queue_is_a_503_server_busy():
    class BusyStream:
        async def __anext__(self):
            raise Busy()

        def cancel(self):
            pass

    ingress = ClusterIngress(lambda: OneStreamHandle(BusyStream()), retryable=(ReplicaDied,), busy=(Busy,))
    await ingress.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress), base_url="http://localhost") as http:
        response = await http.post("/v1/chat/completions", content=chat([{"role": "user", "content": "q"}]), headers=JSON)
    assert response.status_code == 503 and response.json()["error"]["code"] == "server_busy"
    assert response.headers["retry-after"] == "1"


def test_an_unreachable_head_fails_in_seconds_with_one_line(tmp_path):
    from support.server import free_port

    pytest.importorskip("ray")
    out = subprocess.run(
        [sys.executable, "-m", "homeport", "serve", "--ray-address", f"127.0.0.1:{free_port()}", "--api-port", "0",
         "--user-data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_TOKEN": "t"}, check=False,
    )
    assert out.returncode == 1
    assert "cannot reach the Ray cluster's head at 127.0.0.1:" in out.stderr and "refused" in out.stderr


def test_a_forwarded_request_never_prints_its_body_or_prompt():
    body = chat([{"role": "user", "content": "my secret plans"}])
    text = repr(_request(body)) + str(_request(body))
    assert "secret" not in text and "ForwardedRequest(POST /v1/chat/completions" in text
