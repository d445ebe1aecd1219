"""/v1/audio/* on a real `homeport serve` with the bundled models (Whisper base, hibari), driven
by the official openai client; bodies and events checked against the vendored OpenAI spec."""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import numpy as np
import openai
import pytest
from support.openapi import SpecValidator
from support.server import start_server, stop_server
from support.speech import probe, tone, word_error_rate, write_file
from support.sse import parse_sse

from homeport.engines.speech import packaged

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
LONG = " ".join(SENTENCES[:3])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("audio"))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.openai()


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    return SpecValidator()


@pytest.fixture(scope="module")
def long_wav(client) -> bytes:
    return client.audio.speech.create(model="tts-1", voice="alloy", input=LONG, response_format="wav").content


def _seconds(data: bytes) -> float:
    return probe(data)[2]


@pytest.mark.parametrize("index", range(len(SENTENCES)))
def test_speech_then_transcription_round_trip(client, spec, index):
    fmt = ("mp3", "opus", "aac", "flac", "wav")[index]
    audio = client.audio.speech.create(model="tts-1", voice="nova", input=SENTENCES[index], response_format=fmt).content
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=(f"a.{fmt}", audio),
                                                               language="en")
    body = json.loads(raw.http_response.text)
    spec.validate("CreateTranscriptionResponseJson", body)
    assert body["usage"]["type"] == "duration" and body["usage"]["seconds"] >= 1
    assert word_error_rate(SENTENCES[index], body["text"]) <= 0.10, body["text"]


def test_every_output_format_decodes_to_the_right_audio(client):
    reference = None
    for fmt in ("wav", "mp3", "opus", "aac", "flac", "pcm"):
        response = client.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input=SENTENCES[0],
                                                                response_format=fmt)
        data = response.http_response.content
        if fmt == "pcm":
            assert response.http_response.headers["content-type"].startswith("audio/pcm")
            rate, channels, seconds = 24_000, 1, len(data) / 2 / 24_000
            assert len(data) % 2 == 0
        else:
            rate, channels, seconds = probe(data)
        if fmt == "opus":  # Opus always decodes at 48 kHz; the stream's header keeps the input rate
            head = data.index(b"OpusHead")
            assert rate == 48_000 and int.from_bytes(data[head + 12:head + 16], "little") == 24_000
            rate = 24_000
        reference = reference or seconds
        assert (rate, channels) == (24_000, 1), fmt
        assert seconds == pytest.approx(reference, rel=0.05), fmt
    assert 1.5 < reference < 8


def test_pcm_is_signed_16_bit_little_endian(client, long_wav):
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.", response_format="pcm").content
    samples = np.frombuffer(pcm, dtype="<i2")
    assert samples.size > 2_400 and 0 < np.abs(samples).max() < 32_768 and np.abs(samples).mean() > 100


def _srt_times(text: str, mark: str) -> list[tuple[float, float]]:
    clock = r"(\d\d):(\d\d):(\d\d)" + re.escape(mark) + r"(\d\d\d)"
    found = re.findall(clock + " --> " + clock, text)
    as_seconds = lambda h, m, s, ms: int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000  # noqa: E731
    return [(as_seconds(*t[:4]), as_seconds(*t[4:])) for t in found]


def _monotonic_and_covering(spans: list[tuple[float, float]], duration: float) -> None:
    assert spans
    for (start, end), (next_start, _) in zip(spans, [*spans[1:], (duration, duration)]):
        assert 0 <= start <= end <= next_start + 1e-6 and end <= duration + 1e-6
    assert spans[0][0] <= 1.0 and spans[-1][1] >= duration - 1.0


