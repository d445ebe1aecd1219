"""Load arguments (the reference API's names) → an engine for a model entry, through the backend
registry (`homeport.registry`): each backend declares its load arguments and how it loads.

Every argument is honoured or refused: unknown names and values homeport cannot apply yet are a
400 that says so (the reference API silently drops them, its users' top complaint).
"""

from __future__ import annotations

from typing import Any

from homeport import registry
from homeport.errors import InvalidRequestError
from homeport.registry import Backend
from homeport.registry.library import ModelEntry
from homeport.settings import Settings


def backend_for(entry: ModelEntry) -> Backend:
    """The backend that serves this entry; a 400 when none does (e.g. an image pipeline today)."""
    if entry.backend:
        found = registry.find_backend(entry.backend)
        if found is not None:
            return found
    for candidate in registry.backends(entry.kind):
        if candidate.format == entry.format:
            return candidate
    raise InvalidRequestError(f"no backend serves {entry.kind} models ({entry.format}) yet: cannot load {entry.id}",
                              param="model", code="model_lacks_capability")


def load_engine(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    """Blocking (seconds): call it in a worker thread. Raises StartupError when the model cannot load."""
    return backend_for(entry).load(entry, settings, args)


class LibraryLoader:
    """Loads models of the library for the model manager, with a cheap check first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, entry: ModelEntry, args: dict[str, Any]) -> Any:
        return load_engine(entry, self.settings, args)

    def check(self, entry: ModelEntry) -> None:
        """Reads the model's metadata only (fast): a corrupt or foreign file fails here."""
        chosen = backend_for(entry)
        if chosen.check is not None:
            chosen.check(entry)
