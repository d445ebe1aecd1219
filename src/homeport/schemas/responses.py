"""`POST /v1/responses` (OpenAI's Responses API). Input items are checked by the adapter, which
names the failing item in its error."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from homeport.schemas.common import WireModel


class ResponsesRequest(WireModel):
    model: str | None = None
    input: str | list[dict[str, Any]] = Field(default_factory=list)
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
