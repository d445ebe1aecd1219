"""Bearer API keys, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from homeport.errors import AuthenticationError


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")  # Anthropic-style clients send this


def _matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def require_api_key(request: Request) -> None:
    expected = request.app.state.services.settings.api_key
    if expected and not _matches(_presented_key(request), expected):
        raise AuthenticationError("Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.")


def require_admin_key(request: Request) -> None:
    expected = request.app.state.services.settings.effective_admin_key
    if expected and not _matches(_presented_key(request), expected):
        raise AuthenticationError("This endpoint needs the admin key. Send it as 'Authorization: Bearer <key>'.")
