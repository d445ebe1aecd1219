"""The async speech engines over a fake synthesizer: streaming, early stop, the bounded queue."""

from __future__ import annotations

import numpy as np
import pytest

from homeport.engines.speech.engine import SpeechSynthesisEngine
from homeport.errors import ServiceUnavailableError


class FakeSynthesizer:
    model_id, sample_rate, threads, voice_table = "fake", 24_000, 1, {}

    def __init__(self) -> None:
        self.spoken = 0

    def voices(self):
        return []

    def sentences(self, text: str) -> list[str]:
        return text.split(".")[:-1]

    def effective_speed(self, speed: float) -> float:
        return min(max(speed, 0.5), 2.0)

    def synthesize(self, text: str, voice: str, speed: float):
        sentences = self.sentences(text)

        def chunks():
            for _ in sentences:
                self.spoken += 1
                yield np.full(240, 0.25, np.float32)

        return chunks()


async def test_chunks_stream_as_int16_and_stop_when_closed():
    fake = FakeSynthesizer()
    engine = SpeechSynthesisEngine(fake, max_queue=2)
    stream = await engine.synthesize("One. Two. Three.", voice="x")
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert [c.dtype for c in chunks] == [np.int16] * 3 and engine.stats().completed == 1
    early = await engine.synthesize("A. B. C. D. E.", voice="x")
    spoken_before = fake.spoken
    await anext(early)
    await early.aclose()
    assert fake.spoken == spoken_before + 1 and engine.stats().cancelled == 1 and engine.stats().active == 0
    await engine.close()


async def test_the_queue_is_bounded():
    engine = SpeechSynthesisEngine(FakeSynthesizer(), max_queue=2)
    open_streams = [await engine.synthesize("A.", voice="x") for _ in range(2)]
    with pytest.raises(ServiceUnavailableError):
        await engine.synthesize("A.", voice="x")
    await open_streams[0].aclose()
    again = await engine.synthesize("A.", voice="x")
    for stream in (open_streams[1], again):
        await stream.aclose()
    assert engine.stats().active == 0
    await engine.close()


async def test_the_voice_map_setting_reaches_the_engine(tmp_path):
    pytest.importorskip("hibari")
    from homeport.engines.speech.backends import HIBARI, speech_entries
    from homeport.errors import StartupError
    from homeport.settings import Settings

    settings = Settings(voice_map={"Robot": "heart"}, model_dir=tmp_path)
    entries = speech_entries(settings)
    assert entries["speech"].id == "hibari"
    engine = HIBARI.load(entries["speech"], settings, {})
    assert engine.synthesizer.resolve_voice("robot") == "heart" and "robot" in engine.voices()
    await engine.close()
    with pytest.raises(StartupError, match="voice_map"):
        HIBARI.load(entries["speech"], Settings(voice_map={"alloy": "emma"}), {})
    with pytest.raises(StartupError, match="stt-model"):
        speech_entries(Settings(stt_model=str(tmp_path / "missing"), model_dir=tmp_path))


def test_speech_folders_no_backend_serves_are_listed_not_taken_for_text(tmp_path):
    import json

    from homeport.registry.library import ModelLibrary

    (tmp_path / "whisper-hf").mkdir()
    (tmp_path / "whisper-hf" / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (tmp_path / "whisper-hf" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "piper").mkdir()
    (tmp_path / "piper" / "en.onnx").write_bytes(b"x")
    (tmp_path / "piper" / "en.onnx.json").write_text("{}")
    kinds = {e.id: (e.kind, e.capabilities) for e in ModelLibrary(tmp_path).scan()}
    assert kinds == {"whisper-hf": ("transcription", ()), "piper": ("speech", ())}
