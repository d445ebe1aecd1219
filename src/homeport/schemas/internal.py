"""The reference API's `/v1/internal/*` bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from homeport.schemas.common import WireModel


class EncodeRequest(WireModel):
    text: str


class DecodeRequest(WireModel):
    tokens: list[Annotated[int, Field(ge=0)]]


class StopGenerationRequest(WireModel):
    id: str | None = None  # a response id (chatcmpl-…, cmpl-…); none: stop everything
