"""/v1/audio/transcriptions, /v1/audio/translations (multipart uploads) and /v1/audio/speech."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from homeport.api.multipart import read_form
from homeport.api.routes.deps import services
from homeport.api.streaming import SSE_HEADERS, ClientDisconnected, sse_frames, until_disconnect
from homeport.errors import HomeportError, InvalidRequestError
from homeport.schemas.audio import MAX_UPLOAD_BYTES, SpeechRequest, form_fields, parse_transcription_form
from homeport.services.audio import AudioReply

log = logging.getLogger(__name__)
router = APIRouter(tags=["audio"])
_FORM_SLACK = 1024 * 1024  # multipart framing and the text fields, on top of the file


def _too_large() -> InvalidRequestError:
    return InvalidRequestError(f"the audio file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB",
                               param="file", code="file_too_large", status_code=413)


async def _upload(request: Request, translate: bool):
    """The file's bytes and the checked form, read before any work starts."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + _FORM_SLACK:
        raise _too_large()  # refused before the body is read
    form = await read_form(request, param="file", what="audio", max_files=1)
    try:
        upload, fields = form_fields(form)
        if upload is None or isinstance(upload, str):
            raise InvalidRequestError("Missing required parameter: 'file'.", param="file",
                                      code="missing_required_parameter")
        if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
            raise _too_large()
        parsed = parse_transcription_form(fields, translate=translate)
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > MAX_UPLOAD_BYTES:
        raise _too_large()
    return data, parsed


async def _transcription(request: Request, translate: bool) -> Response:
    data, parsed = await _upload(request, translate)
    audio = services(request).audio
    try:
        reply = await until_disconnect(request, audio.transcribe(data, parsed))
    except ClientDisconnected:
        return Response(status_code=499)
    return _respond(reply)


def _respond(reply: AudioReply) -> Response:
    headers = reply.headers or {}
    if reply.sse:
        return StreamingResponse(sse_frames(reply.body), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **headers})
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, headers=headers)
    if isinstance(reply.body, str):
        return PlainTextResponse(reply.body, media_type=reply.media_type, headers=headers)
    return StreamingResponse(_audio_bytes(reply.body), media_type=reply.media_type, headers=headers)


async def _audio_bytes(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Raw audio cannot carry an error event: a failure mid-stream ends it early (and is logged)."""
    try:
        async for data in chunks:
            yield data
    except HomeportError as exc:
        log.warning("speech: synthesis failed mid-stream (%s)", exc.code or type(exc).__name__)
    finally:
        await chunks.aclose()


@router.post("/v1/audio/transcriptions", summary="Speech to text (Whisper): json, text, srt, vtt, verbose_json, stream")
async def create_transcription(request: Request) -> Response:
    return await _transcription(request, translate=False)


@router.post("/v1/audio/translations", summary="Speech in any language to English text (Whisper)")
async def create_translation(request: Request) -> Response:
    return await _transcription(request, translate=True)


@router.post("/v1/audio/speech", summary="Text to speech, streamed sentence by sentence (mp3, opus, aac, flac, wav, pcm)")
async def create_speech(body: SpeechRequest, request: Request) -> Response:
    audio = services(request).audio
    try:
        reply = await until_disconnect(request, audio.speak(body))
    except ClientDisconnected:
        return Response(status_code=499)
    return _respond(reply)
