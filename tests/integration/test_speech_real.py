"""Speech engines on the real models, offline: hibari speaks, Whisper base (assembled from its two
wheels) listens. Round-trip word error rates, timestamps, translation, early stop, and the async
capability engines of engines/capabilities.py."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup would fail the test instead of downloading

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from support.speech import word_error_rate  # noqa: E402

from homeport.engines.speech import packaged  # noqa: E402

pytestmark = pytest.mark.skipif(
    not packaged.whisper_base_available() or not __import__("importlib").util.find_spec("hibari"),
    reason="the speech extra is not installed",
)

SENTENCES = [
    "The weather today is sunny with a light breeze.",
    "Please send the report to my office before noon.",
    "She bought 3 apples and 12 oranges at the market.",
    "Our train leaves from the central station every morning.",
    "Reading a good book is a wonderful way to relax.",
]


@pytest.fixture(scope="module")
def tts():
    from homeport.engines.speech.hibari import HibariSynthesizer

    return HibariSynthesizer()


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    from homeport.engines.speech.whisper import WhisperTranscriber

    return WhisperTranscriber(packaged.whisper_base_dir(tmp_path_factory.mktemp("speech")), device="cpu", threads=2)


def _speak(tts, text: str, fmt: str = "wav") -> bytes:
    from homeport.engines.speech.audio import AudioEncoder

    encoder = AudioEncoder(fmt, tts.sample_rate)
    return b"".join(encoder.feed(chunk) for chunk in tts.synthesize(text, "alloy", 1.0, seed=0)) + encoder.finish()


def _listen(data: bytes) -> np.ndarray:
    from homeport.engines.speech.audio import decode_audio

    return decode_audio(data)


@pytest.mark.parametrize("index", range(len(SENTENCES)))
def test_round_trip_word_error_rate(tts, whisper, index):
    sentence = SENTENCES[index]
    fmt = ("mp3", "opus", "aac", "flac", "wav")[index]  # through every lossy and lossless codec on the way
    transcript = whisper.transcribe(_listen(_speak(tts, sentence, fmt)), language="en", beam_size=1)
    text = "".join(segment.text for segment in transcript)
    assert word_error_rate(sentence, text) <= 0.10, f"{sentence!r} heard as {text!r}"


@pytest.fixture(scope="module")
def long_audio(tts) -> np.ndarray:
    return _listen(_speak(tts, " ".join(SENTENCES[:3])))


def test_segments_are_monotonic_cover_the_audio_and_have_words(whisper, long_audio):
    duration = len(long_audio) / 16_000
    transcript = whisper.transcribe(long_audio, word_timestamps=True, beam_size=1)
    assert transcript.language == "en" and transcript.duration == pytest.approx(duration, abs=0.01)
    segments = list(transcript)
    assert segments and [s.id for s in segments] == list(range(1, len(segments) + 1))
    assert segments[0].start <= 1.0 and segments[-1].end >= duration - 1.0
    for previous, segment in zip([None, *segments], segments):
        assert 0 <= segment.start <= segment.end <= duration
        if previous is not None:
            assert segment.start >= previous.end - 0.01
        assert segment.tokens and segment.avg_logprob < 0 and segment.temperature == 0.0
        assert 0 <= segment.no_speech_prob <= 1 and segment.compression_ratio > 0
        assert segment.words
        starts = [w.start for w in segment.words]
        assert starts == sorted(starts)
        assert all(segment.start - 0.01 <= w.start <= w.end <= segment.end + 0.01 for w in segment.words)
        assert all(0 <= w.probability <= 1 for w in segment.words)
    words = [w.word for s in segments for w in s.words]
    assert word_error_rate(" ".join(SENTENCES[:3]), "".join(words)) <= 0.10
    assert whisper.counters.completed >= 1


def test_no_words_unless_asked(whisper, long_audio):
    segment = next(iter(whisper.transcribe(long_audio[: 16_000 * 3], language="en", beam_size=1)))
    assert segment.words is None


def test_translate_task_runs(whisper, long_audio):
    transcript = whisper.transcribe(long_audio[: 16_000 * 4], task="translate", language="en", beam_size=1)
    assert "weather" in "".join(s.text for s in transcript).lower()


def test_stopping_early_is_counted_as_cancelled(whisper, long_audio):
    before = whisper.counters.cancelled
    with whisper.transcribe(long_audio, language="en", beam_size=1, temperature=0.3) as transcript:
        next(transcript)
    assert whisper.counters.cancelled == before + 1 and whisper.counters.active == 0
    assert list(transcript) == []


def test_bad_options(whisper, long_audio):
    from homeport.engines.speech.errors import AudioDecodeError
    from homeport.errors import InvalidRequestError

    for kwargs, param in (({"language": "xx"}, "language"), ({"task": "summarize"}, "task"),
                          ({"temperature": 1.5}, "temperature")):
        with pytest.raises(InvalidRequestError) as info:
            whisper.transcribe(long_audio, **kwargs)
        assert info.value.param == param
    with pytest.raises(AudioDecodeError):
        whisper.transcribe(np.zeros(0, np.float32))


def test_a_folder_without_a_model_is_an_error_not_a_download(tmp_path):
    from homeport.engines.speech.errors import SpeechModelError
    from homeport.engines.speech.whisper import WhisperTranscriber

    with pytest.raises(SpeechModelError):
        WhisperTranscriber(tmp_path / "base")


async def test_capability_engines(tts, whisper):
    from homeport.engines.capabilities import SpeechSynthesis, Transcription
    from homeport.engines.speech.audio import encode_audio
    from homeport.engines.speech.engine import SpeechSynthesisEngine, TranscriptionEngine

    speaker, listener = SpeechSynthesisEngine(tts), TranscriptionEngine(whisper)
    assert isinstance(speaker, SpeechSynthesis) and isinstance(listener, Transcription)
    chunks = await speaker.synthesize(SENTENCES[1], voice="echo", speed=1.0)
    async with chunks:
        pcm = np.concatenate([chunk async for chunk in chunks])
    assert chunks.sample_rate == 24_000 and pcm.dtype == np.int16 and pcm.size > 24_000
    stream, segments = await listener.transcribe_all(encode_audio(pcm, "wav", 24_000), beam_size=1)
    assert stream.language == "en" and segments
    assert word_error_rate(SENTENCES[1], "".join(s.text for s in segments)) <= 0.10
    assert listener.stats().completed == 1 and speaker.stats().completed == 1 and listener.stats().active == 0

    # stopping a stream early stops the job: nothing more is synthesized, the job is counted cancelled
    long = await speaker.synthesize(" ".join(SENTENCES), voice="alloy")
    assert long.sentences == len(SENTENCES) and speaker.stats().active == 1
    async for _ in long:
        break
    await long.aclose()
    assert speaker.stats().active == 0 and speaker.stats().cancelled == 1
    assert next(long._items, None) is None  # the generator is closed
    await speaker.close()
    await listener.close()
