"""Speech services: transcription and translation (Whisper), speech synthesis (hibari), over
the model manager. A request's `model` names a loaded or library model of the right kind; OpenAI's
names (whisper-1, tts-1, ...) and unknown names get the kind's default model.

Streams pin their model until they end and stop their job when the client goes away (the
response's generator is closed, which closes the engine's stream: nothing more is decoded or
synthesized). Everything that can be wrong with a request fails before a response starts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from homeport.engines.speech.audio import MEDIA_TYPES, AudioEncoder
from homeport.engines.speech.errors import AudioDecodeError, UnknownVoiceError
from homeport.errors import InvalidRequestError
from homeport.registry.manager import ModelManager
from homeport.schemas.audio import SpeechRequest, TranscriptionRequest
from homeport.services.audio import transcripts
from homeport.services.reply import IGNORED_HEADER



@dataclass(frozen=True)
class AudioReply:
    """A JSON body, a text body, or chunks to stream (bytes, or event dicts for SSE)."""

    body: dict | str | AsyncIterator
    media_type: str = "application/json"
    headers: dict[str, str] | None = None
    sse: bool = False


class AudioService:
    def __init__(self, models: ModelManager) -> None:
        self.models = models

    # ---- speech to text ------------------------------------------------------------------

    async def transcribe(self, audio: bytes, request: TranscriptionRequest) -> AudioReply:
        model = await self.models.acquire(request.model, capability="transcription")
        try:
            stream = await model.engine.transcribe(
                audio, language=request.language, prompt=request.prompt, translate=request.translate,
                temperature=request.temperature, word_timestamps=request.word_timestamps or request.logprobs,
                vad_filter=request.vad_filter,
            )
        except AudioDecodeError as exc:
            self.models.release(model)
            raise InvalidRequestError(exc.message, param="file", code=exc.code) from None
        except BaseException:
            self.models.release(model)
            raise
        headers = {IGNORED_HEADER: ",".join(request.ignored)} if request.ignored else None
        if request.stream:
            return AudioReply(self._transcript_events(model, stream, request.logprobs), "text/event-stream",
                              headers, sse=True)
        try:
            async with stream:
                segments = [segment async for segment in stream]
        finally:
            self.models.release(model)
        body = transcripts.render(request.response_format, language=stream.language, duration=stream.duration,
                                  segments=segments, translate=request.translate, logprobs=request.logprobs,
                                  words=request.word_timestamps, with_segments=request.segment_timestamps)
        return AudioReply(body, "application/json" if isinstance(body, dict) else
                          ("text/vtt" if request.response_format == "vtt" else "text/plain"), headers)

    async def _transcript_events(self, model, stream, logprobs: bool) -> AsyncIterator[dict]:
        segments = []
        try:
            async with stream:
                async for segment in stream:
                    segments.append(segment)
                    yield transcripts.delta_event(segment, logprobs)
            yield transcripts.done_event(stream.duration, segments, logprobs)
        finally:
            self.models.release(model)

    async def transcript_text(self, audio: bytes, *, language: str | None = None) -> str:
        """The default STT model's plain transcript (chat's audio parts)."""
        async with self.models.using(None, "transcription") as model:
            stream = await model.engine.transcribe(audio, language=language)  # AudioDecodeError: caller names the part
            async with stream:
                return transcripts.transcript_text([segment async for segment in stream])

    # ---- text to speech ------------------------------------------------------------------

    async def speak(self, request: SpeechRequest) -> AudioReply:
        if not request.input.strip():
            raise InvalidRequestError("'input' is empty: there is no text to speak", param="input")
        model = await self.models.acquire(request.model, capability="speech_synthesis")
        try:
            engine = model.engine
            ignored = []
            if request.instructions:
                ignored.append("instructions")  # hibari has one style per voice
            if engine.effective_speed(request.speed) != request.speed:
                ignored.append("speed")  # clamped to what the engine can do (docs/speech.md)
            encoder = AudioEncoder(request.response_format, engine.sample_rate)
            chunks = await engine.synthesize(request.input, voice=request.voice_name, speed=request.speed)
        except UnknownVoiceError as exc:
            self.models.release(model)
            raise InvalidRequestError(exc.message, param="voice", code=exc.code) from None
        except BaseException:
            self.models.release(model)
            raise
        headers = {IGNORED_HEADER: ",".join(ignored)} if ignored else {}
        audio = self._encoded(model, chunks, encoder)
        if request.stream_format == "sse":
            return AudioReply(self._speech_events(audio, len(request.input)), "text/event-stream", headers, sse=True)
        return AudioReply(audio, MEDIA_TYPES[request.response_format], headers)

    async def _encoded(self, model, chunks, encoder: AudioEncoder) -> AsyncIterator[bytes]:
        try:
            async with chunks:
                async for pcm in chunks:
                    if data := await asyncio.to_thread(encoder.feed, pcm):  # encoding is CPU work
                        yield data
            if data := await asyncio.to_thread(encoder.finish):
                yield data
        finally:
            self.models.release(model)

    @staticmethod
    async def _speech_events(audio: AsyncIterator[bytes], characters: int) -> AsyncIterator[dict]:
        sent = 0
        async with contextlib.aclosing(audio):
            async for data in audio:
                sent += len(data)
                yield {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
        # no tokenizer in front of hibari: the characters read stand in for input tokens
        yield {"type": "speech.audio.done", "usage": {"input_tokens": characters, "output_tokens": 0,
                                                      "total_tokens": characters}}
