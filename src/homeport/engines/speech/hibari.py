"""Text to speech with hibari-tts (Apache-2.0; 24 kHz mono; an 8 MB ONNX model per voice).

Only the voices inside the hibari wheel are reachable (today: "heart", American English, female).
hibari fetches its other voices from the Hugging Face hub on first use; homeport is offline, so
those are refused with `UnknownVoiceError`, and hibari's download path is never called (the model
file is passed to it explicitly).

OpenAI's voice names map to bundled voices through a table (`DEFAULT_VOICE_TABLE`; the constructor
takes another). A name is resolved as: a bundled hibari voice, then the table, else refused.

Speed: OpenAI allows 0.25–4.0; hibari's own control (durations divided by the speed) is made for
0.5–2.0, so speeds outside it are clamped to it (`effective_speed`). The pitch stays the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from homeport.engines.speech.errors import UnknownVoiceError
from homeport.engines.speech.normalize import normalize_text
from homeport.errors import InvalidRequestError

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
# every OpenAI voice → the one voice hibari bundles; a later setting lets users change this table
DEFAULT_VOICE_TABLE: dict[str, str] = {name: "heart" for name in OPENAI_VOICES}
SPEED_RANGE = (0.25, 4.0)  # what callers may ask for (OpenAI's range)
ENGINE_SPEED_RANGE = (0.5, 2.0)  # what hibari's speed control is made for; requests are clamped to it


@dataclass(frozen=True)
class Voice:
    name: str
    language: str  # BCP 47, e.g. "en-US"
    gender: str
    accent: str


def _registry() -> dict:
    from hibari.voices import VOICES

    return VOICES


class HibariSynthesizer:
    """Speech from text, one float32 chunk per sentence (`synthesize`)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, *, voice_table: Mapping[str, str] | None = None, threads: int = 1,
                 normalize: bool = True, model_id: str = "hibari") -> None:
        registry = _registry()
        self._bundled = {name: v for name, v in registry.items() if v.get("bundled")}
        self._download_only = {name for name, v in registry.items() if not v.get("bundled")}
        if not self._bundled:
            raise UnknownVoiceError("this hibari-tts installation has no bundled voice")
        table = dict(DEFAULT_VOICE_TABLE if voice_table is None else voice_table)
        for alias, target in table.items():
            if target not in self._bundled:
                raise ValueError(f"voice table: {alias!r} maps to {target!r}, which is not a bundled hibari voice "
                                 f"({', '.join(self._bundled)})")
        self.voice_table = {alias.lower(): target for alias, target in table.items()}
        self.threads = threads
        self.normalize = normalize
        self.model_id = model_id
        self._models: dict[str, object] = {}
        self._load_lock = threading.Lock()
        self._g2p_lock = threading.Lock()  # hibari's G2P is plain Python with caches: one sentence at a time
        for name in self._bundled:
            self._model(name)

    def voices(self) -> list[Voice]:
        """The voices this engine speaks with (bundled ones only)."""
        return [Voice(name, v["language"], v["gender"], v["accent"]) for name, v in self._bundled.items()]

    def resolve_voice(self, name: str) -> str:
        """A bundled voice name for a hibari voice name or a table alias (OpenAI's voices)."""
        key = (name or "").strip().lower()
        if key in self._bundled:
            return key
        if key in self.voice_table:
            return self.voice_table[key]
        if key in self._download_only:
            raise UnknownVoiceError(f"voice {name!r} is not available: hibari downloads it on first use and "
                                    "homeport runs offline; available: " + self._available())
        raise UnknownVoiceError(f"unknown voice {name!r}; available: " + self._available())

    def _available(self) -> str:
        return ", ".join([*self._bundled, *sorted(self.voice_table)])

    @staticmethod
    def effective_speed(speed: float) -> float:
        """The speed hibari is run at for a requested one (validated, then clamped to 0.5–2.0)."""
        if not isinstance(speed, (int, float)) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise InvalidRequestError(f"speed must be between {SPEED_RANGE[0]} and {SPEED_RANGE[1]}", param="speed")
        return float(min(max(speed, ENGINE_SPEED_RANGE[0]), ENGINE_SPEED_RANGE[1]))

    def sentences(self, text: str) -> list[str]:
        """The text as the engine will speak it: normalised, split into sentences."""
        from hibari import Hibari

        return Hibari.split_sentences(normalize_text(text) if self.normalize else text)

    def synthesize(self, text: str, voice: str = "heart", speed: float = 1.0, *,
                   seed: int | None = None) -> Iterator[np.ndarray]:
        """Mono float32 chunks at 24 kHz, one per sentence, each as soon as it is synthesized.

        Validation (voice, speed, empty text) happens here, before the first chunk; stop iterating
        to stop synthesis. `seed` fixes the noise component (same text, same audio)."""
        if not text or not text.strip():
            raise InvalidRequestError("the text to speak is empty", param="input")
        model = self._model(self.resolve_voice(voice))
        rate = self.effective_speed(speed)
        return self._chunks(model, self.sentences(text), rate, np.random.default_rng(seed))

    def _chunks(self, model, sentences: list[str], speed: float, rng) -> Iterator[np.ndarray]:
        for sentence in sentences:
            with self._g2p_lock:
                phonemes = model.phonemize(sentence)
            for ps in phonemes:
                audio = model.from_ids(model.ids(ps), speed, rng)
                if audio.size:
                    yield np.asarray(audio, dtype=np.float32)

    def _model(self, name: str):
        with self._load_lock:
            model = self._models.get(name)
            if model is None:
                from hibari import Hibari
                from hibari.voices import voice_path

                # explicit path: hibari's own lookup would download a voice that is not bundled
                model = Hibari(voice=name, model=voice_path(name, download_missing=False), threads=self.threads)
                model.from_ids(model.ids(model.phonemize("Warm up.")[0]))  # onnxruntime's first run is slow
                self._models[name] = model
                log.info("speech: hibari voice %s loaded", name)
            return model
