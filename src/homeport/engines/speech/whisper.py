"""Transcription with faster-whisper (CTranslate2), loaded from a folder: never from the hub.

`WhisperTranscriber(folder)` loads once; `transcribe(samples)` takes mono float32 at 16 kHz
(`audio.decode_audio` gives that) and returns a `Transcript`: the detected language and duration
at once, the segments lazily as the model produces them (iterate, and stop or `close()` early to
cancel; nothing more is decoded). Blocking: run it in a worker thread. One model serves one
transcription at a time unless built with `workers` > 1.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from homeport.engines.speech.audio import WHISPER_SAMPLE_RATE
from homeport.engines.speech.errors import AudioDecodeError, SpeechModelError
from homeport.errors import EngineError, InvalidRequestError

log = logging.getLogger(__name__)

# Whisper's fallback schedule: temperature 0 first, higher ones when a window's output looks wrong
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TASKS = ("transcribe", "translate")


class Word(NamedTuple):
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int  # the decoding window's offset, in 10 ms frames (as OpenAI's verbose_json gives it)
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: tuple[int, ...]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: tuple[Word, ...] | None  # only with word_timestamps=True


class Transcript:
    """Iterator of `Segment`s, with what is known before the first one (language, duration)."""

    def __init__(self, segments: Iterator, info, counters: _Counters) -> None:
        self.language: str = info.language
        self.language_probability: float = float(info.language_probability)
        self.duration: float = float(info.duration)  # seconds of audio
        self.duration_after_vad: float = float(info.duration_after_vad)
        self._segments = segments
        self._counters = counters
        self._done = False
        counters.started()

    def __iter__(self) -> Transcript:
        return self

    def __next__(self) -> Segment:
        if self._done:
            raise StopIteration
        try:
            s = next(self._segments)
        except StopIteration:
            self._finish("completed")
            raise
        except Exception as exc:
            self._finish("failed")
            log.warning("speech: transcription failed (%s)", type(exc).__name__)
            raise EngineError("transcription failed inside the speech model") from exc
        end = min(float(s.end), self.duration)  # Whisper's timestamps step 20 ms and can pass the end
        words = None if s.words is None else tuple(
            Word(min(float(w.start), end), min(float(w.end), end), w.word, float(w.probability)) for w in s.words)
        return Segment(id=s.id, seek=int(s.seek), start=min(float(s.start), end), end=end, text=s.text, tokens=tuple(s.tokens),
                       avg_logprob=float(s.avg_logprob), compression_ratio=float(s.compression_ratio),
                       no_speech_prob=float(s.no_speech_prob), temperature=float(s.temperature or 0.0), words=words)

    def close(self) -> None:
        """Stop here: the rest of the audio is not decoded."""
        if not self._done:
            self._finish("cancelled")
            close = getattr(self._segments, "close", None)
            if close is not None:
                close()

    def _finish(self, how: str) -> None:
        self._done = True
        self._counters.ended(how, self.duration)

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._done:
            self._finish("cancelled")


class _Counters:
    """Counts only (no text): transcriptions by outcome and seconds of audio finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = self.completed = self.cancelled = self.failed = 0
        self.audio_seconds = 0.0

    def started(self) -> None:
        with self._lock:
            self.active += 1

    def ended(self, how: str, seconds: float) -> None:
        with self._lock:
            self.active -= 1
            setattr(self, how, getattr(self, how) + 1)
            if how == "completed":
                self.audio_seconds += seconds


class WhisperTranscriber:
    """Speech to text on a CTranslate2 Whisper model in `model_dir`.

    device: "cpu", "cuda" or "auto" (CUDA when CTranslate2 sees a GPU). compute_type: CTranslate2's
    ("int8" by default on CPU, "float16" on CUDA). threads: CPU threads (0: CTranslate2's default).
    """

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "auto", compute_type: str | None = None,
                 threads: int = 0, workers: int = 1, model_id: str = "whisper-base") -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        folder = Path(model_dir)
        if not (folder / "model.bin").is_file() or not (folder / "tokenizer.json").is_file():
            # WhisperModel would take a missing folder for a hub model name and try to download it
            raise SpeechModelError(f"no Whisper model (model.bin and tokenizer.json) in {folder}")
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu, cuda or auto, not {device!r}")
        self.device = device
        self.compute_type = compute_type or ("int8" if device == "cpu" else "float16")
        self.threads = threads
        self.model_id = model_id
        self.model_dir = folder
        try:
            self._model = WhisperModel(str(folder), device=device, compute_type=self.compute_type,
                                       cpu_threads=threads, num_workers=workers, local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise SpeechModelError(f"could not load the Whisper model in {folder} ({type(exc).__name__})") from exc
        self.counters = _Counters()
        log.info("speech: Whisper model %s loaded (%s, %s)", model_id, device, self.compute_type)

    @property
    def sample_rate(self) -> int:
        return WHISPER_SAMPLE_RATE

    @property
    def multilingual(self) -> bool:
        return self._model.model.is_multilingual

    @property
    def languages(self) -> tuple[str, ...]:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return tuple(_LANGUAGE_CODES) if self.multilingual else ("en",)

    def transcribe(self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None,
                   temperature: float = 0.0, task: str = "transcribe", word_timestamps: bool = False,
                   vad_filter: bool = False, beam_size: int = 5) -> Transcript:
        """Start transcribing mono float32 samples at 16 kHz. Language detection (when `language`
        is None) runs here; the segments come as the returned `Transcript` is iterated.

        temperature 0 is Whisper's fallback schedule (0, 0.2, … 1.0, used when a window's output
        fails the compression-ratio or log-probability checks); any other value is used alone.
        task "translate" gives English text from speech in any language.
        """
        samples = np.asarray(audio)
        if samples.ndim != 1 or samples.dtype.kind != "f":
            raise ValueError("audio must be a one-dimensional float array (mono, 16 kHz)")
        if samples.size == 0:
            raise AudioDecodeError("the audio contains no samples")
        if task not in TASKS:
            raise InvalidRequestError(f"task must be one of {', '.join(TASKS)}", param="task")
        if language is not None:
            language = language.strip().lower()
            if language not in self.languages:
                raise InvalidRequestError(f"unsupported language {language!r} (ISO-639-1 codes Whisper knows)",
                                          param="language")
        if not 0.0 <= temperature <= 1.0:
            raise InvalidRequestError("temperature must be between 0 and 1", param="temperature")
        temperatures = FALLBACK_TEMPERATURES if temperature == 0 else (float(temperature),)
        try:
            segments, info = self._model.transcribe(
                samples.astype(np.float32, copy=False), language=language, task=task, beam_size=beam_size,
                temperature=list(temperatures), initial_prompt=prompt or None, word_timestamps=word_timestamps,
                vad_filter=vad_filter, condition_on_previous_text=True,
            )
        except Exception as exc:
            log.warning("speech: transcription failed to start (%s)", type(exc).__name__)
            raise EngineError("transcription failed inside the speech model") from exc
        return Transcript(segments, info, self.counters)
