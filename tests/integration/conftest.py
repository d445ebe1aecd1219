"""Integration tests: a real `homeport serve` subprocess on the default model, on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp
import openai
import pytest

from support.server import API_KEY, GEMMA_MODEL_ID, RunningServer, start_server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    # Tests name the model "m" or "any", as apps name theirs: aliases map them to the default model.
    aliases = ["--model-alias", f"m={GEMMA_MODEL_ID}", "--model-alias", f"any={GEMMA_MODEL_ID}"]
    running = start_server(tmp_path_factory.mktemp("homeport"), "--api-key", API_KEY, *aliases)
    yield running
    stop_server(running)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return server.openai()


@pytest.fixture
def decode_steps(monkeypatch) -> list[int]:
    """The tokens of each `llama_decode` call from now on (an engine's steps), in order."""
    steps: list[int] = []
    decode = llama_cpp.llama_decode

    def recording(ctx, batch):
        steps.append(batch.n_tokens)
        return decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", recording)
    return steps


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
