"""/metrics: Prometheus text on homeport's own registry, request counts by route template, behind
the API key unless --metrics-public, absent with --no-metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_of(text: str, route: str, status: str, method: str = "GET") -> float:
    key = ("homeport_http_requests_total", (("method", method), ("route", route), ("status", status)))
    return samples(text).get(key, 0.0)


async def test_requests_are_counted_by_route_template_and_status(client):
    before = (await client.http.get("/metrics")).text
    assert (await client.http.get("/v1/models")).status_code == 200
    assert (await client.http.get("/v1/models/fake-model")).status_code == 200
    assert (await client.http.get("/v1/models/no-such-model")).status_code == 404
    assert (await client.http.get("/nothing/here")).status_code == 404
    after = (await client.http.get("/metrics")).text
    assert requests_of(after, "/v1/models", "200") - requests_of(before, "/v1/models", "200") == 1
    assert requests_of(after, "/v1/models/{model_id:path}", "200") - requests_of(before, "/v1/models/{model_id:path}", "200") == 1
    assert requests_of(after, "/v1/models/{model_id:path}", "404") - requests_of(before, "/v1/models/{model_id:path}", "404") == 1
    assert requests_of(after, "unmatched", "404") - requests_of(before, "unmatched", "404") == 1
    assert "no-such-model" not in after  # ids in paths never become labels
    await client.http.request("BREW", "/v1/models")
    assert "BREW" not in (await client.http.get("/metrics")).text  # nor do invented methods


async def test_loaded_models_are_reported_as_gauges(client):
    text = (await client.http.get("/metrics")).text
    values = samples(text)
    assert values[("homeport_sequences_running", (("model", "fake-model"),))] == 0
    assert values[("homeport_models_loaded", (("kind", "text"),))] == 1


async def test_metrics_need_the_api_key_unless_public(make_client):
    guarded = make_client(api_key="secret")
    refused = await guarded.http.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "invalid_request_error" or refused.json()["error"]["code"]
    allowed = await guarded.http.get("/metrics", headers={"Authorization": "Bearer secret"})
    assert allowed.status_code == 200 and "homeport_http_requests_total" in allowed.text
    public = make_client(api_key="secret", metrics_public=True)
    assert (await public.http.get("/metrics")).status_code == 200


async def test_no_metrics_turns_the_endpoint_off(make_client):
    off = make_client(metrics=False)
    assert (await off.http.get("/metrics")).status_code == 404
