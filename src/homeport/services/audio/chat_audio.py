"""Chat messages' `input_audio` parts → text parts, transcribed by the default speech-to-text
model before the chat pipeline sees the request (the text model reads the transcript)."""

from __future__ import annotations

import base64
import binascii

from homeport.engines.speech.errors import AudioDecodeError
from homeport.errors import HomeportError, InvalidRequestError
from homeport.schemas.audio import MAX_UPLOAD_BYTES
from homeport.services.audio.service import AudioService

AUDIO_PART_FORMATS = ("wav", "mp3")  # OpenAI's input_audio formats


def _has_audio(messages) -> bool:
    return any(isinstance(m.content, list) and any(getattr(p, "type", None) == "input_audio" for p in m.content)
               for m in messages)


async def transcribe_audio_parts(body, audio: AudioService | None):
    """`body` (a parsed chat request) with every input_audio part replaced by a text part holding
    its transcript; `body` itself when it has none. A 400 naming the part when there is no
    speech-to-text model or the audio cannot be read."""
    if not _has_audio(body.messages):
        return body
    from homeport.schemas.chat import TextPart

    messages = []
    for i, message in enumerate(body.messages):
        if not isinstance(message.content, list):
            messages.append(message)
            continue
        parts = []
        for j, part in enumerate(message.content):
            if getattr(part, "type", None) != "input_audio":
                parts.append(part)
                continue
            where = f"messages[{i}].content[{j}].input_audio"
            parts.append(TextPart(type="text", text=await _transcribe(part.input_audio, where, audio)))
        messages.append(message.model_copy(update={"content": parts}))
    return body.model_copy(update={"messages": messages})


async def _transcribe(part, where: str, audio: AudioService | None) -> str:
    if part.format not in AUDIO_PART_FORMATS:
        raise InvalidRequestError(f"{where}.format must be one of {', '.join(AUDIO_PART_FORMATS)}",
                                  param=f"{where}.format")
    if len(part.data) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise InvalidRequestError(f"{where}.data is larger than 25 MB", param=f"{where}.data", status_code=413)
    try:
        data = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{where}.data is not valid base64", param=f"{where}.data") from None
    if audio is None:
        raise InvalidRequestError(f"{where}: this server has no speech-to-text model", param=where)
    try:
        return await audio.transcript_text(data)
    except AudioDecodeError as exc:
        raise InvalidRequestError(f"{where}.data: {exc.message}", param=f"{where}.data", code=exc.code) from None
    except HomeportError as exc:
        if exc.status_code == 503 and not exc.headers:  # no STT model configured or installed
            raise InvalidRequestError(f"{where}: audio parts need a speech-to-text model, and none is available "
                                      f"({exc.message})", param=where, code="model_lacks_capability") from None
        raise
