"""Errors of the speech engines, in homeport's one hierarchy (homeport/errors.py).

Engine-level and neutral: messages name what is wrong with the input or the model, never quote
text or transcripts. The HTTP layer maps them by class (the status codes here are its defaults).
"""

from __future__ import annotations

from homeport.errors import EngineError, InvalidRequestError


class AudioDecodeError(InvalidRequestError):
    """The bytes are not audio homeport can read: not a known format, empty, truncated, no audio
    stream, or no samples at all (400)."""

    code = "invalid_audio"


class AudioEncodeError(EngineError):
    """Encoding synthesized audio failed (500); an unknown format name is a ValueError at construction."""

    code = "audio_encode_error"


class UnknownVoiceError(InvalidRequestError):
    """The voice is not one this engine can speak with (not known, or needs a download) (400)."""

    code = "unknown_voice"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="voice")


class SpeechModelError(EngineError):
    """A speech model's files are missing or damaged (e.g. the Whisper model packages are not
    installed, or the assembled model.bin fails its checksum after a rebuild) (500)."""

    code = "speech_model_error"
