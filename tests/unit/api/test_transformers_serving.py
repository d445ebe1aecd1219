"""A Hugging Face folder in the library, served through the whole app by the transformers engine
(the tiny random-weight model built in tests/support/tiny_hf_model.py; real loader, real torch)."""

from __future__ import annotations

import json
import shutil

import pytest

from homeport.registry.loading import LibraryLoader
from homeport.settings import Settings
from support.tiny_hf_model import tiny_model_folder

CHAT = "/v1/chat/completions"
ADMIN = {"Authorization": "Bearer admin"}
USER = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
def make(make_client, tmp_path, tmp_path_factory):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(tiny_model_folder(tmp_path_factory), models / "tiny-llama")

    def build(**settings):
        settings = {"model_dir": models, "admin_key": "admin", "max_loaded_models": 2, **settings}
        return make_client(loader=LibraryLoader(Settings(**settings)), **settings)
    return build


async def test_a_hugging_face_folder_is_listed_and_served(make, spec):
    client = make()
    listing = (await client.http.get("/v1/models")).json()
    assert "tiny-llama" in [m["id"] for m in listing["data"]]
    body = {"model": "tiny-llama", "messages": USER, "max_tokens": 8, "temperature": 0}
    first = await client.http.post(CHAT, json=body)
    assert first.status_code == 200, first.text
    spec.validate("CreateChatCompletionResponse", first.json())
    reply = first.json()
    assert reply["model"] == "tiny-llama" and reply["usage"]["completion_tokens"] >= 1
    # the prompt went through the folder's own chat template: <|im_start|> markers, counted as tokens
    prompt = (await client.http.post("/v1/internal/chat-prompt", json={"model": "tiny-llama", "messages": USER})).json()
    assert "<|im_start|>user\nHello there<|im_end|>" in prompt["prompt"]
    again = (await client.http.post(CHAT, json=body)).json()
    assert again["choices"][0]["message"]["content"] == reply["choices"][0]["message"]["content"]  # greedy


async def test_streaming_from_the_transformers_engine(make, spec):
    client = make()
    body = {"model": "tiny-llama", "messages": USER, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    async with client.http.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    plain = (await client.http.post(CHAT, json={**body, "stream": False})).json()
    assert streamed == plain["choices"][0]["message"]["content"]


async def test_what_the_transformers_engine_cannot_do_is_said(make):
    client = make()
    grammar = await client.http.post(CHAT, json={"model": "tiny-llama", "messages": USER,
                                                 "response_format": {"type": "json_object"}})
    assert grammar.status_code == 400 and "not supported by the transformers engine" in grammar.json()["error"]["message"]
    dry = await client.http.post(CHAT, json={"model": "tiny-llama", "messages": USER, "max_tokens": 2,
                                             "dry_multiplier": 0.8})
    assert dry.status_code == 200 and "dry_multiplier" in dry.headers["X-Homeport-Ignored-Parameters"]


async def test_admin_load_of_a_folder_with_its_arguments(make):
    client = make()
    wrong = await client.http.post("/v1/internal/model/load", headers=ADMIN,
                                   json={"model_name": "tiny-llama", "args": {"cache_type": "q8_0"}})
    assert wrong.status_code == 400 and "does not apply to transformers models" in wrong.json()["error"]["message"]
    loaded = await client.http.post("/v1/internal/model/load", headers=ADMIN,
                                    json={"model_name": "tiny-llama", "args": {"ctx_size": 64, "dtype": "float32", "parallel": 2}})
    assert loaded.status_code == 200, loaded.text
    info = (await client.http.get("/v1/internal/model/info")).json()
    assert info["model_name"] == "tiny-llama" and info["context_length"] == 64
    assert info["args"]["dtype"] == "float32" and info["args"]["parallel"] == 2
    too_long = await client.http.post(CHAT, json={"model": "tiny-llama", "messages": [{"role": "user", "content": "word " * 200}]})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
