"""The model library, per-request model choice, load/unload, eviction and aliases (fake engines)."""

import asyncio

import pytest

from homeport.engines.fake import FakeEngine
from homeport.errors import InvalidRequestError, StartupError
from homeport.registry.library import ModelEntry
from homeport.engines.llama_cpp.backend import speculative_config
from homeport.registry import validate_load_args
from homeport.registry.loading import load_engine
from homeport.settings import Settings

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]
ADMIN = {"Authorization": "Bearer admin"}


class FakeLoader:
    """Loads FakeEngines named after the entry; records what it was asked; can fail on demand."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, dict]] = []
        self.closed: list[str] = []
        self.fail: set[str] = set()

    def __call__(self, entry, args):
        self.loads.append((entry.id, args))
        if entry.format != "gguf":
            return load_engine(entry, Settings(), args)  # the real format check: refuses
        if entry.id in self.fail:
            raise StartupError("not a valid GGUF file")
        engine = FakeEngine(model_id=entry.id, script=f"from {entry.id}", context_length=args.get("ctx_size", 512))
        original = engine.close

        async def close():
            self.closed.append(entry.id)
            await original()

        engine.close = close
        return engine


@pytest.fixture
def library(tmp_path):
    models = tmp_path / "models"
    (models / "nested").mkdir(parents=True)
    for name in ("alpha.gguf", "nested/beta.gguf", "gamma-00001-of-00002.gguf", "gamma-00002-of-00002.gguf",
                 "mmproj-alpha.gguf"):
        (models / name).write_bytes(b"GGUF")
    (models / "hf-model").mkdir()
    (models / "hf-model" / "config.json").write_text("{}")
    (models / "hf-model" / "model.safetensors").write_bytes(b"x")
    return models


@pytest.fixture
def make(make_client, library):
    def build(**settings):
        loader = FakeLoader()
        client = make_client(FakeEngine(model_id="base", script="from base"), loader=loader, model_dir=library,
                             admin_key="admin", **settings)
        return client, loader
    return build


async def reply(client, model):
    response = await client.http.post(CHAT, json={"model": model, "messages": USER})
    return response.status_code, response.json()


async def test_the_library_lists_every_model_loaded_first(make, spec):
    client, _ = make()
    listing = (await client.http.get("/v1/models")).json()
    spec.validate("ListModelsResponse", listing)
    ids = [m["id"] for m in listing["data"] if m["kind"] == "text"]
    assert ids == ["base", "alpha", "beta", "gamma", "hf-model"]  # split GGUF once, no projector
    assert listing["data"][0]["loaded"] is True and listing["data"][1]["loaded"] is False
    assert {m["id"]: m["format"] for m in listing["data"]}["hf-model"] == "transformers"
    assert "text_generation" in listing["data"][0]["capabilities"]
    # Every kind is listed: the packaged embedding model too.
    embedding = next(m for m in listing["data"] if m["id"] == "sentence-transformers/all-MiniLM-L6-v2")
    assert (embedding["kind"], embedding["capabilities"], embedding["loaded"]) == ("embedding", ["embedding"], False)
    assert (await client.http.get("/v1/internal/model/list", headers=ADMIN)).json()["model_names"] == ids  # the reference API's list: models to chat with


async def test_the_request_model_picks_and_loads_the_model(make):
    client, loader = make(max_loaded_models=2)
    status, body = await reply(client, "alpha")
    assert status == 200 and body["model"] == "alpha" and body["choices"][0]["message"]["content"] == "from alpha"
    assert [name for name, _ in loader.loads] == ["alpha"]  # loaded once
    status, body = await reply(client, "nested/beta.gguf")
    assert body["model"] == "beta"


async def test_an_unknown_model_name_is_answered_by_the_default_model(make, spec):
    # As the reference API: apps send "x" or "gpt-4o"; the response says which model answered.
    client, loader = make()
    status, body = await reply(client, "x")
    assert status == 200 and body["model"] == "base" and body["choices"][0]["message"]["content"] == "from base"
    assert loader.loads == []  # nothing loaded for it
    assert (await client.http.get("/v1/models/x")).status_code == 404
    # Management calls name a model to act on: an unknown one is still a 404.
    response = await client.http.post("/v1/internal/model/load", json={"model_name": "x"},
                                      headers={"Authorization": "Bearer admin"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


async def test_unknown_model_is_404_model_not_found_with_strict_model_names(make, spec):
    client, _ = make(strict_model_names=True)
    response = await client.http.post(CHAT, json={"model": "gpt-9", "messages": USER})
    assert response.status_code == 404
    spec.validate("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "model_not_found"
    assert (await client.http.get("/v1/models/gpt-9")).status_code == 404


async def test_aliases_let_unmodified_apps_work(make):
    client, _ = make(model_aliases={"gpt-4o-mini": "base"})
    status, body = await reply(client, "gpt-4o-mini")
    assert status == 200 and body["model"] == "base"
    assert (await client.http.get("/v1/models/gpt-4o-mini")).json()["id"] == "base"


async def test_least_recently_used_idle_model_is_evicted(make):
    client, loader = make(max_loaded_models=2)
    await reply(client, "alpha")
    await reply(client, "base")  # base is now more recent than alpha
    await reply(client, "beta")  # a third: alpha goes
    assert loader.closed == ["alpha"]
    loaded = (await client.http.get("/v1/internal/model/info")).json()["loaded_models"]
    assert loaded == ["beta", "base"]


async def test_a_busy_model_is_not_evicted(make):
    client, loader = make(max_loaded_models=1)
    client.engine.step_delay = 0.02
    client.engine.script = "x" * 40
    long_request = asyncio.create_task(client.http.post(CHAT, json={"model": "base", "messages": USER}))
    while client.engine.stats().active == 0:
        await asyncio.sleep(0.005)
    response = await client.http.post(CHAT, json={"model": "alpha", "messages": USER})
    assert response.status_code == 503 and response.headers["retry-after"]
    assert (await long_request).status_code == 200
    assert (await reply(client, "alpha"))[0] == 200  # now base is idle and can go


async def test_concurrent_requests_for_a_loading_model_share_one_load(make):
    client, loader = make(max_loaded_models=3)
    results = await asyncio.gather(*(reply(client, "gamma") for _ in range(5)))
    assert all(status == 200 for status, _ in results)
    assert [name for name, _ in loader.loads] == ["gamma"]


async def test_a_failed_load_is_a_clear_error_and_the_others_keep_serving(make, spec):
    client, loader = make(max_loaded_models=2)
    loader.fail.add("alpha")
    response = await client.http.post(CHAT, json={"model": "alpha", "messages": USER})
    assert response.status_code == 400
    spec.validate("ErrorResponse", response.json())
    assert "not a valid GGUF" in response.json()["error"]["message"]
    assert (await reply(client, "base"))[0] == 200


async def test_a_broken_transformers_folder_fails_cleanly(make):
    client, _ = make()
    response = await client.http.post(CHAT, json={"model": "hf-model", "messages": USER})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "model_load_failed" and "model_type" in error["message"]
    assert (await reply(client, "base"))[0] == 200


async def test_admin_load_with_args_unload_and_info(make):
    client, loader = make(max_loaded_models=2)
    body = {"model_name": "alpha", "args": {"ctx_size": 256, "cache_type": "q8_0", "flash_attn": True}}
    assert (await client.http.post("/v1/internal/model/load", json=body)).status_code == 401
    assert (await client.http.post("/v1/internal/model/load", json=body, headers=ADMIN)).json() == "OK"
    assert loader.loads[-1] == ("alpha", {"ctx_size": 256, "cache_type": "q8_0", "flash_attn": True})
    info = (await client.http.get("/v1/internal/model/info")).json()
    assert info["model_name"] == "alpha" and info["context_length"] == 256 and info["args"]["ctx_size"] == 256
    # loading again with other args reloads it
    body["args"] = {"ctx_size": 128}
    await client.http.post("/v1/internal/model/load", json=body, headers=ADMIN)
    assert loader.closed == ["alpha"] and loader.loads[-1] == ("alpha", {"ctx_size": 128})
    assert (await client.http.post("/v1/internal/model/unload", json={"model_name": "alpha"}, headers=ADMIN)).json() == "OK"
    assert "alpha" not in (await client.http.get("/v1/internal/model/info")).json()["loaded_models"]
    missing = await client.http.post("/v1/internal/model/unload", json={"model_name": "alpha"}, headers=ADMIN)
    assert missing.status_code == 400


@pytest.mark.parametrize(
    "args,needle",
    [({"bogus": 1}, "valid arguments"), ({"ctx_size": "big"}, "integer"), ({"cache_type": "q3"}, "cache_type"),
     ({"ctx_size_draft": 512}, "draft context"), ({"spec_type": "eagle"}, "spec_type must be"),
     ({"draft_max": 0}, "between 1 and 64"), ({"draft_p_min": 2}, "between 0 and 1"),
     ({"mmproj": 3}, "string"), ({"spec_ngram_min_hits": 2}, "not supported yet"),
     ({"split_mode": "diagonal"}, "split_mode must be"), ({"tensor_split": "60,x"}, "tensor_split must be"),
     ({"loader": "exllama"}, "loader must be"),
     ({"no_mmap": "yes"}, "true or false")],
)
async def test_load_args_are_validated(make, args, needle):
    client, loader = make()
    response = await client.http.post("/v1/internal/model/load", json={"model_name": "alpha", "args": args}, headers=ADMIN)
    assert response.status_code == 400 and needle in response.json()["error"]["message"]
    assert loader.loads == []


def test_load_arg_aliases_and_parsing():
    assert validate_load_args({"gpu_layers": -1, "threads": 2}) == {"n_gpu_layers": -1, "threads": 2}
    assert validate_load_args({"tensor_split": "60, 40"}) == {"tensor_split": (60.0, 40.0)}


def test_args_must_fit_the_model_format(tmp_path):
    entry = ModelEntry("m", tmp_path / "m.gguf", "gguf", 0)
    with pytest.raises(InvalidRequestError, match="the Transformers loader cannot load it"):
        load_engine(entry, Settings(), {"loader": "Transformers"})
    with pytest.raises(InvalidRequestError, match="'dtype' does not apply to gguf models"):
        load_engine(entry, Settings(), {"dtype": "float32"})


def test_speculative_config_from_args_over_settings(tmp_path):
    draft = tmp_path / "models" / "small.gguf"
    draft.parent.mkdir()
    draft.write_bytes(b"GGUF")
    settings = Settings(model_dir=tmp_path / "models", model_draft="small", draft_max=6)
    config = speculative_config(settings, {})
    assert (config.kind, config.draft_path, config.draft_max) == ("draft", draft, 6)
    config = speculative_config(settings, {"spec_type": "ngram-simple", "draft_max": 3, "spec_ngram_size_n": 2})
    assert (config.kind, config.draft_max, config.ngram_size) == ("ngram", 3, 2)
    assert speculative_config(settings, {"spec_type": "none"}) is None
    assert speculative_config(Settings(model_dir=tmp_path), {}) is None
    with pytest.raises(StartupError, match="draft model not found: missing"):
        speculative_config(settings, {"model_draft": "missing"})
    with pytest.raises(StartupError, match="needs model_draft"):
        speculative_config(Settings(model_dir=tmp_path), {"spec_type": "draft"})


async def test_load_with_an_instruction_template(make, tmp_path):
    (tmp_path / "instruction-templates").mkdir()
    (tmp_path / "instruction-templates" / "Mine.jinja").write_text(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    )
    client, _ = make(max_loaded_models=2)
    await client.http.post("/v1/internal/model/load", json={"model_name": "alpha", "instruction_template": "Mine"}, headers=ADMIN)
    prompt = (await client.http.post("/v1/internal/chat-prompt", json={"model": "alpha", "messages": USER})).json()
    assert prompt["prompt"] == "[user] Hi\n[assistant] "
    bad = await client.http.post("/v1/internal/model/load", json={"model_name": "alpha", "instruction_template": "Nope"}, headers=ADMIN)
    assert bad.status_code == 400


async def test_idle_models_unload(make):
    client, loader = make(max_loaded_models=2, idle_timeout=0.0001)  # minutes
    await reply(client, "alpha")
    await asyncio.sleep(0.05)
    await client.app.state.services.models.unload_idle()
    assert "alpha" in loader.closed
    assert (await reply(client, "alpha"))[0] == 200  # loads again on demand
