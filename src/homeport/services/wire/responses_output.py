"""The OpenAI Responses adapter, output side: neutral events → the Responses stream events (each
with its `sequence_number`) and the response object they build."""

from __future__ import annotations

import json

from homeport.schemas.responses import ResponsesRequest
from homeport.services.ids import item_id, now, stored_id
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
from homeport.services.wire.responses_input import echoed_tools

Named = tuple[str, dict]


def new_response(body: ResponsesRequest, model: str, status: str) -> dict:
    fmt = (body.text or {}).get("format") or {"type": "text"}
    return {
        "id": stored_id("resp"),
        "object": "response",
        "created_at": now(),
        "status": status,
        "background": body.background,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": (body.reasoning or {}).get("effort"), "summary": None},
        "store": body.store,
        "temperature": body.temperature if body.temperature is not None else 1.0,
        "text": {"format": fmt},
        "tool_choice": _choice_echo(body.tool_choice),
        "tools": echoed_tools(body),
        "top_p": body.top_p if body.top_p is not None else 1.0,
        "truncation": body.truncation or "disabled",
        "metadata": body.metadata or {},
        **({"user": body.user} if body.user else {}),  # the spec's `user` is a string, never null
    }


def _choice_echo(choice: str | dict | None) -> str | dict:
    if choice is None:
        return "auto"
    if isinstance(choice, dict):
        return {"type": "function", "name": choice.get("name")}
    return choice


class ResponseAssembler:
    def __init__(self, response: dict) -> None:
        self.response = response
        self.sequence = 0
        self._open: dict | None = None  # the output item being streamed
        self._calls: dict[int, dict] = {}  # tool call index → its function_call item
        self._finish: Finish | None = None

    def _event(self, kind: str, **fields) -> Named:
        data = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return kind, data

    def _snapshot(self) -> dict:
        return json.loads(json.dumps(self.response))

    def start(self) -> list[Named]:
        self.response["status"] = "in_progress"
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def feed(self, event: Event) -> list[Named]:
        if isinstance(event, TextDelta) and event.text:
            return self._text("message", event.text)
        if isinstance(event, ReasoningDelta) and event.text:
            return self._text("reasoning", event.text)
        if isinstance(event, ToolCallStarted):
            out = self._close()
            item = {
                "id": stored_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": event.id or item_id("call"),
                "name": event.name or "",
            }
            self._calls[event.index] = item
            return out + self._add(item)
        if isinstance(event, ToolCallArgumentsDelta) and event.index in self._calls:
            item = self._calls[event.index]
            item["arguments"] += event.arguments
            return [
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._index(item),
                    delta=event.arguments,
                )
            ]
        if isinstance(event, ToolCallDone):
            return []  # each call's item is closed when the next item opens, or at the end
        if isinstance(event, Finish):
            self._finish = event
            return self._close()
        if isinstance(event, UsageReport):
            return self._end(event)
        return []

    def _index(self, item: dict) -> int:
        return next(i for i, it in enumerate(self.response["output"]) if it is item)

    def _add(self, item: dict) -> list[Named]:
        self.response["output"].append(item)
        self._open = item
        return [
            self._event(
                "response.output_item.added",
                output_index=self._index(item),
                item=dict(item, content=list(item.get("content", []))) if "content" in item else dict(item),
            )
        ]

    def _text(self, kind: str, text: str) -> list[Named]:
        out: list[Named] = []
        if self._open is None or self._open["type"] != kind:
            out += self._close()
            if kind == "message":
                item = {
                    "id": stored_id("msg"),
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                }
            else:
                item = {"id": stored_id("rs"), "type": "reasoning", "summary": [], "content": []}
            out += self._add(item)
            part = (
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if kind == "message"
                else {"type": "reasoning_text", "text": ""}
            )
            item["content"].append(part)
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._index(item),
                    content_index=0,
                    part=dict(part),
                )
            )
        item = self._open
        item["content"][0]["text"] += text
        where = {"item_id": item["id"], "output_index": self._index(item), "content_index": 0}
        if kind == "message":
            out.append(self._event("response.output_text.delta", **where, delta=text, logprobs=[]))
        else:
            out.append(self._event("response.reasoning_text.delta", **where, delta=text))
        return out

    def _close(self) -> list[Named]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = self._index(item)
        out: list[Named] = []
        truncated = self._finish is not None and self._finish.reason == "length"
        if item["type"] == "function_call":
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    name=item["name"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            item["status"] = "incomplete" if truncated else "completed"
        else:
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            if item["type"] == "message":
                out.append(self._event("response.output_text.done", **where, text=part["text"], logprobs=[]))
                item["status"] = "incomplete" if truncated else "completed"
            else:
                out.append(self._event("response.reasoning_text.done", **where, text=part["text"]))
            out.append(self._event("response.content_part.done", **where, part=dict(part)))
        out.append(self._event("response.output_item.done", output_index=index, item=json.loads(json.dumps(item))))
        return out

    def _end(self, usage: UsageReport) -> list[Named]:
        self.response["usage"] = {
            "input_tokens": usage.input_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.input_tokens + usage.output_tokens,
        }
        if self._finish is not None and self._finish.reason == "length":
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
            kind = "response.incomplete"
        else:
            self.response["status"] = "completed"
            self.response["completed_at"] = now()
            kind = "response.completed"
        return [self._event(kind, response=self._snapshot())]

    def fail(self, code: str, message: str) -> list[Named]:
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        return [self._event("response.failed", response=self._snapshot())]

    def cancel(self) -> None:
        self._open = None
        self.response["status"] = "cancelled"
