"""The reference API's `/v1/internal/*` bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from homeport.schemas.common import SamplingFields, WireModel


class EncodeRequest(WireModel):
    text: str
    model: str | None = None


class DecodeRequest(WireModel):
    tokens: list[Annotated[int, Field(ge=0)]]
    model: str | None = None


class StopGenerationRequest(WireModel):
    id: str | None = None  # a response id (chatcmpl-…, cmpl-…); none: stop everything


class LogitsRequest(SamplingFields):
    prompt: str
    use_samplers: bool = False
    top_logits: Annotated[int, Field(ge=1, le=1000)] = 50


class LoadModelRequest(WireModel):
    model_name: str
    args: dict[str, Any] | None = None
    instruction_template: str | None = None
    instruction_template_str: str | None = None


class UnloadModelRequest(WireModel):
    model_name: str | None = None  # none: every loaded model
