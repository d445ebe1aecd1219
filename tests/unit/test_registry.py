"""The backend registry: kinds the library scan recognises, load-argument declarations, capability
checks, and embedding models in the model manager's lifecycle (fake engines)."""

import json
import subprocess
import sys

import pytest

from homeport import registry
from homeport.cli import build_parser
from homeport.engines.embeddings import FakeEmbedder
from homeport.engines.embeddings.engine import EmbeddingEngine
from homeport.engines.fake import FakeEngine
from homeport.registry.library import ModelLibrary
from homeport.settings import Settings


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    (root / "chat-hf").mkdir(parents=True)
    (root / "chat-hf" / "config.json").write_text("{}")
    (root / "chat-hf" / "model.safetensors").write_bytes(b"x")
    (root / "mini-embed" / "1_Pooling").mkdir(parents=True)
    (root / "mini-embed" / "modules.json").write_text("[]")
    (root / "mini-embed" / "config.json").write_text("{}")
    (root / "mini-embed" / "1_Pooling" / "config.json").write_text("{}")
    (root / "mini-embed" / "model.safetensors").write_bytes(b"x")
    (root / "ce").mkdir()
    (root / "ce" / "config.json").write_text(json.dumps(
        {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}))
    (root / "ce" / "model.safetensors").write_bytes(b"x")
    (root / "sd" / "unet").mkdir(parents=True)
    (root / "sd" / "model_index.json").write_text(json.dumps({"_diffusers_version": "0.30.0"}))
    (root / "sd" / "unet" / "config.json").write_text("{}")
    (root / "sd" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (root / "whisper-small").mkdir()
    (root / "whisper-small" / "model.bin").write_bytes(b"x")
    (root / "whisper-small" / "config.json").write_text(json.dumps({"alignment_heads": [], "lang_ids": []}))
    (root / "text.gguf").write_bytes(b"GGUF")
    (root / "mmproj-text.gguf").write_bytes(b"GGUF")
    return root


def test_the_scan_knows_every_kind(models):
    kinds = {e.id: (e.kind, e.format, e.backend) for e in ModelLibrary(models).scan()}
    assert kinds == {
        "text": ("text", "gguf", "llama.cpp"),
        "chat-hf": ("text", "transformers", "transformers"),
        "mini-embed": ("embedding", "sentence-transformers", "sentence-transformers"),
        "ce": ("rerank", "cross-encoder", "cross-encoder"),
        "sd": ("image", "diffusers", "diffusers"),  # its unet/ is a part, not a model
        "whisper-small": ("transcription", "whisper", "whisper"),
    }


def test_an_embedding_gguf_is_recognised_by_its_metadata(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "embed.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_uint32("bert.pooling_type", 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    (entry,) = ModelLibrary(tmp_path).scan()
    assert (entry.kind, entry.backend, entry.capabilities) == ("embedding", "llama.cpp-embedding", ("embedding",))


def test_the_scan_is_cached_until_the_model_dir_changes(models):
    library = ModelLibrary(models)
    first = library.scan()
    assert library.scan() == first
    (models / "new.gguf").write_bytes(b"GGUF")
    assert "new" in [e.id for e in library.scan()]


def test_cli_flags_and_settings_come_from_the_load_arg_declarations():
    parser = build_parser()
    for backend in registry.backends():
        for arg in backend.load_args:
            if arg.setting is not None:
                assert arg.setting in Settings.model_fields, arg.name
            if arg.flag is not None:
                value = ["--" + arg.flag.names[0][2:]] if arg.flag.switch else [arg.flag.names[0], "1"]
                if arg.flag.choices:
                    value = [arg.flag.names[0], arg.flag.choices[0]]
                assert getattr(parser.parse_args(["serve", *value]), arg.setting) is not None


def test_start_up_imports_no_torch():
    code = ("import sys, homeport.server, homeport.app, homeport.registry.loading, homeport.registry as r; "
            "r.backends(); from homeport.registry.library import ModelLibrary; "
            "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


class KindLoader:
    def __init__(self):
        self.loads = []

    def __call__(self, entry, args):
        self.loads.append(entry.id)
        if entry.kind == "embedding":
            return EmbeddingEngine.of(FakeEmbedder(model_id=entry.id), loader="fake")
        return FakeEngine(model_id=entry.id)


async def test_embeddings_honour_model_and_fall_back_to_the_default(make_client, models):
    loader = KindLoader()
    client = make_client(FakeEngine(model_id="base"), loader=loader, model_dir=models, max_loaded_models=1)
    named = await client.http.post("/v1/embeddings", json={"model": "mini-embed", "input": "hello"})
    assert named.status_code == 200 and named.json()["model"] == "mini-embed"
    assert loader.loads == ["mini-embed"]
    # An embedding model does not evict the chat model (max_loaded counts per kind).
    assert [m.entry.id for m in client.app.state.services.models.loaded()] == ["base"]
    chat = await client.http.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 200
    card = (await client.http.get("/v1/models/mini-embed")).json()
    assert card["loaded"] is True and card["capabilities"] == ["embedding"]
    rerank = await client.http.post("/v1/rerank", json={"model": "mini-embed", "query": "hello", "documents": ["hello", "x"]})
    assert rerank.json()["model"] == "mini-embed"


async def test_a_model_without_the_capability_is_a_400(make_client, models):
    client = make_client(FakeEngine(model_id="base"), loader=KindLoader(), model_dir=models)
    # /v1/embeddings ignored `model` before: a chat model's name still gets the default embedding model.
    embedded = await client.http.post("/v1/embeddings", json={"model": "base", "input": "x"})
    assert embedded.status_code == 200 and embedded.json()["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    for path, body in (("/v1/chat/completions", {"model": "mini-embed", "messages": [{"role": "user", "content": "x"}]}),
                       ("/v1/chat/completions", {"model": "sd", "messages": [{"role": "user", "content": "x"}]})):
        response = await client.http.post(path, json=body)
        error = response.json()["error"]
        assert response.status_code == 400, body
        assert (error["code"], error["param"]) == ("model_lacks_capability", "model")
        assert f"'{body['model']}'" in error["message"]
