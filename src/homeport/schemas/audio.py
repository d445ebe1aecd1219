"""The audio endpoints' requests: /v1/audio/speech (JSON) and the multipart forms of
/v1/audio/transcriptions and /v1/audio/translations (parsed field by field here, so that every
bad field is a 400 naming it, as OpenAI's are)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from homeport.errors import InvalidRequestError
from homeport.schemas.common import WireModel

MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's limit for an audio file
MAX_SPEECH_INPUT = 4096  # characters
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class CustomVoice(WireModel):
    id: str


class SpeechRequest(WireModel):
    model: str
    input: Annotated[str, Field(max_length=MAX_SPEECH_INPUT)]
    voice: str | CustomVoice
    instructions: Annotated[str, Field(max_length=4096)] | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    stream_format: Literal["audio", "sse"] = "audio"

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, CustomVoice) else self.voice


@dataclass(frozen=True)
class TranscriptionRequest:
    """One transcription or translation, as its form gave it (the file's bytes apart)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    response_format: str = "json"
    word_timestamps: bool = False
    segment_timestamps: bool = True
    stream: bool = False
    logprobs: bool = False
    vad_filter: bool = False
    translate: bool = False
    ignored: tuple[str, ...] = field(default=())  # accepted fields homeport does not act on


_COMMON = {"model", "prompt", "response_format", "temperature", "vad_filter"}
_TRANSCRIPTION_ONLY = {"language", "timestamp_granularities[]", "timestamp_granularities", "stream", "include[]",
                       "include", "chunking_strategy"}
_ACCEPTED_UNUSED = {"known_speaker_names[]", "known_speaker_references[]"}


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise InvalidRequestError(f"Invalid value for '{name}': expected true or false", param=name, code="invalid_value")


def parse_transcription_form(fields: dict[str, list[str]], *, translate: bool) -> TranscriptionRequest:
    """The form's text fields (name → values, in order) → a checked request."""
    allowed = _COMMON | (set() if translate else _TRANSCRIPTION_ONLY | _ACCEPTED_UNUSED)
    for name in fields:
        if name not in allowed:
            raise InvalidRequestError(f"Unrecognized request argument supplied: {name}", param=name,
                                      code="unknown_parameter")

    def one(name: str) -> str | None:
        values = fields.get(name)
        return values[-1] if values else None

    response_format = (one("response_format") or "json").strip()
    if response_format not in TRANSCRIPT_FORMATS:
        raise InvalidRequestError(f"Invalid value for 'response_format': must be one of {', '.join(TRANSCRIPT_FORMATS)}",
                                  param="response_format", code="invalid_value")
    temperature = 0.0
    if (raw := one("temperature")) not in (None, ""):
        try:
            temperature = float(raw)
        except ValueError:
            raise InvalidRequestError("Invalid value for 'temperature': expected a number", param="temperature",
                                      code="invalid_value") from None
        if not 0.0 <= temperature <= 1.0:
            raise InvalidRequestError("Invalid value for 'temperature': must be between 0 and 1", param="temperature",
                                      code="invalid_value")
    granularities = [*fields.get("timestamp_granularities[]", []), *fields.get("timestamp_granularities", [])]
    for value in granularities:
        if value not in ("word", "segment"):
            raise InvalidRequestError("Invalid value for 'timestamp_granularities[]': must be word or segment",
                                      param="timestamp_granularities[]", code="invalid_value")
    if granularities and response_format != "verbose_json":
        raise InvalidRequestError("timestamp_granularities[] requires response_format verbose_json",
                                  param="timestamp_granularities[]", code="invalid_value")
    includes = [*fields.get("include[]", []), *fields.get("include", [])]
    for value in includes:
        if value != "logprobs":
            raise InvalidRequestError("Invalid value for 'include[]': only logprobs is supported", param="include[]",
                                      code="invalid_value")
    stream = _bool("stream", one("stream") or "false")
    if includes and not stream and response_format != "json":
        raise InvalidRequestError("include[]=logprobs requires response_format json", param="include[]",
                                  code="invalid_value")
    vad = _bool("vad_filter", one("vad_filter") or "false")
    chunking = one("chunking_strategy")
    if chunking not in (None, ""):
        vad = True  # "auto" or a server_vad object: voice activity detection, as OpenAI's
    language = (one("language") or "").strip() or None
    ignored = tuple(name for name in fields if name in _ACCEPTED_UNUSED)
    return TranscriptionRequest(
        model=(one("model") or "").strip() or None, language=language, prompt=one("prompt") or None,
        temperature=temperature, response_format=response_format, word_timestamps="word" in granularities,
        segment_timestamps="segment" in granularities or not granularities, stream=stream,
        logprobs=bool(includes), vad_filter=vad, translate=translate, ignored=ignored,
    )


def form_fields(form: Any) -> tuple[Any, dict[str, list[str]]]:
    """(the `file` upload or None, the text fields) from a parsed multipart form."""
    upload, fields = None, {}
    for name, value in form.multi_items():
        if name == "file":
            upload = value
        elif isinstance(value, str):
            fields.setdefault(name, []).append(value)
        else:
            raise InvalidRequestError(f"'{name}' must be a text field, not a file", param=name, code="invalid_value")
    return upload, fields


class InputAudio(WireModel):
    data: str  # base64
    format: str  # wav | mp3 (checked when transcribed, so the error names the part)


class InputAudioPart(WireModel):
    """A chat message's audio content part: transcribed to text before the text model sees it."""

    type: Literal["input_audio"]
    input_audio: InputAudio
