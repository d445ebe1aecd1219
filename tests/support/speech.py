"""Speech engine tests: test signals, files written with PyAV directly, and word error rates."""

from __future__ import annotations

import io

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the speech extra is not installed")


def tone(seconds: float, rate: int = 24_000, channels: int = 1) -> np.ndarray:
    """A gliding tone with an envelope (speech-like enough for the codecs), float32 in [-0.5, 0.5]."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = 180 + 60 * np.sin(2 * np.pi * 0.7 * t)
    signal = 0.5 * np.sin(2 * np.pi * pitch * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    signal = signal.astype(np.float32)
    return signal if channels == 1 else np.stack([signal] * channels)


def write_file(samples: np.ndarray, muxer: str, codec: str, rate: int = 24_000) -> bytes:
    """A whole file as other software writes one (seekable output: headers carry the length)."""
    samples = np.atleast_2d(samples)
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        options = {"strict": "experimental"} if codec == "vorbis" else None  # FFmpeg's own vorbis encoder
        stream = container.add_stream(codec, rate=rate, layout=layout, options=options)
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def probe(data: bytes) -> tuple[int, int, float]:
    """(sample rate, channels, seconds) of a file, decoded by PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, stream.channels, samples / stream.rate


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, after normalising both sides alike
    (lowercase, punctuation stripped, numbers as words)."""
    from homeport.engines.speech.normalize import words_for_comparison

    ref, hyp = words_for_comparison(reference), words_for_comparison(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))
