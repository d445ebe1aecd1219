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
from homeport.schemas.chat import ChatCompletionRequest
from homeport.services.text.chat import ChatService
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


def to_chat(body: CountTokensRequest) -> ChatCompletionRequest:
    """The neutral conversation (the chat pipeline's request) for an Anthropic request."""
    messages: list[dict] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "\n\n".join(b.text for b in body.system)
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.messages):
        messages.extend(_messages(message, f"messages[{index}]"))
    fields: dict = {"model": body.model, "messages": messages}
    if body.tools:
        fields["tools"] = [_tool(tool, i) for i, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        choice = body.tool_choice
        if choice.type == "tool" and not choice.name:
            raise InvalidRequestError("tool_choice of type 'tool' needs a name", param="tool_choice.name")
        fields["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
            "tool": {"type": "function", "function": {"name": choice.name}},
        }[choice.type]
        if choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False
    fields["enable_thinking"] = bool(body.thinking and body.thinking.type != "disabled")
    if isinstance(body, MessagesRequest):
        thinking = body.thinking
        if thinking is not None and thinking.type == "enabled":
            if thinking.budget_tokens is None:
                raise InvalidRequestError(
                    "thinking.budget_tokens is required when thinking is enabled", param="thinking.budget_tokens"
                )
            if thinking.budget_tokens >= body.max_tokens:
                raise InvalidRequestError(
                    "thinking.budget_tokens must be less than max_tokens", param="thinking.budget_tokens"
                )
        fields["max_tokens"] = body.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(body, name) is not None:
                fields[name] = getattr(body, name)
        if body.stop_sequences:
            fields["stop"] = body.stop_sequences
    return ChatCompletionRequest.model_validate(fields)


def _tool(tool, index: int) -> dict:
    if tool.type not in (None, "custom"):
        raise InvalidRequestError(
            f"tool type {tool.type!r} is a server tool homeport cannot run; only custom tools are supported",
            param=f"tools[{index}].type",
        )
    if tool.input_schema is None:
        raise InvalidRequestError("a custom tool needs an input_schema", param=f"tools[{index}].input_schema")
    function = {"name": tool.name, "description": tool.description or "", "parameters": tool.input_schema}
    return {"type": "function", "function": function}


def _image(block: ImageBlock, where: str) -> dict:
    source = block.source
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{source['data']}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise InvalidRequestError(
        "an image source must be {type: base64, media_type, data} or {type: url, url}", param=f"{where}.source"
    )


def _messages(message: AnthropicMessage, where: str) -> list[dict]:
    """One Anthropic message → chat messages: a user turn's tool results become tool messages."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict] = []
    parts: list[dict] = []
    calls: list[dict] = []
    reasoning: list[str] = []
    for i, block in enumerate(message.content):
        at = f"{where}.content[{i}]"
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, at))
        elif isinstance(block, ToolUseBlock):
            if message.role != "assistant":
                raise InvalidRequestError("tool_use blocks belong in assistant messages", param=at)
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif isinstance(block, ToolResultBlock):
            if message.role != "user":
                raise InvalidRequestError("tool_result blocks belong in user messages", param=at)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _result_text(block, at)})
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        # redacted_thinking: nothing a local model can read
    if message.role == "assistant":
        assistant: dict = {"role": "assistant", "content": "".join(p.get("text", "") for p in parts) or None}
        if calls:
            assistant["tool_calls"] = calls
        if reasoning:
            assistant["reasoning_content"] = "\n".join(reasoning)
        if assistant["content"] is None and not calls:
            assistant["content"] = ""
        return [assistant]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _result_text(block: ToolResultBlock, where: str) -> str:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        if any(isinstance(part, ImageBlock) for part in content):
            raise InvalidRequestError("images inside a tool_result are not supported", param=f"{where}.content")
        text = "\n".join(part.text for part in content)
    return f"Error: {text}" if block.is_error else text


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
        turn = await self.chat.turn(to_chat(body), thinking_budget=thinking_budget(body))
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
        return {"input_tokens": await self.chat.count_tokens(to_chat(body))}
