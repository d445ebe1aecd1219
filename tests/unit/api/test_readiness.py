"""Liveness vs readiness while the start-up model loads in the background (create_app with no
engine: what `homeport serve` does), and the load's progress in /health/ready and model/info."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx

from homeport.app import create_app
from homeport.engines import load_progress
from homeport.engines.fake import FakeEngine
from homeport.registry.library import ModelEntry
from homeport.settings import Settings

ENTRY = ModelEntry("slow-model", Path("/nowhere/slow-model.gguf"), "gguf", 0)


class GatedLoader:
    """Loads a fake engine once `go` is set, reporting half-way progress first."""

    def __init__(self, fail: bool = False) -> None:
        self.go = threading.Event()
        self.reported = threading.Event()
        self.fail = fail

    def __call__(self, entry: ModelEntry, args: dict):
        load_progress.report(0.5)
        self.reported.set()
        self.go.wait(10)
        if self.fail:
            from homeport.errors import StartupError

            raise StartupError("cannot load model: not a valid GGUF file")
        return FakeEngine(model_id=entry.id)


async def serving(tmp_path, loader):
    app = create_app(Settings(user_data_dir=tmp_path), None, entry=ENTRY, loader=loader)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    return app, client


async def test_live_at_once_ready_only_once_the_model_is_loaded(tmp_path):
    loader = GatedLoader()
    app, client = await serving(tmp_path, loader)
    async with app.router.lifespan_context(app), client:
        await asyncio.to_thread(loader.reported.wait, 10)
        assert (await client.get("/health")).json() == {"status": "ok"}
        waiting = await client.get("/health/ready")
        assert waiting.status_code == 503 and waiting.headers["retry-after"] == "1"
        body = waiting.json()
        assert body["status"] == "loading" and body["models"] == []
        assert body["loading"][0]["model"] == "slow-model" and body["loading"][0]["progress"] == 0.5
        info = (await client.get("/v1/internal/model/info")).json()
        assert info["loading"][0]["model"] == "slow-model"
        assert (await client.get("/v1/internal/health?ready")).status_code == 503
        loader.go.set()
        await app.state.startup_load
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "models": ["slow-model"]}
        assert (await client.get("/v1/internal/health", params={"ready": ""})).status_code == 200
        assert (await client.get("/v1/internal/model/info")).json()["loading"] == []


async def test_a_request_during_the_load_waits_for_it(tmp_path):
    loader = GatedLoader()
    app, client = await serving(tmp_path, loader)
    async with app.router.lifespan_context(app), client:
        await asyncio.to_thread(loader.reported.wait, 10)
        request = asyncio.create_task(client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}))
        await asyncio.sleep(0.05)
        assert not request.done()
        loader.go.set()
        answer = await request
        assert answer.status_code == 200 and answer.json()["model"] == "slow-model"


async def test_a_failed_start_up_load_is_never_ready(tmp_path):
    loader = GatedLoader(fail=True)
    app, client = await serving(tmp_path, loader)
    async with app.router.lifespan_context(app), client:
        loader.go.set()
        try:
            await app.state.startup_load
        except Exception:
            pass
        failed = await client.get("/health/ready")
        assert failed.status_code == 503 and failed.json()["status"] == "failed"
        assert (await client.get("/health")).status_code == 200
