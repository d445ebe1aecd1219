"""Audio codecs (engines/speech/audio.py): every output format decodes back, every input format
decodes to 16 kHz mono, and anything that is not audio is an AudioDecodeError, nothing else."""

from __future__ import annotations

import os

import numpy as np
import pytest
from support.speech import probe, tone, write_file

from homeport.engines.speech.audio import OUTPUT_FORMATS, AudioEncoder, decode_audio, encode_audio, to_int16
from homeport.engines.speech.errors import AudioDecodeError
from homeport.errors import InvalidRequestError

SECONDS = 2.5


def _feed_in_chunks(encoder: AudioEncoder, samples: np.ndarray) -> tuple[bytes, int]:
    out, early = b"", 0
    for size in (7_000, 1_000, 24_000, 333, 10**9):  # uneven chunks, as sentences are
        chunk, samples = samples[:size], samples[size:]
        data = encoder.feed(chunk)
        early += len(data)
        out += data
    return out + encoder.finish(), early


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("fmt", [f for f in OUTPUT_FORMATS if f != "pcm"])
def test_every_format_decodes_back(fmt, streaming):
    data, early = _feed_in_chunks(AudioEncoder(fmt, 24_000, streaming=streaming), tone(SECONDS))
    rate, channels, seconds = probe(data)
    assert rate == (48_000 if fmt == "opus" else 24_000)  # Opus always decodes at 48 kHz
    assert channels == 1
    assert seconds == pytest.approx(SECONDS, rel=0.05)
    assert len(decode_audio(data)) / 16_000 == pytest.approx(SECONDS, rel=0.05)
    if streaming:
        assert early > 0, "nothing came out before finish(): not incremental"


def test_pcm_is_raw_s16le_mono_at_the_input_rate():
    samples = tone(SECONDS)
    encoder = AudioEncoder("pcm", 24_000)
    data, early = _feed_in_chunks(encoder, samples)
    assert early == len(data) == 2 * len(samples)
    decoded = np.frombuffer(data, dtype="<i2")
    np.testing.assert_array_equal(decoded, to_int16(samples))
    assert encoder.media_type == "audio/pcm"


def test_int16_input_and_whole_file_wav_has_exact_sizes():
    pcm = to_int16(tone(1.0))
    data = encode_audio(pcm, "wav")
    assert len(data) == 44 + 2 * len(pcm)
    assert int.from_bytes(data[40:44], "little") == 2 * len(pcm)


def test_unknown_output_format():
    with pytest.raises(ValueError):
        AudioEncoder("ogg-vorbis")


INPUTS = {  # name: (muxer, codec)
    "wav": ("wav", "pcm_s16le"), "mp3": ("mp3", "libmp3lame"), "m4a": ("ipod", "aac"), "mp4": ("mp4", "aac"),
    "ogg-opus": ("ogg", "libopus"), "ogg-vorbis": ("ogg", "vorbis"), "webm": ("webm", "libopus"),
    "flac": ("flac", "flac"), "mpeg": ("mpeg", "mp2"), "aac": ("adts", "aac"),
}


@pytest.mark.parametrize("name", INPUTS)
def test_input_formats_decode_to_16k_mono(name):
    muxer, codec = INPUTS[name]
    rate = 48_000 if "opus" in codec else 44_100
    data = write_file(tone(SECONDS, rate, channels=2), muxer, codec, rate)
    samples = decode_audio(data)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / 16_000 == pytest.approx(SECONDS, rel=0.05)
    assert 0.05 < np.abs(samples).max() <= 1.0


def _mp3_with_header() -> bytes:
    return write_file(tone(4.0), "mp3", "libmp3lame")  # seekable: LAME's Info frame states the length


BAD_INPUTS = {
    "empty": lambda: b"",
    "random": lambda: os.urandom(20_000),
    "random small": lambda: os.urandom(7),
    "text": lambda: b"this is not audio, just some text\n" * 100,
    "json": lambda: b'{"file": "audio.mp3"}',
    "zeros": lambda: bytes(50_000),
    "mp3 cut to 100 bytes": lambda: _mp3_with_header()[:100],
    "mp3 cut in half": lambda: (lambda d: d[: len(d) // 2])(_mp3_with_header()),
    "wav header only": lambda: encode_audio(tone(1.0), "wav")[:44],
    "wav cut in half": lambda: (lambda d: d[: len(d) // 2])(encode_audio(tone(3.0), "wav")),
    "flac cut in half": lambda: (lambda d: d[: len(d) // 2])(encode_audio(tone(3.0), "flac")),
    "m4a cut in half": lambda: (lambda d: d[: len(d) // 2])(write_file(tone(3.0), "ipod", "aac")),
    "webm cut in half": lambda: (lambda d: d[: len(d) // 2])(write_file(tone(3.0), "webm", "libopus")),
    "video-less png": lambda: b"\x89PNG\r\n\x1a\n" + os.urandom(2000),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_not_audio_is_an_audio_decode_error(name):
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(BAD_INPUTS[name]())
    assert isinstance(info.value, InvalidRequestError) and info.value.status_code == 400
    assert info.value.code == "invalid_audio"


def test_many_random_inputs_never_raise_anything_else():
    rng = np.random.default_rng(0)
    good = encode_audio(tone(1.0), "mp3")
    for i in range(40):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 200))):  # damage the file here and there
            data[pos] = int(rng.integers(0, 256))
        try:
            decode_audio(bytes(data[: int(rng.integers(1, len(data)))]))
        except AudioDecodeError:
            pass


def test_max_seconds():
    data = encode_audio(tone(3.0), "wav")
    assert len(decode_audio(data, max_seconds=5)) > 0
    with pytest.raises(AudioDecodeError, match="longer than"):
        decode_audio(data, max_seconds=1)


def test_a_streamed_mp3_cut_mid_frame_is_truncated():
    # a streamed mp3 has no Xing header with its length: the cut shows in the last frame's header
    encoder = AudioEncoder("mp3")
    mp3 = encoder.feed(tone(2.0)) + encoder.finish()
    assert decode_audio(mp3).size > 0
    first_frame = 72 * 64_000 // 24_000  # MPEG-2 layer III at 64 kb/s, 24 kHz
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio(mp3[: first_frame * 5 + 17])
