"""Audio codecs with PyAV (FFmpeg's libraries, inside the `av` wheel; no ffmpeg executable).

- `decode_audio(data)`: any of wav, mp3/mpga, m4a/mp4, ogg (opus, vorbis), webm, flac, mpeg, aac
  from bytes → mono float32 at 16 kHz (Whisper's input), resampled by PyAV. Anything that is not
  readable audio (empty, not a known format, no audio stream, damaged or truncated data, no
  samples) is an `AudioDecodeError`, never another exception type.
- `AudioEncoder(format)`: float32 or int16 PCM → mp3, opus (in ogg), aac (ADTS), flac, wav, or
  pcm (raw signed 16-bit little-endian mono at the input rate, 24 kHz for speech, as OpenAI's).
  Incremental: `feed(samples)` returns the bytes ready so far, `finish()` the rest, so sentence
  chunks can be sent while later ones are synthesized.
"""

from __future__ import annotations

import io
import logging
import struct

import numpy as np

from homeport.engines.speech.errors import AudioDecodeError, AudioEncodeError

log = logging.getLogger(__name__)

WHISPER_SAMPLE_RATE = 16_000
# container formats accepted on input (FFmpeg's demuxer names; "mov,mp4,m4a,3gp,3g2,mj2" is one)
_INPUT_FORMATS = {"wav", "mp3", "mov", "mp4", "m4a", "3gp", "ogg", "matroska", "webm", "flac", "mpeg", "aac"}
# output format → (FFmpeg muxer, encoder, bit rate); wav and pcm are written here, not by FFmpeg
_CODECS = {"mp3": ("mp3", "libmp3lame", 64_000), "opus": ("ogg", "libopus", 32_000),
           "aac": ("adts", "aac", 64_000), "flac": ("flac", "flac", None)}
OUTPUT_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}


def decode_audio(data: bytes, *, sample_rate: int = WHISPER_SAMPLE_RATE,
                 max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples at `sample_rate` from an audio file's bytes."""
    if not data:
        raise AudioDecodeError("the audio file is empty")
    try:
        return _decode(bytes(data), sample_rate, max_seconds)
    except AudioDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg reports damage in many ways; the caller needs one
        log.debug("speech: audio decode failed (%s)", type(exc).__name__)
        raise AudioDecodeError("the file could not be decoded as audio (damaged, truncated or not audio)") from exc


def _decode(data: bytes, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise AudioDecodeError("the file is not audio homeport can read, or it is damaged or truncated "
                               "(formats: flac, m4a, mp3, mp4, mpeg, mpga, ogg, wav, webm)") from exc
    with container:
        names = set(container.format.name.split(","))
        if not names & _INPUT_FORMATS:
            raise AudioDecodeError(f"the file is in a format homeport does not read ({container.format.name})")
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioDecodeError("the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        limit = None if max_seconds is None else int(max_seconds * sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                frame.pts = None  # timestamps of damaged files can jump; the resampler needs none
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += out.samples
                if limit is not None and total > limit:
                    raise AudioDecodeError(f"the audio is longer than {max_seconds:g} seconds")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
                total += out.samples
        except av.FFmpegError as exc:
            raise AudioDecodeError("the audio data is damaged or truncated") from exc
        declared = _declared_seconds(data, container, names)
    if total == 0:
        raise AudioDecodeError("the file contains no audio samples (empty or truncated)")
    held = total / sample_rate
    if declared is not None and held < 0.9 * declared and declared - held > 0.25:
        raise AudioDecodeError(f"the audio is truncated: the file declares {declared:.1f} s and holds {held:.1f} s")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.isfinite(samples).all():
        raise AudioDecodeError("the audio data is damaged (samples are not finite)")
    return samples


def _declared_seconds(data: bytes, container, names: set[str]) -> float | None:
    """The length a file states in its header, where it states one (so that a cut-off upload is
    an error rather than half a transcript). FFmpeg decodes what is there without complaint; it
    estimates mp3 lengths from the bit rate unless a Xing/Info/VBRI frame gives the frame count, and
    reports a wav file's length from its size, so those two are read here. Ogg and ADTS streams and
    mp3 without such a frame state no length: a cut there cannot be told from a short file."""
    if "wav" in names:
        return _wav_declared_seconds(data)
    if "mp3" in names and _mp3_last_frame_cut(data):
        raise AudioDecodeError("the mp3 file is truncated: its last frame is cut off")
    if names & {"mp3", "matroska", "webm"}:
        if "mp3" in names and not any(tag in data[:8192] for tag in (b"Xing", b"Info", b"VBRI")):
            return None
        return container.duration / 1_000_000 if container.duration else None
    return None


_MP3_BITRATES = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
                 2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_last_frame_cut(data: bytes) -> bool:
    """Walks the MPEG layer III frame headers: True when the last frame runs past the end of the
    data (an upload cut mid-frame, the usual truncation). Anything unexpected (other layers,
    free format, junk between frames) gives False: FFmpeg's own checks stand then."""
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F))
    end = len(data)
    if data[-128:-125] == b"TAG":  # an ID3v1 tag at the end
        end -= 128
    frames = 0
    while pos + 4 <= end:
        b1, b2 = data[pos + 1], data[pos + 2]
        version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
        if data[pos] != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer != 1:
            return False
        bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 3
        if bitrate_index in (0, 15) or rate_index == 3:
            return False
        bitrate = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index] * 1000
        rate = _MP3_RATES[version][rate_index]
        length = (144 if version == 3 else 72) * bitrate // rate + ((b2 >> 1) & 1)
        pos += length
        frames += 1
    return frames > 0 and pos > end


