"""Prefix affinity without Ray: the text a request's prompt starts with, and which replica last saw
the longest start of it.

A replica's prefix cache (llama.cpp's KV of earlier prompts) only helps a request that lands on it,
so the router sends a conversation's next turn where its history went before. Like Ray Serve's
PrefixCacheAffinityRouter, the router remembers which prompts it routed where (it cannot see the
replicas' caches), and falls back to the least queued replica when the best match is short or the
load is uneven. The remembered prompts stay in the ingress's memory; nothing is logged.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from homeport.services.ids import home_of

# The fields of a body that hold its prompt, in the order the model reads them.
_PROMPT_FIELDS = ("system", "instructions", "messages", "prompt", "input")


def prompt_key(path: str, body: bytes) -> str | None:
    """`model`, then the prompt's text in order (roles included), for prefix matching; None for
    bodies without one (GET requests, uploads, bad JSON: the router then just balances load)."""
    return routing_fields(path, body)[1]


def routing_fields(path: str, body: bytes) -> tuple[str | None, str | None]:
    """(the `model` the body names, its prompt key), each None when absent."""
    if not body or not path.startswith("/v1/") or body[:1] not in (b"{", b" ", b"\n"):
        return None, None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    parts = [model or ""]
    for field in _PROMPT_FIELDS:
        if field in data:
            parts.append(_text(data[field]))
    return model, ("\x1e".join(parts) if len(parts) > 1 else None)


def stored_home(path: str, body: bytes) -> str | None:
    """The replica holding the stored response a request names (in its path, or as the body's
    `previous_response_id`), or the stored items its `item_reference`s name: their ids say so
    (services/ids.stored_id). None: any replica."""
    if path.startswith("/v1/responses/"):
        return home_of(path.removeprefix("/v1/responses/").split("/", 1)[0])
    if path == "/v1/responses" and (b"previous_response_id" in body or b"item_reference" in body):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        previous = data.get("previous_response_id")
        if isinstance(previous, str) and (home := home_of(previous)):
            return home
        # An item_reference names a stored item, whose id names its replica as a response's does.
        items = data.get("input") if isinstance(data.get("input"), list) else []
        for item in items:
            reference = item.get("id") if isinstance(item, dict) and item.get("type") == "item_reference" else None
            if isinstance(reference, str) and (home := home_of(reference)):
                return home
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\x1f".join(_text(item) for item in value)
    if isinstance(value, dict):
        role = value.get("role")
        inner = value.get("content", value.get("text", ""))
        return f"{role}:{_text(inner)}" if role else _text(inner)
    return str(value)


class PrefixAffinity:
    """Per replica, the last `keep` prompt keys routed to it; `best` names the replicas holding
    the longest prefix of a new key, when it covers at least `min_share` of it."""

    def __init__(self, min_share: float = 0.5, min_chars: int = 64, keep: int = 256) -> None:
        self.min_share = min_share
        self.min_chars = min_chars
        self.keep = keep
        self._keys: dict[str, OrderedDict[str, None]] = {}

    def record(self, replica: str, key: str) -> None:
        keys = self._keys.setdefault(replica, OrderedDict())
        keys[key] = None
        keys.move_to_end(key)
        while len(keys) > self.keep:
            keys.popitem(last=False)

    def forget(self, replica: str) -> None:
        self._keys.pop(replica, None)

    def keep_only(self, replicas: Iterable[str]) -> None:
        alive = set(replicas)
        for replica in [r for r in self._keys if r not in alive]:
            del self._keys[replica]

    def match(self, replica: str, key: str) -> int:
        """Characters of `key` that the longest remembered key of `replica` starts with."""
        return max((len(os.path.commonprefix((key, seen))) for seen in self._keys.get(replica, ())), default=0)

    def smallest(self, candidates: Iterable[str]) -> list[str]:
        """The replicas remembered for the least text: where a new conversation disturbs the
        fewest cached ones (Ray's prefix router falls back to its "smallest tenants" the same way)."""
        sizes = {replica: sum(map(len, self._keys.get(replica, ()))) for replica in candidates}
        least = min(sizes.values(), default=0)
        return [replica for replica, size in sizes.items() if size == least]

    def best(self, key: str, candidates: Iterable[str]) -> tuple[list[str], int]:
        """The replicas with the longest match (ties: all of them) and its length; ([], 0) when no
        match is long enough to be worth more than balancing load."""
        scored = [(self.match(replica, key), replica) for replica in candidates]
        longest = max((score for score, _ in scored), default=0)
        if longest < self.min_chars or longest < self.min_share * len(key):
            return [], 0
        return [replica for score, replica in scored if score == longest], longest
