"""A finished transcript in each of OpenAI's response formats, and the stream's events."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Whisper's encoder reads 50 audio frames a second: what the token usage counts as input
AUDIO_TOKENS_PER_SECOND = 50


def transcript_text(segments: Sequence) -> str:
    return "".join(s.text for s in segments).strip()


def duration_usage(duration: float) -> dict:
    return {"type": "duration", "seconds": math.ceil(duration)}


def token_usage(duration: float, segments: Sequence) -> dict:
    audio = round(duration * AUDIO_TOKENS_PER_SECOND)
    output = sum(len(s.tokens) for s in segments)
    return {"type": "tokens", "input_tokens": audio, "input_token_details": {"text_tokens": 0, "audio_tokens": audio},
            "output_tokens": output, "total_tokens": audio + output}


def word_logprobs(segments: Sequence) -> list[dict]:
    """Whisper gives a probability per word (with word timestamps), not per token: one entry a word."""
    return [{"token": w.word, "logprob": math.log(max(w.probability, 1e-12)), "bytes": list(w.word.encode())}
            for s in segments for w in (s.words or ())]


def _segment(s) -> dict:
    return {"id": s.id - 1, "seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": list(s.tokens),
            "temperature": s.temperature, "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
            "no_speech_prob": s.no_speech_prob}


def _language_name(code: str) -> str:
    return _LANGUAGE_NAMES.get(code, code)


def render(fmt: str, *, language: str, duration: float, segments: Sequence, translate: bool,
           logprobs: bool = False, words: bool = False, with_segments: bool = True) -> dict | str:
    """A JSON body (json, verbose_json) or the text of a text, srt or vtt response."""
    text = transcript_text(segments)
    if fmt == "json":
        body: dict = {"text": text}
        if not translate:
            body["usage"] = duration_usage(duration)
            if logprobs:
                body["logprobs"] = word_logprobs(segments)
        return body
    if fmt == "verbose_json":
        body = {"task": "translate" if translate else "transcribe", "language": _language_name(language),
                "duration": duration, "text": text}
        if with_segments:
            body["segments"] = [_segment(s) for s in segments]
        if words and not translate:
            body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                             for s in segments for w in (s.words or ())]
        if not translate:
            body["usage"] = duration_usage(duration)
        return body
    if fmt == "text":
        return text + "\n"
    if fmt == "srt":
        return "".join(f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
                       for i, s in enumerate(segments, 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n"
                                      for s in segments)
    raise ValueError(fmt)


def _clock(seconds: float, mark: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{mark}{ms:03d}"


def delta_event(segment, logprobs: bool) -> dict:
    event = {"type": "transcript.text.delta", "delta": segment.text}
    if logprobs:
        event["logprobs"] = word_logprobs([segment])
    return event


def done_event(duration: float, segments: Sequence, logprobs: bool) -> dict:
    event = {"type": "transcript.text.done", "text": transcript_text(segments), "usage": token_usage(duration, segments)}
    if logprobs:
        event["logprobs"] = word_logprobs(segments)
    return event


# OpenAI's verbose_json names the language ("english"), as Whisper's own tables do
_LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "cy": "welsh", "sk": "slovak", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "sl": "slovenian", "et": "estonian", "mk": "macedonian", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "af": "afrikaans",
    "ka": "georgian", "be": "belarusian", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "tl": "tagalog", "mt": "maltese", "jw": "javanese", "yue": "cantonese",
}