def _wav_declared_seconds(data: bytes) -> float | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"fmt " and pos + 16 <= len(data):
            byte_rate = struct.unpack("<I", data[pos + 16:pos + 20])[0] if pos + 20 <= len(data) else 0
        if chunk == b"data":
            if size in (0, 0xFFFFFFFF) or not byte_rate:  # streamed: length unknown
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)
    return None


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] (clipped) or int16 → int16."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.reshape(-1)
    return (np.clip(samples.reshape(-1).astype(np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)


def pcm_bytes(samples: np.ndarray) -> bytes:
    return to_int16(samples).astype("<i2", copy=False).tobytes()


class AudioEncoder:
    """One output stream in one format: `feed` chunks of mono samples, then `finish` once.

    `streaming=False` matters only for wav: the header then carries the exact length (everything
    comes from `finish`); streamed wav has the "unknown length" sizes (0xFFFFFFFF), which FFmpeg
    and browsers read to the end of the data.
    """

    def __init__(self, format: str, sample_rate: int = 24_000, *, streaming: bool = True) -> None:
        if format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown audio format {format!r}; one of {', '.join(OUTPUT_FORMATS)}")
        self.format = format
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[format]
        self.streaming = streaming
        self.samples_in = 0
        self._finished = False
        self._held = bytearray()  # wav, not streaming: the data until finish
        self._container = self._stream = self._sink = None
        if format in _CODECS:
            self._open_ffmpeg(*_CODECS[format])

    def _open_ffmpeg(self, muxer: str, codec: str, bit_rate: int | None) -> None:
        import av

        self._sink = _Sink()
        options = {"page_duration": "200000"} if muxer == "ogg" else {}  # ogg: a page every 0.2 s, not 1 s
        try:
            self._container = av.open(self._sink, mode="w", format=muxer, options=options)
            self._stream = self._container.add_stream(codec, rate=self.sample_rate, layout="mono")
            if bit_rate:
                self._stream.bit_rate = bit_rate
        except av.FFmpegError as exc:
            raise AudioEncodeError(f"the {self.format} encoder could not be opened") from exc

    def feed(self, samples: np.ndarray) -> bytes:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        pcm = to_int16(samples)
        if pcm.size == 0:
            return b""
        first_wav = self.format == "wav" and self.streaming and not self.samples_in
        header = self._wav_header(streamed=True) if first_wav else b""
        start = self.samples_in
        self.samples_in += pcm.size
        if self.format == "pcm":
            return pcm.astype("<i2", copy=False).tobytes()
        if self.format == "wav":
            data = pcm.astype("<i2", copy=False).tobytes()
            if not self.streaming:
                self._held += data
                return b""
            return header + data
        return self._encode(pcm, start)

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if self.format == "pcm":
            return b""
        if self.format == "wav":
            if self.streaming:
                return b"" if self.samples_in else self._wav_header(streamed=False)
            return self._wav_header(streamed=False, data_bytes=len(self._held)) + bytes(self._held)
        return self._encode(None, self.samples_in)

    def _encode(self, pcm: np.ndarray | None, pts: int) -> bytes:
        import av

        try:
            if pcm is None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
            else:
                frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate = self.sample_rate
                frame.pts = pts
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
        except av.FFmpegError as exc:
            raise AudioEncodeError(f"encoding {self.format} failed") from exc
        return self._sink.take()

    def _wav_header(self, *, streamed: bool, data_bytes: int = 0) -> bytes:
        data_size = 0xFFFFFFFF if streamed else data_bytes
        riff_size = 0xFFFFFFFF if streamed else 36 + data_bytes
        return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVEfmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, self.sample_rate, self.sample_rate * 2, 2, 16)
                + b"data" + struct.pack("<I", data_size))


def encode_audio(samples: np.ndarray, format: str, sample_rate: int = 24_000) -> bytes:
    """A whole file at once (wav with exact sizes)."""
    encoder = AudioEncoder(format, sample_rate, streaming=False)
    return encoder.feed(samples) + encoder.finish()


class _Sink:
    """A write-only file for PyAV's muxer: collects what it writes until taken."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out
