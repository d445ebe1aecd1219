"""LoRA list/load/unload over fake engines (the engine just records the adapters it is given)."""

import pytest

from homeport.engines.fake import FakeEngine

ADMIN = {"Authorization": "Bearer admin"}
LIST, LOAD, UNLOAD = "/v1/internal/lora/list", "/v1/internal/lora/load", "/v1/internal/lora/unload"


@pytest.fixture
def loras(tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("style.gguf", "tone.gguf", "notes.txt"):
        (folder / name).write_bytes(b"GGUF")
    (folder / "dir.gguf").mkdir()  # not a file: not a LoRA
    return folder


@pytest.fixture
def client(make_client, loras, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "other.gguf").write_bytes(b"GGUF")
    loader = lambda entry, args: FakeEngine(model_id=entry.id)  # noqa: E731
    return make_client(FakeEngine(model_id="base"), loader=loader, model_dir=models, admin_key="admin",
                       api_key="user", max_loaded_models=2)


async def info(client) -> dict:
    return (await client.http.get("/v1/internal/model/info", headers={"Authorization": "Bearer user"})).json()


async def test_list_shows_the_gguf_files_in_loras(client):
    response = await client.http.get(LIST, headers=ADMIN)
    assert response.json() == {"lora_names": ["style", "tone"]}


async def test_list_without_a_loras_folder_is_empty(make_client, tmp_path):
    client = make_client(admin_key="admin", user_data_dir=tmp_path / "elsewhere")
    assert (await client.http.get(LIST, headers=ADMIN)).json() == {"lora_names": []}


async def test_load_applies_with_default_and_given_scales_then_unload_removes_all(client, loras):
    assert (await client.http.post(LOAD, json={"lora_names": ["tone", "style"]}, headers=ADMIN)).json() == "OK"
    assert client.engine.loras == [(loras / "tone.gguf", 1.0), (loras / "style.gguf", 1.0)]
    assert (await info(client))["lora_names"] == ["tone", "style"]
    body = {"lora_names": ["style"], "scales": [0.25]}
    assert (await client.http.post(LOAD, json=body, headers=ADMIN)).json() == "OK"
    assert client.engine.loras == [(loras / "style.gguf", 0.25)]  # replaces, does not add
    assert (await client.http.post(UNLOAD, headers=ADMIN)).json() == "OK"
    assert client.engine.loras == [] and (await info(client))["lora_names"] == []


async def test_load_onto_another_model_by_name(client, loras):
    body = {"lora_names": ["style"], "model": "other"}
    assert (await client.http.post(LOAD, json=body, headers=ADMIN)).json() == "OK"
    models = client.app.state.services.models
    other = next(m for m in models.loaded() if m.entry.id == "other")
    assert other.engine.lora_names == ["style"] and client.engine.loras == []
    assert (await client.http.post(UNLOAD, json={"model": "other"}, headers=ADMIN)).json() == "OK"
    assert other.engine.lora_names == []


async def test_unload_for_a_model_not_loaded_loads_nothing(client):
    assert (await client.http.post(UNLOAD, json={"model": "other"}, headers=ADMIN)).json() == "OK"
    assert [m.entry.id for m in client.app.state.services.models.loaded()] == ["base"]


@pytest.mark.parametrize(
    "body,param,needle",
    [
        ({"lora_names": ["nope"]}, "lora_names", "available: style, tone"),
        ({"lora_names": ["style", "tone"], "scales": [1.0]}, "scales", "1 values for 2"),
        ({"lora_names": ["style", "style"]}, "lora_names", "more than once"),
        ({"lora_names": ["style"], "scales": ["big"]}, None, "scales"),
        ({"lora_names": "style"}, None, "lora_names"),
    ],
)
async def test_bad_requests_are_400_and_change_nothing(client, spec, body, param, needle):
    response = await client.http.post(LOAD, json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    spec.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert needle in error["message"] + str(error["param"])
    if param:
        assert error["param"] == param
    assert client.engine.loras == []


async def test_an_unknown_model_is_404(client):
    response = await client.http.post(LOAD, json={"lora_names": ["style"], "model": "gpt-9"}, headers=ADMIN)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("method,path", [("GET", LIST), ("POST", LOAD), ("POST", UNLOAD)])
async def test_the_admin_key_is_required(client, method, path):
    body = {"lora_names": ["style"]} if path == LOAD else None
    for headers in ({}, {"Authorization": "Bearer user"}):
        response = await client.http.request(method, path, json=body, headers=headers)
        assert response.status_code == 401
    assert client.engine.loras == []
