"""Model folders the library recognises before any backend serves them: diffusers pipelines
(kind image), Whisper folders (transcription) and TTS voices (speech). They are listed in
/v1/models with no capabilities; loading one is a 400. A backend for one of them registers with
the same `format` (and a higher priority) and takes over."""

from __future__ import annotations

import json
from pathlib import Path

from homeport.registry import Recognizer, register

_WHISPER_FIELDS = ("alignment_heads", "suppress_ids", "lang_ids")  # a CTranslate2 Whisper config.json
_TTS_TYPES = frozenset({"vits", "speecht5", "bark", "kokoro", "parler_tts"})


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_diffusers(folder: Path) -> bool:
    index = folder / "model_index.json"
    return index.is_file() and any(key in _json(index) for key in ("_diffusers_version", "_class_name"))


def is_whisper(folder: Path) -> bool:
    config = _json(folder / "config.json")
    if (folder / "model.bin").is_file() and any(key in config for key in _WHISPER_FIELDS):
        return True  # CTranslate2 (faster-whisper)
    return config.get("model_type") == "whisper"


def is_tts(folder: Path) -> bool:
    if any(folder.glob("*.onnx.json")) and any(folder.glob("*.onnx")):
        return True  # Piper voices
    return _json(folder / "config.json").get("model_type") in _TTS_TYPES


register(Recognizer("diffusers", kind="image", format="diffusers", detect=is_diffusers, priority=30))
register(Recognizer("whisper", kind="transcription", format="whisper", detect=is_whisper, priority=30))
register(Recognizer("tts", kind="speech", format="tts", detect=is_tts, priority=30))
