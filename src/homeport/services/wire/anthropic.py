"""The Anthropic Messages adapter: `/v1/messages` requests → the chat pipeline; its events →
Anthropic's message body and stream events; errors → Anthropic's envelope and status codes."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from homeport.errors import HomeportError, InvalidRequestError
from homeport.schemas.anthropic import (
    AnthropicMessage,
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from homeport.schemas.common import SamplingFields
from homeport.services.text.chat import ChatService
from homeport.services.text.conversation import (
    Conversation,
    FunctionTool,
    Image,
    Limits,
    Message,
    NamedFunction,
    Reasoning,
    Text,
    Thinking,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from homeport.services.text.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReport,
)

# Thinking blocks are signed so a client can tell ours apart; the key lives as long as the process
# (a signature proves nothing after a restart, and homeport never needs it to: history is trusted).
_SIGNING_KEY = secrets.token_bytes(32)
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def thinking_signature(thinking: str) -> str:
    """The opaque `signature` of a thinking block: an HMAC of its text under the process's key."""
    return hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).hexdigest()


def thinking_budget(body: MessagesRequest) -> int | None:
    """The most tokens the reply may think for (`thinking: {type: enabled, budget_tokens}`)."""
    thinking = body.thinking
    return thinking.budget_tokens if thinking is not None and thinking.type == "enabled" else None


def error_envelope(error: HomeportError) -> tuple[int, dict]:
    """(status, body) as Anthropic sends them. A busy server (503) is Anthropic's 529 overloaded."""
    status = 529 if error.status_code == 503 else error.status_code
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


# --- request in -------------------------------------------------------------------------------


def to_conversation(body: CountTokensRequest) -> Conversation:
    """The chat pipeline's conversation for an Anthropic request."""
    messages: list[Message] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "\n\n".join(b.text for b in body.system)
        messages.append(Message("system", (Text(system),)))
    for index, message in enumerate(body.messages):
        messages.extend(_messages(message, f"messages[{index}]"))
    if not messages:
        raise InvalidRequestError("the messages hold no content", param="messages")
    tools = tuple(_tool(tool, i) for i, tool in enumerate(body.tools or []))
    choice: ToolChoice = None
    parallel = None
    if body.tool_choice is not None:
        given = body.tool_choice
        if given.type == "tool" and not given.name:
            raise InvalidRequestError("tool_choice of type 'tool' needs a name", param="tool_choice.name")
        choice = {"auto": "auto", "any": "required", "none": "none"}.get(given.type) or NamedFunction(given.name)
        if given.disable_parallel_tool_use:
            parallel = False
    thinking = Thinking(enabled=bool(body.thinking and body.thinking.type != "disabled"))
    limits = Limits()
    sampling: dict = {"model": body.model}
    if isinstance(body, MessagesRequest):
        enabled = body.thinking if body.thinking is not None and body.thinking.type == "enabled" else None
        if enabled is not None and enabled.budget_tokens is None:
            raise InvalidRequestError(
                "thinking.budget_tokens is required when thinking is enabled", param="thinking.budget_tokens"
            )
        if enabled is not None and enabled.budget_tokens >= body.max_tokens:
            raise InvalidRequestError("thinking.budget_tokens must be less than max_tokens", param="thinking.budget_tokens")
        stops = tuple(stop for stop in body.stop_sequences or () if stop)
        limits = Limits(max_tokens=body.max_tokens, stop=stops if body.stop_sequences else None)
        for name in ("temperature", "top_p", "top_k"):
            if getattr(body, name) is not None:
                sampling[name] = getattr(body, name)
    return Conversation(
        messages=tuple(messages),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        limits=limits,
        thinking=thinking,
        sampling=SamplingFields.model_validate(sampling),
    )


def _tool(tool, index: int) -> FunctionTool:
    if tool.type not in (None, "custom"):
        raise InvalidRequestError(
            f"tool type {tool.type!r} is a server tool homeport cannot run; only custom tools are supported",
            param=f"tools[{index}].type",
        )
    if tool.input_schema is None:
        raise InvalidRequestError("a custom tool needs an input_schema", param=f"tools[{index}].input_schema")
    return FunctionTool(name=tool.name, description=tool.description or "", parameters=tool.input_schema)


def _image(block: ImageBlock, where: str) -> Image:
    source = block.source
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "image/png"
        return Image(f"data:{media_type};base64,{source['data']}")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return Image(source["url"])
    raise InvalidRequestError(
        "an image source must be {type: base64, media_type, data} or {type: url, url}", param=f"{where}.source"
    )


def _messages(message: AnthropicMessage, where: str) -> list[Message]:
    """One Anthropic message → the conversation's: a user turn's tool results become tool messages
    (before the turn's own text and images)."""
    if isinstance(message.content, str):
        return [Message(message.role, (Text(message.content),))]
    out: list[Message] = []
    parts: list[Text | Image] = []
    calls: list[ToolCall] = []
    reasoning: list[Reasoning] = []
    for i, block in enumerate(message.content):
        at = f"{where}.content[{i}]"
        if isinstance(block, TextBlock):
            parts.append(Text(block.text))
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, at))
        elif isinstance(block, ToolUseBlock):
            if message.role != "assistant":
                raise InvalidRequestError("tool_use blocks belong in assistant messages", param=at)
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
        elif isinstance(block, ToolResultBlock):
            if message.role != "user":
                raise InvalidRequestError("tool_result blocks belong in user messages", param=at)
            out.append(Message("tool", (ToolResult(block.tool_use_id, _result_text(block, at), block.is_error),)))
        elif isinstance(block, ThinkingBlock):
            reasoning.append(Reasoning(block.thinking, block.signature))
        # redacted_thinking: nothing a local model can read
    if message.role == "assistant":
        # A reply's text is one piece (its images are not shown back to the model).
        text = "".join(p.text for p in parts if isinstance(p, Text))
        return [Message("assistant", (*reasoning, *([Text(text)] if text else []), *calls))]
    if parts:
        out.append(Message("user", tuple(parts)))
    return out


