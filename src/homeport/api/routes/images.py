"""/v1/images/generations (JSON), /v1/images/edits and /v1/images/variations (multipart)."""

from __future__ import annotations

import asyncio
import io

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from homeport.api.multipart import read_form
from homeport.api.routes.deps import services
from homeport.api.streaming import SSE_HEADERS, ClientDisconnected, sse_frames, until_disconnect
from homeport.errors import InvalidRequestError, NotFoundError
from homeport.schemas.images import (MAX_UPLOAD_BYTES, ImageEditRequest, ImageGenerationRequest,
                                     ImageVariationRequest, form_values)
from homeport.services.images import ImageReply
from homeport.services.reply import IGNORED_HEADER

router = APIRouter(tags=["images"])


def _check_format(request) -> None:
    if request.response_format == "url" and request.stream:
        raise InvalidRequestError("streamed images come as b64_json; response_format url needs stream false",
                                  param="response_format")


# OpenAI fields a diffusers pipeline has nothing for, and the values that ask for nothing.
_NO_EFFECT = {"quality": ("auto",), "background": ("auto", "opaque"), "style": (), "moderation": ("auto",),
              "input_fidelity": ()}


def _ignored(body, extra_images: bool = False) -> dict[str, str]:
    """Accepted fields that change nothing here, named in a header (never dropped silently)."""
    names = [name for name, neutral in _NO_EFFECT.items()
             if getattr(body, name, None) is not None and getattr(body, name) not in neutral]
    if extra_images:
        names.append("image")  # only the first image is edited: the pipelines take one init image
    return {IGNORED_HEADER: ", ".join(names)} if names else {}


async def _run(request: Request, work, headers: dict[str, str]) -> Response:
    try:
        reply: ImageReply = await until_disconnect(request, work)
    except ClientDisconnected:
        return Response(status_code=499)
    if reply.sse:
        return StreamingResponse(sse_frames(reply.body), media_type="text/event-stream",
                                 headers={**SSE_HEADERS, **headers})
    return JSONResponse(reply.body, headers=headers)


@router.post("/v1/images/generations", summary="Create images from a prompt")
async def generations(body: ImageGenerationRequest, request: Request) -> Response:
    _check_format(body)
    return await _run(request, services(request).images.generate(body, body.prompt, base_url=str(request.base_url)),
                      _ignored(body))


def _image(data: bytes, param: str):
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidRequestError(f"{param} is larger than {MAX_UPLOAD_BYTES // 2**20} MB", param=param)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequestError(f"{param} is not an image (PNG, JPEG or WebP)", param=param) from None
    return image


def _mask(image, mask):
    """OpenAI's mask: transparent (alpha 0) where to repaint → diffusers' white-is-repaint L mask."""
    from PIL import ImageOps

    if mask.size != image.size:
        raise InvalidRequestError(f"mask is {mask.size[0]}x{mask.size[1]} but image is "
                                  f"{image.size[0]}x{image.size[1]}", param="mask")
    if "A" in mask.getbands():
        return ImageOps.invert(mask.getchannel("A"))
    return mask.convert("L")


async def _form(request: Request, model):
    form = await read_form(request, param="image", what="picture", max_files=16)
    try:
        files: dict[str, list[bytes]] = {}
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
            else:
                files.setdefault(key.removesuffix("[]"), []).append(await value.read())
    finally:
        await form.close()
    try:
        parsed = model.model_validate(form_values(fields))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    if not files.get("image"):
        raise InvalidRequestError("Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
    # Decoding is CPU work (up to 16 files of 20 MB): off the event loop.
    images = await asyncio.to_thread(lambda: [_image(data, "image") for data in files["image"]])
    mask = await asyncio.to_thread(_image, files["mask"][0], "mask") if files.get("mask") else None
    return parsed, images, mask


@router.post("/v1/images/edits", summary="Edit an image: inpainting with a mask, image-to-image without")
async def edits(request: Request) -> Response:
    body, images, mask = await _form(request, ImageEditRequest)
    _check_format(body)
    if not body.prompt.strip():
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    image = images[0]  # several images: the first is edited (diffusers pipelines take one init image)
    mask = _mask(image, mask) if mask is not None else None
    work = services(request).images.generate(body, body.prompt, image=image, mask=mask, event_prefix="image_edit",
                                             base_url=str(request.base_url))
    return await _run(request, work, _ignored(body, extra_images=len(images) > 1))


@router.post("/v1/images/variations", summary="Variations of an image (image-to-image)")
async def variations(request: Request) -> Response:
    body, images, _ = await _form(request, ImageVariationRequest)
    _check_format(body)
    return await _run(request, services(request).images.generate(body, body.prompt or "", image=images[0],
                                                                  base_url=str(request.base_url)),
                      _ignored(body, extra_images=len(images) > 1))


@router.get("/v1/images/files/{file_id}", summary="An image made with response_format url (kept for an hour)")
async def image_file(file_id: str, request: Request) -> Response:
    found = services(request).images.files.get(file_id)
    if found is None:
        raise NotFoundError(f"no image {file_id!r} (images are kept for an hour)", param="file_id")
    return Response(found[0], media_type=found[1])
