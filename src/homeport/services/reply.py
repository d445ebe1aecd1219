"""What a service hands back to a route: the body (a dict, or chunks to stream) and headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

# Names the request fields that were accepted but changed nothing (never dropped silently).
IGNORED_HEADER = "X-Homeport-Ignored-Parameters"


@dataclass(frozen=True)
class Reply:
    body: dict | AsyncIterator[dict]
    headers: dict[str, str] = field(default_factory=dict)