def _result_text(block: ToolResultBlock, where: str) -> str:
    content = block.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(isinstance(part, ImageBlock) for part in content):
        raise InvalidRequestError("images inside a tool_result are not supported", param=f"{where}.content")
    return "\n".join(part.text for part in content)


# --- events out -------------------------------------------------------------------------------


class MessageAssembler:
    """Neutral events → Anthropic stream events (as (event name, data) pairs), building the whole
    message alongside for the non-streaming body."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.message: dict = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(prompt_tokens, 0, 0),
        }
        self._open: int | None = None  # index of the open content block
        self._open_kind: str | None = None
        self._calls: dict[int, int] = {}  # tool call index → block index
        self._arguments: dict[int, str] = {}  # block index → its input JSON so far

    def start(self) -> list[tuple[str, dict]]:
        start = {**self.message, "content": []}
        return [("message_start", {"type": "message_start", "message": start}), ("ping", {"type": "ping"})]

    def feed(self, event: Event) -> list[tuple[str, dict]]:
        if isinstance(event, TextDelta) and event.text:
            return self._delta("text", {"type": "text_delta", "text": event.text})
        if isinstance(event, ReasoningDelta) and event.text:
            return self._delta("thinking", {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, ToolCallStarted):
            out = self._close()
            block = {
                "type": "tool_use",
                "id": event.id or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": event.name or "",
                "input": {},
            }
            self._calls[event.index] = self._begin("tool_use", block, out)
            return out
        if isinstance(event, ToolCallArgumentsDelta) and event.index in self._calls:
            index = self._calls[event.index]
            self._arguments[index] = self._arguments.get(index, "") + event.arguments
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            return [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})]
        if isinstance(event, ToolCallDone) and event.index in self._calls:
            self.message["content"][self._calls[event.index]]["input"] = _parsed_input(event.arguments)
            return []
        if isinstance(event, Finish):
            self.message["stop_reason"] = (
                "stop_sequence" if event.stop_sequence else _STOP_REASONS.get(event.reason, "end_turn")
            )
            self.message["stop_sequence"] = event.stop_sequence
            return self._close()
        if isinstance(event, UsageReport):
            self.message["usage"] = _usage(event.input_tokens, event.output_tokens, event.cached_tokens)
            delta = {"stop_reason": self.message["stop_reason"], "stop_sequence": self.message["stop_sequence"]}
            usage = {**self.message["usage"]}
            return [
                ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
                ("message_stop", {"type": "message_stop"}),
            ]
        return []

    def _delta(self, kind: str, delta: dict) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        if self._open_kind != kind:
            out += self._close()
            block = (
                {"type": "text", "text": "", "citations": None}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            self._begin(kind, block, out)
        block = self.message["content"][self._open]
        field = "text" if kind == "text" else "thinking"
        block[field] += delta[field]
        out.append(("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}))
        return out

    def _begin(self, kind: str, block: dict, out: list) -> int:
        index = len(self.message["content"])
        self.message["content"].append(block)
        self._open, self._open_kind = index, kind
        start = {**block, "input": {}} if kind == "tool_use" else dict(block)
        out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        return index

    def _close(self) -> list[tuple[str, dict]]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        block = self.message["content"][index]
        if block["type"] == "tool_use" and index in self._arguments:
            block["input"] = _parsed_input(self._arguments[index])
        out: list[tuple[str, dict]] = []
        if block["type"] == "thinking":  # as Anthropic: the signature comes last, just before the stop
            block["signature"] = thinking_signature(block["thinking"])
            delta = {"type": "signature_delta", "signature": block["signature"]}
            out.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        return [*out, ("content_block_stop", {"type": "content_block_stop", "index": index})]


def _parsed_input(arguments: str) -> dict:
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _usage(input_tokens: int, output_tokens: int, cached: int) -> dict:
    return {
        "input_tokens": input_tokens - cached,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


class MessagesService:
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def create(self, body: MessagesRequest) -> tuple[dict | AsyncIterator[tuple[str, dict]], dict[str, str]]:
        turn = await self.chat.turn(to_conversation(body), thinking_budget=thinking_budget(body))
        assembler = MessageAssembler(turn.model, turn.prompt_tokens)
        if not body.stream:
            async with aclosing(turn.events) as events:
                async for event in events:
                    assembler.feed(event)
            return assembler.message, turn.headers

        async def stream() -> AsyncIterator[tuple[str, dict]]:
            for item in assembler.start():
                yield item
            async with aclosing(turn.events) as events:
                async for event in events:
                    for item in assembler.feed(event):
                        yield item

        return stream(), turn.headers

    async def count_tokens(self, body: CountTokensRequest) -> dict:
        return {"input_tokens": await self.chat.count_tokens(to_conversation(body))}
