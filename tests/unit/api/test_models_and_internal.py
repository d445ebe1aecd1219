"""/v1/models and the reference API's /v1/internal endpoints."""

from homeport.engines.fake import FakeEngine


async def test_list_and_retrieve_models(make_client, spec):
    client = make_client(FakeEngine(model_id="org/some-model"))
    listing = (await client.http.get("/v1/models")).json()
    spec.validate("ListModelsResponse", listing)
    assert [m["id"] for m in listing["data"] if m["kind"] == "text"] == ["org/some-model"]
    assert listing["data"][0]["id"] == "org/some-model"  # loaded first; the embedding model is listed after
    model = await client.http.get("/v1/models/org/some-model")
    assert model.status_code == 200
    spec.validate("Model", model.json())
    missing = await client.http.get("/v1/models/gpt-9")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert (await client.openai().models.retrieve("org/some-model")).id == "org/some-model"


async def test_health(client):
    for path in ("/health", "/v1/internal/health"):
        assert (await client.http.get(path)).json() == {"status": "ok"}


async def test_encode_decode_token_count_round_trip(client):
    encoded = (await client.http.post("/v1/internal/encode", json={"text": "héllo"})).json()
    assert encoded["length"] == len(encoded["tokens"]) == 7  # BOS + 6 UTF-8 bytes
    decoded = (await client.http.post("/v1/internal/decode", json={"tokens": encoded["tokens"]})).json()
    assert decoded == {"text": "héllo"}
    count = (await client.http.post("/v1/internal/token-count", json={"text": "héllo"})).json()
    assert count == {"length": 7}


async def test_decode_rejects_unknown_token_ids(client):
    response = await client.http.post("/v1/internal/decode", json={"tokens": [10**8]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "tokens"


async def test_model_info_has_reference_shape_and_counters(make_client):
    client = make_client(FakeEngine(script="ab"))
    await client.http.post("/v1/completions", json={"prompt": "x", "max_tokens": 5})
    info = (await client.http.get("/v1/internal/model/info")).json()
    assert info["model_name"] == "fake-model" and info["lora_names"] == [] and info["loader"] == "fake"
    assert info["generation"]["completed"] == 1 and info["generation"]["tokens_generated"] == 3


async def test_docs_are_served_from_local_files(client):
    page = await client.http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "http://" not in page.text and "https://" not in page.text
    assert (await client.http.get("/docs/static/swagger-ui-bundle.js")).status_code == 200
    schema = (await client.http.get("/openapi.json")).json()
    assert "/v1/chat/completions" in schema["paths"]


async def test_model_list_needs_the_admin_key_and_lists_the_model_dir(make_client, tmp_path):
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    (models / "b-model.gguf").write_bytes(b"")
    (models / "sub" / "a-model.gguf").write_bytes(b"")
    (models / "notes.txt").write_text("x")
    client = make_client(model_dir=models, api_key="user-key", admin_key="admin-key")
    user = {"Authorization": "Bearer user-key"}
    admin = {"Authorization": "Bearer admin-key"}
    assert (await client.http.get("/v1/internal/model/list", headers=user)).status_code == 401
    listing = (await client.http.get("/v1/internal/model/list", headers=admin)).json()
    assert listing == {"model_names": ["fake-model", "a-model", "b-model"]}


async def test_admin_key_defaults_to_the_api_key(make_client):
    client = make_client(api_key="only-key")
    response = await client.http.get("/v1/internal/model/list", headers={"Authorization": "Bearer only-key"})
    assert response.status_code == 200


async def test_stop_generation_ends_a_running_stream_cleanly(make_client):
    import asyncio

    from support.sse import parse_sse

    engine = FakeEngine(script="x" * 500, step_delay=0.01)
    client = make_client(engine)

    async def stream():
        response = await client.http.post("/v1/completions", json={"prompt": "p", "stream": True, "max_tokens": 500})
        return parse_sse(response.text)

    task = asyncio.create_task(stream())
    while engine.stats().active == 0:
        await asyncio.sleep(0.005)
    assert (await client.http.post("/v1/internal/stop-generation")).json() == "OK"
    chunks, done = await task
    assert done
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len("".join(c["choices"][0]["text"] for c in chunks)) < 500


async def test_cors_origins_are_configurable(make_client):
    client = make_client(cors_origins=("http://chat.local",))
    preflight = {"Origin": "http://chat.local", "Access-Control-Request-Method": "POST"}
    allowed = await client.http.options("/v1/chat/completions", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://chat.local"
    other = await client.http.options("/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
