"""Speech benchmark: homeport's /v1/audio endpoints against the bare engines, in one run.

    .venv/bin/python bench/audio.py [--quick] [--write]

- Transcription: real-time factor (compute seconds per second of audio; lower is faster) of a
  ~17 s English passage through `POST /v1/audio/transcriptions` (upload, decode, Whisper base
  int8, JSON) against bare faster-whisper (`WhisperModel.transcribe` on the same folder, same
  beam size and threads, decoding the same file with its own `decode_audio`).
- Speech: seconds of audio per second of compute through `POST /v1/audio/speech` (wav, the
  whole response read) against bare hibari (`Hibari(text)` on the same voice), and homeport's
  time to the first audio byte against its time for the whole response.

The ratio columns are homeport over bare (≥ 0.9 means within 10 %). `--write` replaces the
speech section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from serving import free_port, wait_ready, write_section  # noqa: E402

PASSAGE = ("The weather today is sunny with a light breeze. Please send the report to my office before noon. "
           "She bought three apples and twelve oranges at the market. Our train leaves from the central station "
           "every morning. Reading a good book is a wonderful way to relax. ")
SECTION = "## Speech (issue 13)"
NOTE = ("homeport's times include the HTTP round trip (multipart upload and parsing, JSON; for speech the wav encoding and the chunked response); the target for both ratios is ≥ 0.9. Time to first byte is the first sentence, synthesized and sent while the rest is still being spoken.")


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bare_numbers(wav: bytes, text: str, repeats: int) -> dict:
    from faster_whisper import WhisperModel, decode_audio
    from hibari import Hibari
    from hibari.voices import voice_path

    from homeport.engines.speech import packaged

    model = WhisperModel(str(packaged.whisper_base_dir()), device="cpu", compute_type="int8", cpu_threads=0,
                         local_files_only=True)

    def transcribe():
        segments, _ = model.transcribe(decode_audio(io.BytesIO(wav)), beam_size=5, temperature=[0.0, 0.2, 0.4, 0.6,
                                                                                                 0.8, 1.0])
        list(segments)

    transcribe()  # warm-up
    stt = best(transcribe, repeats)
    voice = Hibari(voice="heart", model=voice_path("heart", download_missing=False), threads=1)
    voice("Warm up.")
    audio_seconds = len(voice(text)) / voice.sample_rate
    tts = best(lambda: voice(text), repeats)
    del model
    return {"stt_seconds": stt, "tts_seconds": tts, "tts_audio_seconds": audio_seconds}


def homeport_numbers(wav: bytes, text: str, repeats: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen([sys.executable, "-m", "homeport", "serve", "--api-port", str(port),
                                    "--user-data-dir", tmp, "--nowebui"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"{base}/health/ready", process)
            with httpx.Client(base_url=base, timeout=600) as http:
                def transcribe():
                    response = http.post("/v1/audio/transcriptions", files={"file": ("bench.wav", wav)},
                                         data={"model": "whisper-1"})
                    response.raise_for_status()

                transcribe()  # loads the model
                stt = best(transcribe, repeats)
                first_bytes, totals = [], []

                def speak():
                    started = time.perf_counter()
                    with http.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                                       "input": text, "response_format": "wav"}) as r:
                        r.raise_for_status()
                        first = None
                        for chunk in r.iter_raw():
                            if first is None and chunk:
                                first = time.perf_counter() - started
                    first_bytes.append(first)
                    totals.append(time.perf_counter() - started)

                speak()  # loads the voice
                first_bytes.clear(), totals.clear()
                for _ in range(repeats):
                    speak()
        finally:
            process.terminate()
            process.wait(30)
    return {"stt_seconds": stt, "tts_seconds": min(totals), "first_byte": statistics.median(first_bytes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat instead of three")
    parser.add_argument("--write", action="store_true", help="write the results into docs/benchmarks.md")
    options = parser.parse_args()
    repeats = 1 if options.quick else 3

    from hibari import Hibari
    from hibari.voices import voice_path

    from homeport.engines.speech.audio import encode_audio

    speaker = Hibari(voice="heart", model=voice_path("heart", download_missing=False), threads=1)
    samples = speaker(PASSAGE, seed=0)
    wav = encode_audio(samples, "wav", speaker.sample_rate)
    audio_seconds = len(samples) / speaker.sample_rate
    del speaker

    bare = bare_numbers(wav, PASSAGE, repeats)  # one system at a time: they share the cores
    served = homeport_numbers(wav, PASSAGE, repeats)
    rtf_bare, rtf_served = bare["stt_seconds"] / audio_seconds, served["stt_seconds"] / audio_seconds
    speed_bare = bare["tts_audio_seconds"] / bare["tts_seconds"]
    speed_served = bare["tts_audio_seconds"] / served["tts_seconds"]
    lines = [
        SECTION, "",
        f"`.venv/bin/python bench/audio.py --write`, {os.cpu_count()} cores, best of {repeats}; "
        f"{audio_seconds:.1f} s of English speech (hibari, then Whisper base int8, beam 5).", "",
        "| | bare engine | homeport | ratio (bare / homeport time) |", "|---|---|---|---|",
        f"| transcription real-time factor (lower is faster) | {rtf_bare:.3f} | {rtf_served:.3f} | "
        f"{rtf_bare / rtf_served:.2f} |",
        f"| speech: audio seconds per compute second | {speed_bare:.1f} | {speed_served:.1f} | "
        f"{speed_served / speed_bare:.2f} |",
        f"| speech: time to first audio byte / whole response | | {served['first_byte']:.3f} s / "
        f"{served['tts_seconds']:.3f} s | |", "",
        NOTE, "",
    ]
    text = "\n".join(lines)
    print(text)
    if options.write:
        write_section(ROOT / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    main()
