"""The reference API's `/v1/internal/*` bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from homeport.schemas.common import SamplingFields, WireModel


class EncodeRequest(WireModel):
    text: str


class DecodeRequest(WireModel):
    tokens: list[Annotated[int, Field(ge=0)]]


class StopGenerationRequest(WireModel):
    id: str | None = None  # a response id (chatcmpl-…, cmpl-…); none: stop everything


class LogitsRequest(SamplingFields):
    prompt: str
    use_samplers: bool = False
    top_logits: Annotated[int, Field(ge=1, le=1000)] = 50
