"""The reference API's `/v1/internal/lora/*` bodies, plus homeport's `scales` and `model`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from homeport.schemas.common import WireModel

Scale = Annotated[float, Field(allow_inf_nan=False)]


class LoadLorasRequest(WireModel):
    lora_names: list[str]  # replaces the applied set; [] removes every LoRA
    scales: list[Scale] | None = None  # one per name; none: 1.0 each
    model: str | None = None  # none: the default model


class UnloadLorasRequest(WireModel):
    model: str | None = None
