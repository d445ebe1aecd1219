"""`/metrics` (Prometheus text, `prometheus_client.make_asgi_app` on homeport's own registry) and the
middleware that counts requests by route template and status.

The route label is the template the request matched (`/v1/models/{model}`), never the raw path, so
ids in paths do not become labels; a path that matched nothing is `unmatched`, and a method outside
the usual seven is `other`: no client can grow the number of series.
"""

from __future__ import annotations

import time

from prometheus_client import make_asgi_app
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homeport import metrics
from homeport.api.auth import require_api_key
from homeport.api.errors import error_response
from homeport.errors import HomeportError


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts each HTTP request once it has been answered (a stream: once its last byte is sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees when the app raises before answering
        start = time.perf_counter()

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"  # any token is a method
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - start)


class MetricsEndpoint:
    """The exposition app, behind the API key unless `--metrics-public`."""

    def __init__(self, public: bool) -> None:
        self.public = public
        self._exposition = make_asgi_app(metrics.REGISTRY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.public:
            try:
                require_api_key(Request(scope))
            except HomeportError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self._exposition(scope, receive, send)
