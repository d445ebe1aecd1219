"""The images endpoints' requests: OpenAI's fields and the reference API's (steps, cfg_scale,
batch_size, batch_count, seed, negative_prompt, width/height, sampler). Checked here, so every bad
field is a 400 naming it before any work starts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OUTPUT_FORMATS = ("png", "jpeg", "webp")
MAX_IMAGES = 16  # batch_size × batch_count
MAX_UPLOAD_BYTES = 25 * 1024 * 1024


class ImageOptions(BaseModel):
    """Fields every images endpoint shares."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    width: int | None = Field(default=None, ge=8)
    height: int | None = Field(default=None, ge=8)
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    quality: str | None = None
    background: str | None = None
    user: str | None = None
    steps: int | None = Field(default=None, ge=1, le=150)
    cfg_scale: float | None = Field(default=None, ge=0, le=30)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_IMAGES)
    batch_count: int | None = Field(default=None, ge=1, le=MAX_IMAGES)
    seed: int | None = Field(default=None, ge=-1, lt=2**63)
    negative_prompt: str | None = None
    sampler: str | None = None
    sampler_name: str | None = None  # the reference's alias
    stream: bool = False
    partial_images: int | None = Field(default=None, ge=0, le=3)


class ImageGenerationRequest(ImageOptions):
    prompt: str
    moderation: str | None = None
    style: str | None = None


class ImageEditRequest(ImageOptions):
    prompt: str
    strength: float | None = Field(default=None, gt=0, le=1)
    input_fidelity: str | None = None


class ImageVariationRequest(ImageOptions):
    prompt: str | None = None  # not OpenAI's: the model's default prompt handling when absent
    strength: float | None = Field(default=None, gt=0, le=1)


def form_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Multipart text fields as the JSON body would have them (numbers, booleans)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, str) and value.lower() in ("true", "false"):
            out[name] = value.lower() == "true"
        else:
            out[name] = value
    return out
