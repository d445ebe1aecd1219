"""hibari synthesis (real model, bundled voice): voices, OpenAI names, refusals, speed, sentences."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hibari", reason="the speech extra is not installed")

from homeport.engines.speech.errors import UnknownVoiceError  # noqa: E402
from homeport.engines.speech.hibari import (  # noqa: E402
    DEFAULT_VOICE_TABLE,
    OPENAI_VOICES,
    SAMPLE_RATE,
    HibariSynthesizer,
)
from homeport.errors import InvalidRequestError  # noqa: E402


@pytest.fixture(scope="module")
def tts() -> HibariSynthesizer:
    return HibariSynthesizer()


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    import hibari.voices

    def refuse(*args, **kwargs):
        raise AssertionError("hibari tried to download a voice")

    monkeypatch.setattr(hibari.voices, "download", refuse)


def test_only_bundled_voices(tts):
    assert [v.name for v in tts.voices()] == ["heart"]
    assert tts.sample_rate == SAMPLE_RATE == 24_000


@pytest.mark.parametrize("name", OPENAI_VOICES)
def test_openai_voices_map_to_bundled_ones(tts, name):
    assert set(DEFAULT_VOICE_TABLE) == set(OPENAI_VOICES)
    assert tts.resolve_voice(name) == "heart"
    assert tts.resolve_voice(name.upper()) == "heart"


@pytest.mark.parametrize("name", ["emma", "fenrir", "kore"])
def test_download_only_voices_are_refused(tts, name):
    with pytest.raises(UnknownVoiceError, match="offline") as info:
        tts.resolve_voice(name)
    assert info.value.status_code == 400 and info.value.param == "voice"
    with pytest.raises(UnknownVoiceError):
        tts.synthesize("Hello.", name)


def test_fable_is_openais_voice_not_hibaris_download():
    # hibari's "fable" needs a download; OpenAI's "fable" goes through the table to a bundled voice
    assert HibariSynthesizer().resolve_voice("fable") == "heart"


@pytest.mark.parametrize("name", ["", "nobody", "heart2"])
def test_unknown_voice(tts, name):
    with pytest.raises(UnknownVoiceError, match="available: heart"):
        tts.resolve_voice(name)


def test_voice_table_is_a_constructor_argument():
    tts = HibariSynthesizer(voice_table={"narrator": "heart"})
    assert tts.resolve_voice("narrator") == "heart"
    with pytest.raises(UnknownVoiceError):
        tts.resolve_voice("alloy")
    with pytest.raises(ValueError, match="not a bundled"):
        HibariSynthesizer(voice_table={"alloy": "emma"})


def test_speed_is_validated_then_clamped_to_hibaris_range(tts):
    assert [tts.effective_speed(s) for s in (0.25, 0.5, 1.0, 1.7, 2.0, 4.0)] == [0.5, 0.5, 1.0, 1.7, 2.0, 2.0]
    for bad in (0.2, 4.5, 0, -1):
        with pytest.raises(InvalidRequestError) as info:
            tts.synthesize("Hello.", "alloy", bad)
        assert info.value.param == "speed"


def test_speed_changes_duration(tts):
    def seconds(speed):
        return sum(len(c) for c in tts.synthesize("A sentence of moderate length.", "alloy", speed, seed=0)) / 24_000

    slow, normal, fast = seconds(0.5), seconds(1.0), seconds(2.0)
    assert slow > 1.6 * normal and fast < 0.65 * normal


def test_one_chunk_per_sentence(tts):
    text = "First sentence here. Dr. Smith paid $9.99 on the 3rd of May! Is that right?\n\nYes."
    assert tts.sentences(text) == ["First sentence here.", "Dr. Smith paid nine dollars and ninety-nine cents "
                                   "on the third of May!", "Is that right?", "Yes."]
    chunks = list(tts.synthesize(text, "nova", 1.0, seed=1))
    assert len(chunks) == 4
    assert all(c.dtype == np.float32 and c.ndim == 1 and len(c) > 0.2 * 24_000 for c in chunks)
    assert max(float(np.abs(c).max()) for c in chunks) <= 1.5


def test_same_seed_same_audio(tts):
    a = np.concatenate(list(tts.synthesize("Same text.", "heart", seed=3)))
    b = np.concatenate(list(tts.synthesize("Same text.", "heart", seed=3)))
    np.testing.assert_array_equal(a, b)


def test_empty_text(tts):
    with pytest.raises(InvalidRequestError) as info:
        tts.synthesize("  \n ", "alloy")
    assert info.value.param == "input"