def test_verbose_json_srt_and_vtt_timestamps(client, spec, long_wav):
    duration = _seconds(long_wav)
    verbose = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("long.wav", long_wav), response_format="verbose_json",
        timestamp_granularities=["word", "segment"])
    body = json.loads(verbose.http_response.text)
    spec.validate("CreateTranscriptionResponseVerboseJson", body)
    assert body["language"] == "english" and body["duration"] == pytest.approx(duration, rel=0.01)
    _monotonic_and_covering([(s["start"], s["end"]) for s in body["segments"]], duration)
    words = body["words"]
    assert len(words) >= len(LONG.split()) - 2
    _monotonic_and_covering([(w["start"], w["end"]) for w in words], duration)
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))

    srt = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav), response_format="srt")
    assert srt.startswith("1\n")
    _monotonic_and_covering(_srt_times(srt, ","), duration)
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    _monotonic_and_covering(_srt_times(vtt, "."), duration)
    text = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav), response_format="text")
    assert word_error_rate(LONG, text) <= 0.10
    no_words = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav),
                                                  response_format="verbose_json")
    assert no_words.words is None and no_words.segments


def test_translation_gives_english(client, spec, long_wav):
    result = client.audio.translations.with_raw_response.create(model="whisper-1", file=("long.wav", long_wav),
                                                                response_format="verbose_json")
    body = json.loads(result.http_response.text)
    spec.validate("CreateTranslationResponseVerboseJson", body)
    assert word_error_rate(LONG, body["text"]) <= 0.2
    plain = client.audio.translations.create(model="whisper-1", file=("long.wav", long_wav))
    assert plain.text.strip()


def test_streamed_transcription_sends_deltas_before_done(server, client, spec, long_wav):
    with server.http() as http:
        response = http.post("/v1/audio/transcriptions", files={"file": ("long.wav", long_wav)},
                             data={"model": "gpt-4o-transcribe", "stream": "true", "include[]": "logprobs"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events, done = parse_sse(response.text)
    assert done
    for event in events:
        spec.validate("CreateTranscriptionResponseStreamEvent", event)
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert deltas and all(e["logprobs"] for e in deltas)
    assert "".join(e["delta"] for e in deltas).strip() == events[-1]["text"]
    assert events[-1]["usage"]["output_tokens"] > 0
    # the official client reads the same stream
    streamed = list(client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav), stream=True))
    assert streamed[0].type == "transcript.text.delta" and streamed[-1].type == "transcript.text.done"
    assert word_error_rate(LONG, streamed[-1].text) <= 0.10


def test_speech_is_sent_sentence_by_sentence(server, client, spec):
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=LONG,
                                                            response_format="mp3") as response:
        assert response.headers.get("transfer-encoding") == "chunked" and "content-length" not in response.headers
        chunks = list(response.iter_bytes())
    assert sum(map(len, chunks)) > 0 and _seconds(b"".join(chunks)) > 5
    with server.http() as http:
        sse = http.post("/v1/audio/speech", json={"model": "gpt-4o-mini-tts", "voice": "alloy", "input": LONG,
                                                   "response_format": "wav", "stream_format": "sse"})
    assert sse.status_code == 200
    events, done = parse_sse(sse.text)
    assert done
    for event in events:
        spec.validate("CreateSpeechResponseStreamEvent", event)
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert events[-1]["type"] == "speech.audio.done"
    assert len(deltas) >= 3  # one per sentence at least: each sent as it was synthesized, not at the end
    assert _seconds(b"".join(base64.b64decode(e["audio"]) for e in deltas)) > 5


def test_ignored_parameters_are_named(server):
    with server.http() as http:
        response = http.post("/v1/audio/speech", json={"model": "tts-1", "voice": {"id": "nova"}, "input": "Hi there.",
                                                        "instructions": "Whisper it.", "speed": 4.0,
                                                        "response_format": "flac"})
    assert response.status_code == 200
    assert set(response.headers["x-homeport-ignored-parameters"].split(",")) == {"instructions", "speed"}
    assert probe(response.content)[0] == 24_000


