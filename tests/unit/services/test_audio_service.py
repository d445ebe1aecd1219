"""The audio services' pure parts: form parsing, transcript formats, and chat audio parts (with a
fake transcriber: no models)."""

from __future__ import annotations

import base64

import pytest

from homeport.engines.speech.errors import AudioDecodeError
from homeport.engines.speech.whisper import Segment, Word
from homeport.errors import InvalidRequestError, ServiceUnavailableError
from homeport.schemas.audio import parse_transcription_form
from homeport.schemas.chat import ChatCompletionRequest
from homeport.services.audio import transcripts
from homeport.services.audio.chat_audio import transcribe_audio_parts


def _segment(i: int, start: float, end: float, text: str) -> Segment:
    words = (Word(start, end, text.strip(), 0.5),)
    return Segment(i, 0, start, end, text, (1, 2, 3), -0.2, 1.1, 0.01, 0.0, words)


def test_form_fields_are_checked_and_named():
    form = parse_transcription_form({"model": ["whisper-1"], "response_format": ["verbose_json"],
                                     "timestamp_granularities[]": ["word", "segment"], "temperature": ["0.2"]},
                                    translate=False)
    assert form.word_timestamps and form.segment_timestamps and form.temperature == 0.2
    cases = [({"response_format": ["docx"]}, "response_format"),
             ({"timestamp_granularities[]": ["word"]}, "timestamp_granularities[]"),
             ({"temperature": ["2"]}, "temperature"), ({"stream": ["maybe"]}, "stream"),
             ({"include[]": ["everything"]}, "include[]"), ({"surprise": ["1"]}, "surprise")]
    for fields, param in cases:
        with pytest.raises(InvalidRequestError) as caught:
            parse_transcription_form(fields, translate=False)
        assert caught.value.param == param
    with pytest.raises(InvalidRequestError):  # translations take no language
        parse_transcription_form({"language": ["en"]}, translate=True)


def test_subtitle_formats():
    segments = [_segment(1, 0.0, 1.5, " Hello."), _segment(2, 1.5, 3661.25, " World.")]
    srt = transcripts.render("srt", language="en", duration=3662, segments=segments, translate=False)
    assert srt == "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n00:00:01,500 --> 01:01:01,250\nWorld.\n\n"
    vtt = transcripts.render("vtt", language="en", duration=3662, segments=segments, translate=False)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n")
    verbose = transcripts.render("verbose_json", language="en", duration=3662, segments=segments, translate=False,
                                 words=True)
    assert verbose["language"] == "english" and [s["id"] for s in verbose["segments"]] == [0, 1]
    assert [w["word"] for w in verbose["words"]] == ["Hello.", "World."]
    assert transcripts.render("text", language="en", duration=3, segments=segments, translate=False) == "Hello. World.\n"


class FakeAudio:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def transcript_text(self, data: bytes, *, language=None) -> str:
        if self.error:
            raise self.error
        return f"heard {len(data)} bytes"


def _chat(part: dict) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, part]}]})


AUDIO = {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"abcd").decode(), "format": "wav"}}


async def test_audio_parts_become_text_parts():
    body = await transcribe_audio_parts(_chat(AUDIO), FakeAudio())
    assert [(p.type, p.text) for p in body.messages[1].content] == [("text", "Hi"), ("text", "heard 4 bytes")]
    plain = _chat({"type": "text", "text": "no audio"})
    assert await transcribe_audio_parts(plain, None) is plain


@pytest.mark.parametrize("audio, error, param", [
    (None, None, "messages[1].content[1].input_audio"),
    (FakeAudio(ServiceUnavailableError("no speech-to-text model")), None, "messages[1].content[1].input_audio"),
    (FakeAudio(AudioDecodeError("the audio file is empty")), None, "messages[1].content[1].input_audio.data"),
])
async def test_audio_parts_fail_with_a_400_naming_the_part(audio, error, param):
    with pytest.raises(InvalidRequestError) as caught:
        await transcribe_audio_parts(_chat(AUDIO), audio)
    assert caught.value.param == param and caught.value.status_code == 400
