"""Bad input, auth, disconnects and concurrency against the real server."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from support.openapi import SpecValidator
from support.server import GEMMA_MODEL_ID, SMOLLM2_MODEL_ID
from support.sse import parse_sse

LONG_RUN = {"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 3000, "temperature": 0, "logit_bias": {"1": -100}}


def assert_error(response: httpx.Response, status: int, spec: SpecValidator, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    spec.validate("ErrorResponse", response.json())
    if code:
        assert response.json()["error"]["code"] == code
    return response.json()["error"]


def test_bad_inputs_are_clear_4xx_and_the_server_keeps_serving(server, client, spec):
    with server.http() as http:
        assert_error(http.post("/v1/chat/completions", json={"messages": "hello"}), 400, spec)
        assert_error(http.post("/v1/completions", json={"prompt": "x", "temperature": -1}), 400, spec)
        assert_error(http.post("/v1/completions", content=b"{oops", headers={"content-type": "application/json"}), 400, spec)
        assert_error(http.post("/v1/nowhere", json={}), 404, spec)
        assert_error(http.get("/v1/models/no-such-model"), 404, spec, "model_not_found")
        too_long = {"prompt": "hello " * 9000, "stream": True}
        response = http.post("/v1/completions", json=too_long)
        assert not response.headers["content-type"].startswith("text/event-stream")
        assert_error(response, 400, spec, "context_length_exceeded")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], top_p=7)
    assert client.completions.create(model="m", prompt="Hello", max_tokens=2).choices[0].text is not None


def test_api_key_is_enforced(server, spec):
    with httpx.Client(base_url=server.base_url) as http:
        assert_error(http.get("/v1/models"), 401, spec, "invalid_api_key")
        assert_error(http.post("/v1/completions", json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"}), 401, spec)
        assert http.get("/health").json() == {"status": "ok"}
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_models_and_docs(server, client):
    listed = client.models.list().data
    # text models: the loaded one first, then the other packaged model (listed, loaded on demand)
    models = [m for m in listed if m.model_extra["kind"] == "text"]
    assert [m.id for m in models] == [GEMMA_MODEL_ID, SMOLLM2_MODEL_ID]
    embedding = [m for m in listed if m.model_extra["kind"] == "embedding"]
    assert [m.model_extra["capabilities"] for m in embedding] == [["embedding"]]
    assert client.models.retrieve(models[0].id).id == models[0].id
    with server.http() as http:
        assert http.get("/docs").status_code == 200
        info = http.get("/v1/internal/model/info").json()
    assert info["model_name"] == models[0].id and info["loader"] == "llama.cpp"


def test_streaming_client_disconnect_stops_generation(server):
    before = server.wait_idle()
    received = 0
    with server.http() as http:
        with http.stream("POST", "/v1/completions", json={**LONG_RUN, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    received += 1
                if received >= 5:
                    break
    after = server.wait_idle()
    assert after["cancelled"] == before["cancelled"] + 1
    # it stopped at the next step after the disconnect, far short of its 3000 tokens
    assert received <= after["last_cancelled_tokens"] < 300


def test_non_streaming_client_disconnect_stops_generation(server):
    before = server.wait_idle()
    with server.http() as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/completions", json=LONG_RUN, timeout=httpx.Timeout(120, read=1.5))
    after = server.wait_idle()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["last_cancelled_tokens"] < 1000
    # the next request is served normally
    with server.http() as http:
        assert http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3}).status_code == 200


def test_event_loop_stays_free_during_a_long_generation(server):
    done = threading.Event()

    def long_request() -> None:
        with server.http() as http:
            http.post("/v1/completions", json={**LONG_RUN, "max_tokens": 250})
        done.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    try:
        with server.http() as http:
            while server.generation_stats()["active"] == 0 and not done.is_set():
                pass
            # Health, listing and tokenizing answer while the model is busy generating.
            assert http.get("/health").status_code == 200
            assert http.get("/v1/models").status_code == 200
            assert http.post("/v1/internal/token-count", json={"text": "abc"}).status_code == 200
            assert not done.is_set(), "the long generation finished before the probes: the test proved nothing"
    finally:
        worker.join()


def test_concurrent_requests_are_all_served_without_crosstalk(server):
    starts = [10, 100, 1000, 40]
    results: dict[int, str] = {}

    def run(start: int) -> None:
        prompt = ", ".join(str(start + i) for i in range(6)) + ","
        with server.http() as http:
            body = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 14, "temperature": 0}).json()
        results[start] = body["choices"][0]["text"]

    threads = [threading.Thread(target=run, args=(s,)) for s in starts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for start in starts:
        assert results[start].startswith(f" {start + 6}, {start + 7}"), (start, results[start])


def test_mid_stream_failure_is_impossible_to_provoke_here_but_streams_end_with_done(server):
    with server.http() as http:
        raw = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stream": True})
    _, done = parse_sse(raw.text)
    assert done


def test_unknown_model_falls_back_to_the_served_model_and_aliases_resolve(server, client, spec):
    with server.http() as http:
        response = http.post("/v1/completions", json={"model": "gpt-9000", "prompt": "x", "max_tokens": 2})
        assert response.status_code == 200 and response.json()["model"] == GEMMA_MODEL_ID
        spec.validate("CreateCompletionResponse", response.json())
        assert http.get("/v1/models/m").json()["id"] == "gemma-3-270m-q4_k_m"
    assert client.completions.create(model="gemma-3-270m-q4_k_m", prompt="Hi", max_tokens=2).model == "gemma-3-270m-q4_k_m"
