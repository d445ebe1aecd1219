"""Speech endpoints' services: transcription and translation, speech synthesis, and the
transcription of chat messages' audio parts."""

from homeport.services.audio.service import AudioReply, AudioService

__all__ = ["AudioReply", "AudioService"]
