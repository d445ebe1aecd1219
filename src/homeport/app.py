"""The ASGI app: routes, auth, errors, CORS and offline docs, over services built from settings."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from homeport import __version__, metrics
from homeport.api.auth import require_api_key
from homeport.api.drain import Drain, DrainMiddleware
from homeport.api.errors import CatchAllMiddleware, install_error_handlers
from homeport.api.host_check import HostCheckMiddleware, host_check_needed
from homeport.api.metrics import MetricsEndpoint, RequestMetricsMiddleware
from homeport.api.routes import completions, embeddings, health, internal, lora, models, prompts
from homeport.api.routes import messages, responses
from homeport.api.routes import audio
from homeport.api.routes import images
from homeport.engines.base import TextEngine
from homeport.registry.library import ModelEntry, ModelLibrary
from homeport.registry.manager import EngineLoader
from homeport.services.container import Services
from homeport.services.ids import now
from homeport.settings import Settings
from homeport.webui import mount_webui


# FastAPI 0.16x records OpenTelemetry spans, metrics and exception logs (whose messages can quote
# a prompt) as soon as a tracer, meter or logger provider exists in the process (Ray's workers
# configure one), and with FASTAPI_OTEL_AUTO_CONFIGURE=true exports them wherever the OTEL_*
# variables point. homeport records and sends none of it.
NO_TELEMETRY = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(
    settings: Settings,
    engine: TextEngine | None,
    *,
    entry: ModelEntry | None = None,
    loader: EngineLoader | None = None,
    model_library: ModelLibrary | None = None,
) -> FastAPI:
    """`engine`: the model loaded at start-up (None: `entry` is loaded once the app serves, and
    /health/ready says 503 until it is); `loader`: loads other models of the library on
    demand (None serves that one model only); `model_library`: the models on offer (default: the
    model dir's)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        models = app.state.services.models
        await models.start()
        if engine is None:
            app.state.startup_load = asyncio.create_task(models.load_default())
        # --image-model loads at start too, in the background; a failure is logged, not fatal.
        image_load = asyncio.create_task(models.preload("image", "image_generation")) if settings.image_model else None
        idle_watch = asyncio.create_task(models.run_idle_watch()) if settings.idle_timeout else None
        try:
            yield
        finally:
            if idle_watch is not None:
                idle_watch.cancel()
            if image_load is not None:
                image_load.cancel()
            if app.state.startup_load is not None:
                app.state.startup_load.cancel()
                with contextlib.suppress(BaseException):
                    await app.state.startup_load
            app.state.services.embeddings.close()
            app.state.services.rerank.close()
            await models.close()

    app = FastAPI(
        title="homeport",
        version=__version__,
        description="A private, fully offline drop-in replacement for the OpenAI API.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: the default page loads its assets from a CDN
        redoc_url=None,
        **NO_TELEMETRY,
    )
    app.state.services = Services.build(settings, engine, entry=entry, loader=loader, model_library=model_library)
    app.state.started_at = now()
    app.state.drain = Drain()  # server.py runs it on SIGTERM / Ctrl-C
    app.state.startup_load = None  # the default model's load while serving (engine None), a task

    install_error_handlers(app)
    # Outermost last: CatchAll, then the Host check, CORS (so 503s while draining carry its
    # headers), then the in-flight counter right around the routes.
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"]
    )
    if host_check_needed(settings):
        app.add_middleware(HostCheckMiddleware)
    if settings.metrics:
        app.add_middleware(RequestMetricsMiddleware)
        metrics.watch(app.state.services.models)
        app.add_route("/metrics", MetricsEndpoint(public=settings.metrics_public), include_in_schema=False)
    app.add_middleware(CatchAllMiddleware, debug=settings.debug)

    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    for module in (models, completions, embeddings, internal, prompts, messages, responses, audio, images):
        app.include_router(module.router, dependencies=protected)
    app.include_router(internal.admin_router)
    app.include_router(lora.router)  # checks the admin key itself
    _mount_docs(app)
    if not settings.nowebui:
        mount_webui(app)  # the page is public; every API call it makes needs the key
    return app


def _mount_docs(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="homeport API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

