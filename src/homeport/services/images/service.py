"""Images endpoints' service: checks a request against the model (size, sampler, prompt), runs it
on the engine (choice i uses seed + i) and renders OpenAI's ImagesResponse, or its stream events
(partial images from the engine's previews, then one completed event per image). Nothing here
logs prompts."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from homeport.engines.capabilities import ImageJob
from homeport.errors import InvalidRequestError
from homeport.registry.manager import ModelManager
from homeport.schemas.images import MAX_IMAGES, ImageOptions
from homeport.services.images.files import ImageFiles

SPEC_SIZES = ("1024x1024", "1024x1536", "1536x1024")  # the only sizes OpenAI's schema names
DEFAULT_STEPS = 20
DEFAULT_CFG = 7.0
MAX_SIDE = 2048


@dataclass(frozen=True)
class ImageReply:
    body: dict | AsyncIterator[dict]
    sse: bool = False


def encode(image, output_format: str, compression: int | None) -> bytes:
    """Same image, same options → same bytes (no timestamps or random metadata)."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, "PNG")
    elif output_format == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=compression if compression is not None else 90)
    else:
        image.save(buffer, "WEBP", quality=compression if compression is not None else 90)
    return buffer.getvalue()


class ImageService:
    def __init__(self, models: ModelManager) -> None:
        self.models = models
        self.files = ImageFiles()

    def _job(self, engine, request: ImageOptions, prompt: str, *, image=None, mask=None) -> ImageJob:
        if not prompt.strip() and image is None:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        width, height = _size(engine, request)
        sampler = request.sampler or request.sampler_name
        if sampler and not engine.knows_sampler(sampler):
            raise InvalidRequestError(f"unknown sampler {sampler!r}", param="sampler")
        batch_size = request.batch_size or request.n or 1
        count = batch_size * (request.batch_count or 1)
        if count > MAX_IMAGES:
            raise InvalidRequestError(f"batch_size × batch_count must be at most {MAX_IMAGES}", param="batch_count")
        seed = request.seed if request.seed is not None and request.seed >= 0 else random.randrange(2**32)
        if image is not None:
            image = image.convert("RGB").resize((width, height))
        if mask is not None:
            mask = mask.resize((width, height))
        return ImageJob(
            prompt=prompt, seeds=[seed + i for i in range(count)], width=width, height=height,
            steps=request.steps or DEFAULT_STEPS, guidance=DEFAULT_CFG if request.cfg_scale is None else request.cfg_scale,
            batch_size=batch_size, negative_prompt=request.negative_prompt, sampler=sampler, image=image, mask=mask,
            strength=getattr(request, "strength", None) or (1.0 if mask is not None else 0.75),
            previews=(request.partial_images or 0) if request.stream else 0,
        )

    async def generate(self, request: ImageOptions, prompt: str, *, image=None, mask=None,
                       event_prefix: str = "image_generation", base_url: str = "") -> ImageReply:
        """`base_url`: where GET /v1/images/files/{id} is served, for `response_format: url`."""
        model = await self.models.acquire(request.model, capability="image_generation")
        try:
            job = self._job(model.engine, request, prompt, image=image, mask=mask)
        except BaseException:
            self.models.release(model)
            raise
        fmt = request.output_format or "png"
        if request.stream:
            return ImageReply(self._events(model, job, request, fmt, event_prefix), sse=True)
        try:
            images = await model.engine.generate_images(job)
        finally:
            self.models.release(model)
        data = []
        for picture in images:
            payload = encode(picture, fmt, request.output_compression)
            if request.response_format == "url":
                url = f"{base_url.rstrip('/')}/v1/images/files/{self.files.put(payload, fmt)}"
                data.append({"url": url, "revised_prompt": prompt})
            else:
                data.append({"b64_json": base64.b64encode(payload).decode(), "revised_prompt": prompt})
        body = {"created": int(time.time()), "data": data, "output_format": fmt, "background": "opaque"}
        size = f"{job.width}x{job.height}"
        if size in SPEC_SIZES:
            body["size"] = size
        return ImageReply(body)

    async def _events(self, model, job: ImageJob, request: ImageOptions, fmt: str, prefix: str):
        """Partial images as the engine previews them, then each final image. A client that goes
        away closes this generator: the job is cancelled and stops at its next step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job.on_preview = lambda images, batch: loop.call_soon_threadsafe(queue.put_nowait, images)
        size = f"{job.width}x{job.height}"
        common = {"size": size if size in SPEC_SIZES else "auto", "quality": "auto", "background": "auto",
                  "output_format": fmt}
        task = asyncio.ensure_future(model.engine.generate_images(job))
        index = 0
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    for preview in getter.result()[:1]:  # the first image of the batch
                        yield {"type": f"{prefix}.partial_image", "b64_json": _b64(preview, fmt, request),
                               "created_at": int(time.time()), "partial_image_index": index, **common}
                        index += 1
                    continue
                getter.cancel()
                break
            while not queue.empty():  # previews that came in with the end
                queue.get_nowait()
            for picture in task.result():
                yield {"type": f"{prefix}.completed", "b64_json": _b64(picture, fmt, request),
                       "created_at": int(time.time()), **common,
                       "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
                                 "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}}}
        finally:
            job.cancel.set()
            if not task.done():
                task.cancel()
            self.models.release(model)


def _b64(image, fmt: str, request: ImageOptions) -> str:
    return base64.b64encode(encode(image, fmt, request.output_compression)).decode()


def _size(engine, request: ImageOptions) -> tuple[int, int]:
    side = engine.default_size
    width = height = side
    if request.size and request.size != "auto":
        w, sep, h = request.size.lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit():
            raise InvalidRequestError(f"size must be WIDTHxHEIGHT or auto, got {request.size!r}", param="size")
        width, height = int(w), int(h)
    width, height = request.width or width, request.height or height
    step = max(8, engine.scale_factor)
    for name, value in (("width" if request.width else "size", width), ("height" if request.height else "size", height)):
        if value % step or not step <= value <= MAX_SIDE:
            raise InvalidRequestError(f"image sides must be multiples of {step} between {step} and {MAX_SIDE}, "
                                      f"got {width}x{height}", param=name)
    return width, height
