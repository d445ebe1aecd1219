"""The transformers text backend's declaration: Hugging Face model folders. No torch import here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.engines.transformers.support import LOAD_ARGS
from homeport.registry import Backend, check_args_fit

if TYPE_CHECKING:
    from homeport.registry.library import ModelEntry
    from homeport.settings import Settings


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))



def detect(folder: Path) -> bool:
    """config.json and weights (the more specific folder kinds are detected first)."""
    return (folder / "config.json").is_file() and has_weights(folder)


def load(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.transformers.loader import load_transformers_engine

    check_args_fit(entry, BACKEND, args)
    defaults = {"ctx_size": settings.ctx_size}
    return load_transformers_engine(entry.path, entry.id, {**defaults, **args}, threads=settings.threads,
                                    debug=settings.debug)


def check(entry: ModelEntry) -> None:
    from homeport.engines.transformers.loader import check_transformers_folder

    check_transformers_folder(entry.path)


BACKEND = Backend(
    name="transformers",
    kind="text",
    format="transformers",
    detect=detect,
    load=load,
    check=check,
    load_args=LOAD_ARGS,
    capabilities=("text_generation",),
    loaders=("transformers",),
    loader_label="Transformers",
    files="folder",
)
