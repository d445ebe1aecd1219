"""Speech engines: transcription (faster-whisper on Whisper base), synthesis (hibari-tts) and the
audio codecs both need (PyAV). Blocking APIs; services run them in a worker thread. Nothing here
knows HTTP or OpenAI's schemas, and nothing here logs text or transcripts.

Import the submodules directly (`homeport.engines.speech.audio`, `.whisper`, `.hibari`,
`.packaged`): each imports its heavy dependency only when it is used. This package registers the
backends (`backends.py`: faster-whisper folders, hibari's bundled voices).
"""

from homeport.engines.speech.backends import BACKENDS
from homeport.engines.speech.errors import AudioDecodeError, AudioEncodeError, SpeechModelError, UnknownVoiceError
from homeport.registry import register

for _backend in BACKENDS:
    register(_backend)

__all__ = ["AudioDecodeError", "AudioEncodeError", "SpeechModelError", "UnknownVoiceError"]
