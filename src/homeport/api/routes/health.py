"""Liveness and readiness, public (no API key) so supervisors and load balancers can probe them.

- `/health` (and the reference's `/v1/internal/health`): 200 while the process serves, also while
  the default model is still loading.
- `/health/ready` (and `/v1/internal/health?ready`): 503 until the start-up model is loaded (its
  progress in the body), then 200 with the loaded models. During a graceful shutdown every request,
  these included, is a 503 (api/drain.py), so a load balancer stops sending work first.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
@router.get("/v1/internal/health", summary="Liveness (reference API path); `?ready` for readiness")
async def health(request: Request) -> JSONResponse:
    if "ready" in request.query_params:
        return readiness(request)
    return JSONResponse({"status": "ok"})


@router.get("/health/ready", summary="Readiness: 503 until the start-up model is loaded")
async def ready(request: Request) -> JSONResponse:
    return readiness(request)


def readiness(request: Request) -> JSONResponse:
    app = request.app
    models = app.state.services.models
    loaded = [m.entry.id for m in models.loaded(None)]
    startup = app.state.startup_load
    if startup is not None and not startup.done():
        return JSONResponse({"status": "loading", "loading": models.loads_in_progress(), "models": loaded},
                            status_code=503, headers={"Retry-After": "1"})
    if startup is not None and (startup.cancelled() or startup.exception() is not None):
        return JSONResponse({"status": "failed", "models": loaded}, status_code=503)
    return JSONResponse({"status": "ready", "models": loaded})
