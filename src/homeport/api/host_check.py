"""DNS-rebinding protection: while homeport listens on loopback only, answer only requests whose
Host header names loopback.

A web page on an attacker's domain can make a browser send requests to 127.0.0.1 by pointing its
own name at it; the browser then sends that name as Host. Checking Host stops the page from
reading the API. Off once the server is meant to be reached from elsewhere (the reference API
turns it off with --listen or --public-api), since clients then use any name.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from homeport.api.errors import error_response
from homeport.errors import InvalidRequestError
from homeport.settings import Settings

INVALID_HOST = InvalidRequestError(
    "Invalid host header: homeport answers only requests for localhost, 127.0.0.1 or [::1] "
    "unless it was started with --listen or --public-api.",
    code="invalid_host",
)


def host_check_needed(settings: Settings) -> bool:
    """True when every address homeport binds is loopback and no tunnel forwards to it."""
    if settings.public_api:
        return False
    return all(_is_loopback(host) for host in settings.bind_hosts)


def allowed_host(header: str) -> bool:
    """`header` is the Host value: a name or address, maybe with a port; IPv6 in brackets."""
    host = header.strip().lower()
    if host.startswith("["):
        literal, bracket, _ = host[1:].partition("]")
        return bool(bracket) and _is_loopback(literal)
    host = host.partition(":")[0].removesuffix(".")
    return host == "localhost" or _is_loopback(host)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HostCheckMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((value for name, value in scope["headers"] if name == b"host"), b"")
            if not allowed_host(host.decode("latin-1")):
                await error_response(INVALID_HOST)(scope, receive, send)
                return
        await self.app(scope, receive, send)
