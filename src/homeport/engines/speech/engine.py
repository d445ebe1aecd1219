"""The speech engines as the model manager holds them: the `Transcription` and `SpeechSynthesis`
capabilities of engines/capabilities.py, over the blocking engines of whisper.py and hibari.py.

Streaming-friendly: `transcribe` decodes the audio and detects the language (errors surface here,
before a response starts), then hands back a `SegmentStream` whose segments are decoded one by
one as it is iterated; `synthesize` validates, then gives a `ChunkStream` of 16-bit PCM, one
sentence at a time. Each step runs in the model's own worker thread (one step at a time per model,
so concurrent jobs interleave step by step); `aclose()` (or a cancelled consumer) stops the job:
nothing more is decoded or synthesized. At most `max_queue` jobs wait: past it, a 503.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from homeport.engines.base import GenerationStats, ModelInfo
from homeport.engines.speech.audio import decode_audio, to_int16
from homeport.engines.speech.hibari import HibariSynthesizer
from homeport.engines.speech.whisper import Segment, WhisperTranscriber
from homeport.errors import ServiceUnavailableError

_END = object()


class _ThreadEngine:
    def __init__(self, model_id: str, loader: str, path: str = "", max_queue: int = 16) -> None:
        self.info = ModelInfo(model_id=model_id, context_length=0, loader=loader, path=path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"speech-{loader}")
        self.max_queue = max_queue
        self.jobs = 0  # started and not yet finished (streams count until closed)
        self.completed = self.cancelled = 0

    async def _run(self, fn, *args, **kwargs):
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except RuntimeError:  # the pool is shut down: the model was unloaded under a running job
            raise ServiceUnavailableError(f"the model {self.info.model_id} was unloaded") from None
        return await future

    def _admit(self) -> None:
        if self.jobs >= self.max_queue:
            raise ServiceUnavailableError(f"{self.jobs} speech jobs are running or waiting; retry shortly",
                                          headers={"Retry-After": "2"})
        self.jobs += 1

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> GenerationStats:
        return GenerationStats(active=self.jobs, completed=self.completed, cancelled=self.cancelled)


class _Stream:
    """Async iteration over a blocking iterator, one `next` per step in the engine's thread."""

    def __init__(self, engine: _ThreadEngine, items: Iterator, close=None) -> None:
        self._engine, self._items, self._close = engine, items, close
        self._open = True

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._open:
            raise StopAsyncIteration
        try:
            item = await self._engine._run(next, self._items, _END)
        except BaseException:
            await self.aclose(cancelled=True)
            raise
        if item is _END:
            await self.aclose(cancelled=False)
            raise StopAsyncIteration
        return self._convert(item)

    def _convert(self, item):
        return item

    async def aclose(self, *, cancelled: bool = True) -> None:
        if not self._open:
            return
        self._open = False
        self._engine.jobs -= 1
        if cancelled:
            self._engine.cancelled += 1
        else:
            self._engine.completed += 1
        if self._close is not None:
            try:  # in the worker thread: the iterator may be mid-step there
                await asyncio.shield(self._engine._run(self._close))
            except ServiceUnavailableError:
                self._close()  # the pool is shut down: nothing runs there any more
            except asyncio.CancelledError:
                # the shielded close still runs in the worker after the step in progress
                raise

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class SegmentStream(_Stream):
    """Whisper's segments as they are decoded; `language` and `duration` are known at once."""

    def __init__(self, engine, transcript) -> None:
        super().__init__(engine, transcript, transcript.close)
        self.language: str = transcript.language
        self.duration: float = transcript.duration


class ChunkStream(_Stream):
    """16-bit mono PCM (numpy int16), one chunk per sentence, at `sample_rate`."""

    def __init__(self, engine, chunks: Iterator[np.ndarray], sample_rate: int, sentences: int) -> None:
        super().__init__(engine, chunks, getattr(chunks, "close", None))
        self.sample_rate = sample_rate
        self.sentences = sentences

    def _convert(self, item):
        return to_int16(item)


class TranscriptionEngine(_ThreadEngine):
    """`Transcription` on faster-whisper."""

    def __init__(self, transcriber: WhisperTranscriber, *, max_queue: int = 16) -> None:
        super().__init__(transcriber.model_id, "faster-whisper", str(transcriber.model_dir), max_queue)
        self.transcriber = transcriber

    async def transcribe(self, audio: bytes, *, language: str | None = None, prompt: str | None = None,
                         translate: bool = False, temperature: float = 0.0, word_timestamps: bool = False,
                         vad_filter: bool = False, beam_size: int = 5) -> SegmentStream:
        self._admit()
        try:
            transcript = await self._run(self._start, audio, language=language, prompt=prompt,
                                         task="translate" if translate else "transcribe", temperature=temperature,
                                         word_timestamps=word_timestamps, vad_filter=vad_filter, beam_size=beam_size)
        except BaseException:
            self.jobs -= 1
            raise
        return SegmentStream(self, transcript)

    def _start(self, audio: bytes, **options):
        return self.transcriber.transcribe(decode_audio(audio), **options)

    async def transcribe_all(self, audio: bytes, **options) -> tuple[SegmentStream, list[Segment]]:
        """The whole transcript (the stream, already finished, and its segments)."""
        stream = await self.transcribe(audio, **options)
        async with stream:
            return stream, [segment async for segment in stream]

    def effective_args(self) -> dict:
        t = self.transcriber
        return {"device": t.device, "compute_type": t.compute_type, "threads": t.threads}


class SpeechSynthesisEngine(_ThreadEngine):
    """`SpeechSynthesis` on hibari."""

    def __init__(self, synthesizer: HibariSynthesizer, *, max_queue: int = 16) -> None:
        super().__init__(synthesizer.model_id, "hibari", max_queue=max_queue)
        self.synthesizer = synthesizer

    @property
    def sample_rate(self) -> int:
        return self.synthesizer.sample_rate

    def voices(self) -> list[str]:
        return [v.name for v in self.synthesizer.voices()] + sorted(self.synthesizer.voice_table)

    def effective_speed(self, speed: float) -> float:
        return self.synthesizer.effective_speed(speed)

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> ChunkStream:
        self._admit()
        try:
            # validation (voice, speed, empty text) and sentence splitting happen before any audio
            chunks, sentences = await self._run(self._start, text, voice, speed)
        except BaseException:
            self.jobs -= 1
            raise
        return ChunkStream(self, chunks, self.synthesizer.sample_rate, sentences)

    def _start(self, text: str, voice: str, speed: float):
        chunks = self.synthesizer.synthesize(text, voice, speed)
        return chunks, len(self.synthesizer.sentences(text))

    def effective_args(self) -> dict:
        return {"threads": self.synthesizer.threads, "voices": self.voices()}