def _error(response: httpx.Response, status: int, param: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error


def test_bad_input_is_a_clear_4xx_and_the_server_keeps_serving(server, client, long_wav):
    # an mp3 as a recorder writes one (with its length in a Xing header), cut in half
    mp3 = write_file(tone(4.0), "mp3", "libmp3lame")
    with server.http() as http:
        def post(data: bytes, **fields):
            return http.post("/v1/audio/transcriptions", files={"file": ("a.mp3", data)},
                             data={"model": "whisper-1", **fields})

        _error(post(b"this is not audio at all" * 40), 400, "file")
        _error(post(b""), 400, "file")
        _error(post(mp3[: len(mp3) // 2]), 400, "file")
        _error(post(b"\0" * (26 * 1024 * 1024)), 413, "file")
        _error(post(long_wav, response_format="json", **{"timestamp_granularities[]": "word"}), 400,
               "timestamp_granularities[]")
        _error(post(long_wav, response_format="docx"), 400, "response_format")
        _error(post(long_wav, temperature="hot"), 400, "temperature")
        _error(post(long_wav, language="xx"), 400, "language")
        _error(http.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                         files={"other": ("a", b"x")}), 400, "other")
        speech = lambda **body: http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",  # noqa: E731
                                                                     "input": "Hi.", **body})
        _error(speech(input=""), 400, "input")
        _error(speech(input="x" * 4097), 400, "input")
        _error(speech(voice="bella"), 400, "voice")
        _error(speech(speed=5), 400, "speed")
        _error(speech(response_format="ogg"), 400, "response_format")
        assert http.get("/health").status_code == 200
    result = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav))
    assert word_error_rate(LONG, result.text) <= 0.10


def test_speech_models_are_listed_loaded_and_unloaded(server, client):
    cards = {m.id: m.model_dump() for m in client.models.list()}
    assert cards["whisper-base"]["capabilities"] == ["transcription"]
    assert cards["hibari"]["capabilities"] == ["speech_synthesis"] and cards["hibari"]["kind"] == "speech"
    with server.http() as http:
        response = http.post("/v1/internal/model/load", json={"model_name": "whisper-base",
                                                              "args": {"device": "cpu", "threads": 1}})
        assert response.status_code == 200, response.text
        _error(http.post("/v1/internal/model/load", json={"model_name": "whisper-base", "args": {"device": "tpu"}}),
               400, "args.device")
        assert http.post("/v1/internal/model/unload", json={"model_name": "hibari"}).status_code == 200
        assert not {m["id"]: m for m in http.get("/v1/models").json()["data"]}["hibari"]["loaded"]
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Back again.", response_format="wav")
    assert _seconds(speech.content) > 0.3  # loaded again on demand


def test_a_client_that_goes_away_releases_its_speech_job(server):
    text = " ".join(f"This is sentence number {n} of a long passage." for n in range(60))
    with server.http() as http:
        with http.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text,
                                                            "response_format": "pcm"}) as response:
            first = next(response.iter_raw())
            assert first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics = http.get("/metrics").text
            running = re.search(r'homeport_sequences_running\{model="hibari"\} (\S+)', metrics)
            if running and float(running.group(1)) == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the speech job was still running after its client left")


def test_chat_audio_parts_are_transcribed_for_the_text_model(server, client, long_wav):
    transcript = client.audio.transcriptions.create(model="whisper-1", file=("long.wav", long_wav)).text

    def chat(part: dict):
        return client.chat.completions.create(model="x", max_tokens=1, messages=[
            {"role": "user", "content": [{"type": "text", "text": "Summarise:"}, part]}])

    heard = chat({"type": "input_audio", "input_audio": {"data": base64.b64encode(long_wav).decode(), "format": "wav"}})
    typed = chat({"type": "text", "text": transcript})
    assert heard.usage.prompt_tokens == typed.usage.prompt_tokens  # the model read the transcript
    with server.http() as http:
        def bad(audio: dict, param: str):
            response = http.post("/v1/chat/completions", json={"messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": audio}]}], "max_tokens": 1})
            _error(response, 400, "messages[0].content[0].input_audio." + param)

        bad({"data": "%%% not base64", "format": "wav"}, "data")
        bad({"data": base64.b64encode(b"not audio" * 50).decode(), "format": "mp3"}, "data")
        bad({"data": base64.b64encode(long_wav).decode(), "format": "flac"}, "format")
