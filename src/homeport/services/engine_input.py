"""Engines name no request field in their errors (they do not know the wire format); the service
that hands an engine a request's input says which field it came from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from homeport.errors import EngineInputError


@contextmanager
def engine_input_from(param: str) -> Iterator[None]:
    """An `EngineInputError` raised in the block reaches the client naming `param` (same message,
    code and status); every other error passes unchanged."""
    try:
        yield
    except EngineInputError as exc:
        raise exc.for_param(param) from exc
