"""/metrics and readiness on a real `homeport serve` with the default model: the counters move by
what the requests did (tokens from the responses' usage), the start-up load is logged with its
progress, and loading another model counts as a load."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.server import GEMMA_MODEL_ID, SMOLLM2_MODEL_ID, start_server, stop_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("metrics"), "--api-key", "k", model=None)
    yield running
    stop_server(running)


def scrape(server) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": "Bearer k"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def moved(before: dict, after: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_ready_and_the_start_up_load_logged(server):
    ready = httpx.get(f"{server.base_url}/health/ready", timeout=5)
    assert ready.status_code == 200 and SMOLLM2_MODEL_ID in ready.json()["models"]
    log = server.log_path.read_text()
    assert f"loading model {SMOLLM2_MODEL_ID}: 100%" in log
    assert f"loaded model {SMOLLM2_MODEL_ID} in" in log


def test_a_chat_moves_the_token_and_request_counters(server):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k", max_retries=0)
    before = scrape(server)
    reply = client.chat.completions.create(model=SMOLLM2_MODEL_ID, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Name a colour."}])
    stream = client.chat.completions.create(model=SMOLLM2_MODEL_ID, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Name a colour."}])
    streamed = [chunk for chunk in stream][-1].usage
    after = scrape(server)
    model = SMOLLM2_MODEL_ID
    produced = reply.usage.completion_tokens + streamed.completion_tokens
    assert moved(before, after, "homeport_generation_tokens_total", model=model) == produced
    assert moved(before, after, "homeport_prompt_tokens_total", model=model) == (
        reply.usage.prompt_tokens + streamed.prompt_tokens)
    cached = sum((u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
                 for u in (reply.usage, streamed))
    assert moved(before, after, "homeport_prefix_cache_reused_tokens_total", model=model) == cached
    assert moved(before, after, "homeport_time_to_first_token_seconds_count", model=model) == 2
    assert moved(before, after, "homeport_inter_token_latency_seconds_count", model=model) == produced - 2
    assert moved(before, after, "homeport_generations_total", model=model, outcome="completed") == 2
    assert moved(before, after, "homeport_http_requests_total", method="POST", route="/v1/chat/completions",
                 status="200") == 2
    assert after[("homeport_sequences_running", (("model", model),))] == 0


def test_refused_requests_are_counted_with_their_status(server):
    before = scrape(server)
    assert httpx.get(f"{server.base_url}/v1/models", timeout=5).status_code == 401
    after = scrape(server)
    assert moved(before, after, "homeport_http_requests_total", method="GET", route="/v1/models", status="401") == 1


def test_loading_another_model_counts_a_load(server):
    before = scrape(server)
    loaded = httpx.post(f"{server.base_url}/v1/internal/model/load", headers={"Authorization": "Bearer k"},
                        json={"model_name": GEMMA_MODEL_ID}, timeout=120)
    assert loaded.status_code == 200, loaded.text
    after = scrape(server)
    assert moved(before, after, "homeport_model_loads_total", kind="text", outcome="loaded") == 1
    assert moved(before, after, "homeport_model_load_seconds_count", kind="text") == 1
    assert after[("homeport_models_loaded", (("kind", "text"),))] == 2


def test_an_embedding_request_is_one_job(server):
    before = scrape(server)
    answer = httpx.post(f"{server.base_url}/v1/embeddings", headers={"Authorization": "Bearer k"},
                        json={"input": ["one", "two"]}, timeout=120)
    assert answer.status_code == 200, answer.text
    after = scrape(server)
    assert moved(before, after, "homeport_job_duration_seconds_count", kind="embedding") == 1
    assert moved(before, after, "homeport_job_duration_seconds_sum", kind="embedding") > 0
