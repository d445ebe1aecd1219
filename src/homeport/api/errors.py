"""Every error leaves as OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homeport.errors import HomeportError, InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)

INTERNAL_ERROR = HomeportError("The server had an error while processing your request.", code="internal_error")


def error_response(error: HomeportError, request: Request | None = None) -> JSONResponse:
    if request is not None and request.url.path.startswith("/v1/messages"):
        # The Anthropic Messages API answers in Anthropic's envelope, with its status codes.
        from homeport.services.wire.anthropic import error_envelope

        status, body = error_envelope(error)
        return JSONResponse(body, status_code=status, headers=error.headers)
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=error.headers)


def _param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return None
    text = parts[0]
    for part in parts[1:]:
        text += f"[{part}]" if part.isdigit() else f".{part}"
    return text


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """The first problem, said plainly, as a 400 (never FastAPI's 422 {detail})."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request. Make sure the body is valid JSON.",
            code="invalid_json",
        )
    param = _param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    where = f"Invalid value for '{param}': " if param else "Invalid request: "
    return InvalidRequestError(where + message, param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HomeportError)
    async def _homeport(request: Request, exc: HomeportError) -> JSONResponse:
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error = NotFoundError(f"Invalid URL ({request.method} {request.url.path})", code="not_found")
        elif exc.status_code == 405:
            error = InvalidRequestError(
                f"Method not allowed ({request.method} {request.url.path})", code="method_not_allowed", status_code=405
            )
        else:
            error = HomeportError(str(exc.detail), status_code=exc.status_code, code=None)
            error.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(error, request)


class CatchAllMiddleware:
    """Turns any unexpected exception into a 500 envelope with no internals, and logs only its
    type: a traceback can carry request text, which must never reach a log."""

    def __init__(self, app: ASGIApp, debug: bool = False) -> None:
        self.app = app
        self.debug = debug  # with debug output asked for, the traceback is logged too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "unhandled %s in %s %s", type(exc).__name__, scope.get("method"), scope.get("path"),
                exc_info=exc if self.debug else None,
            )
            if not started:  # in the envelope of the request's wire format (Anthropic's on /v1/messages)
                await error_response(INTERNAL_ERROR, Request(scope))(scope, receive, send)
