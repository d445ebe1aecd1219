"""The Serve deployment: one replica is one complete homeport app (its ModelManager, engines and
services, built by homeport.app.create_app exactly as `homeport serve` builds it) without a socket;
the ingress hands it requests through Serve and streams its answer back."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from homeport.cluster.forwarding import ForwardedRequest, ResponseStart, run_asgi

log = logging.getLogger("homeport")


class ModelReplica:
    """`settings`: the ingress's Settings as a plain mapping (paths already absolute)."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ.setdefault("TQDM_DISABLE", "1")
        from ray import serve

        from homeport.app import create_app
        from homeport.registry.library import ModelLibrary, packaged_models, resolve_model
        from homeport.registry.loading import LibraryLoader
        from homeport.server import configure_logging
        from homeport.services import ids
        from homeport.settings import Settings

        config = Settings(**settings)
        configure_logging(config.debug)
        self.name = serve.get_replica_context().replica_id.unique_id
        ids.set_home(self.name)  # stored responses' ids name this replica (the ingress pins to it)
        library = ModelLibrary(config.model_dir, extra=packaged_models())
        self.app = create_app(config, None, entry=resolve_model(config), loader=LibraryLoader(config),
                              model_library=library)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        # Serve routes to a replica once this returns: only after the default model is loaded,
        # so a replica that is up can serve it (a failed load fails the replica, Serve retries).
        await self.app.state.startup_load
        log.info("replica %s ready", self.name)

    async def handle(self, request: ForwardedRequest) -> AsyncIterator[ResponseStart | bytes]:
        async for item in run_asgi(self.app, request, self.name):
            yield item

    async def record_routing_stats(self) -> dict[str, Any]:
        """What the router reads (Serve polls it): the models this replica has loaded."""
        return {"loaded": [model.entry.id for model in self.app.state.services.models.loaded(None)]}

    async def check_health(self) -> None:
        load = self.app.state.startup_load
        if load is not None and load.done() and not load.cancelled() and load.exception() is not None:
            raise RuntimeError("the default model failed to load")

    async def __del__(self) -> None:  # Serve calls it when it stops the replica: unload the models
        await self._lifespan.__aexit__(None, None, None)
