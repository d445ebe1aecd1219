"""Unit tests: the app in-process over the fake engine, driven by raw HTTP and the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import openai
import pytest

from homeport.app import create_app
from homeport.engines.fake import FakeEngine
from homeport.settings import Settings


class AppClient:
    def __init__(self, engine: FakeEngine, settings: Settings, loader=None) -> None:
        self.engine = engine
        self.settings = settings
        self.app = create_app(settings, engine, loader=loader)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://localhost")

    def openai(self, api_key: str = "sk-test") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url="http://localhost/v1", api_key=api_key, http_client=self.http, max_retries=0)


@pytest.fixture
async def make_client(tmp_path) -> AsyncIterator[Callable[..., AppClient]]:
    clients: list[AppClient] = []

    def make(engine: FakeEngine | None = None, loader=None, **settings) -> AppClient:
        settings.setdefault("user_data_dir", tmp_path)
        client = AppClient(engine or FakeEngine(), Settings(**settings), loader)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.http.aclose()


@pytest.fixture
async def client(make_client) -> AppClient:
    return make_client()
