"""The speech engines as the model manager holds them: the `Transcription` and `SpeechSynthesis`
capabilities of engines/capabilities.py (async, whole results), over the blocking engines of
whisper.py and hibari.py, run in a worker thread of their own (one job at a time per model).

Streaming callers (segments as they come, audio sentence by sentence) use the blocking engine
itself (`.transcriber`, `.synthesizer`) from a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from homeport.engines.base import GenerationStats, ModelInfo
from homeport.engines.speech.audio import decode_audio, to_int16
from homeport.engines.speech.hibari import HibariSynthesizer
from homeport.engines.speech.whisper import WhisperTranscriber


class _ThreadEngine:
    def __init__(self, model_id: str, loader: str, path: str = "") -> None:
        self.info = ModelInfo(model_id=model_id, context_length=0, loader=loader, path=path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"speech-{loader}")
        self._queued = 0

    async def _run(self, fn, *args, **kwargs):
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        finally:
            self._queued -= 1

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class TranscriptionEngine(_ThreadEngine):
    """`Transcription`: audio file bytes → {"text", "language", "duration", "segments"}."""

    def __init__(self, transcriber: WhisperTranscriber) -> None:
        super().__init__(transcriber.model_id, "faster-whisper", str(transcriber.model_dir))
        self.transcriber = transcriber

    async def transcribe(self, audio: bytes, *, language: str | None = None, prompt: str | None = None,
                         translate: bool = False, **options) -> dict:
        return await self._run(self._transcribe, audio, language, prompt, translate, options)

    def _transcribe(self, audio: bytes, language, prompt, translate: bool, options: dict) -> dict:
        samples = decode_audio(audio)
        with self.transcriber.transcribe(samples, language=language, prompt=prompt,
                                         task="translate" if translate else "transcribe", **options) as transcript:
            segments = list(transcript)
        return {"text": "".join(s.text for s in segments).strip(), "language": transcript.language,
                "duration": transcript.duration, "segments": segments}

    def stats(self) -> GenerationStats:
        c = self.transcriber.counters
        return GenerationStats(active=c.active, completed=c.completed, cancelled=c.cancelled, failed=c.failed,
                               queued=max(0, self._queued - c.active))

    def effective_args(self) -> dict:
        t = self.transcriber
        return {"device": t.device, "compute_type": t.compute_type, "threads": t.threads}


class SpeechSynthesisEngine(_ThreadEngine):
    """`SpeechSynthesis`: text → (16-bit mono PCM bytes, sample rate)."""

    def __init__(self, synthesizer: HibariSynthesizer) -> None:
        super().__init__(synthesizer.model_id, "hibari")
        self.synthesizer = synthesizer
        self.completed = 0

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> tuple[bytes, int]:
        return await self._run(self._synthesize, text, voice, speed)

    def _synthesize(self, text: str, voice: str, speed: float) -> tuple[bytes, int]:
        chunks = [to_int16(c) for c in self.synthesizer.synthesize(text, voice, speed)]
        self.completed += 1
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm.astype("<i2", copy=False).tobytes(), self.synthesizer.sample_rate

    def stats(self) -> GenerationStats:
        return GenerationStats(completed=self.completed, queued=self._queued)

    def effective_args(self) -> dict:
        return {"threads": self.synthesizer.threads, "voices": [v.name for v in self.synthesizer.voices()]}
