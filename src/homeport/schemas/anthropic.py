"""`POST /v1/messages` and `/v1/messages/count_tokens` (the Anthropic Messages API)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from homeport.schemas.common import WireModel


class TextBlock(WireModel):
    type: Literal["text"]
    text: str


class ImageBlock(WireModel):
    type: Literal["image"]
    source: dict[str, Any]  # {type: base64, media_type, data} | {type: url, url}


class ToolUseBlock(WireModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(WireModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool = False


class ThinkingBlock(WireModel):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(WireModel):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class AnthropicMessage(WireModel):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(WireModel):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None  # required for custom tools (checked by the adapter)
    type: str | None = None  # "custom" or absent; server tools (web_search_…) are refused


class ToolChoice(WireModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingConfig(WireModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Field(ge=1)] | None = None


class CountTokensRequest(WireModel):
    model: str | None = None
    system: str | list[TextBlock] | None = None
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    tools: list[AnthropicTool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False
