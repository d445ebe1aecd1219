"""The OpenAI chat adapter, request side: a `ChatCompletionRequest` (`/v1/chat/completions`,
`/v1/internal/chat-prompt`) → the neutral `Conversation`. Its output side is the chat service's
own bodies and chunks (services/text/chat.py, chat_output.py).

Only what is OpenAI's is decided here: the developer role, content parts, `tool_calls` dicts,
`reasoning_content`, legacy `functions` / `function_call`, and the tool definitions' shape. What
holds for every format (tool names, duplicates, tool_choice against the tools, images) is checked
by the pipeline, naming the same fields.
"""

from __future__ import annotations

import json
from typing import Any

from homeport.errors import InvalidRequestError
from homeport.schemas.chat import ChatCompletionRequest, ChatMessage, ImagePart, TextPart
from homeport.schemas.common import SamplingFields
from homeport.services.text.conversation import (
    ChatOptions,
    Conversation,
    FunctionTool,
    Image,
    Limits,
    Logprobs,
    Message,
    NamedFunction,
    Part,
    Reasoning,
    Text,
    Thinking,
    ToolCall,
    ToolChoice,
    ToolResult,
)

# The sampling knobs the conversation carries as one object; stop strings are its limits'.
_SAMPLING = tuple(name for name in SamplingFields.model_fields if name != "stop")


def from_chat_request(request: ChatCompletionRequest) -> Conversation:
    tools, choice, legacy = _tools(request)
    given = request.model_fields_set
    return Conversation(
        messages=tuple(_message(m) for m in request.messages),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=request.parallel_tool_calls,
        legacy_functions=legacy,
        limits=Limits(
            max_tokens=request.token_limit(),
            stop=tuple(request.stop_strings()) if "stop" in given else None,
        ),
        thinking=Thinking(enabled=request.enable_thinking, effort=request.reasoning_effort),
        logprobs=Logprobs(enabled=bool(request.logprobs), top=request.top_logprobs),
        options=ChatOptions(
            mode=request.mode,
            instruction_template=request.instruction_template,
            instruction_template_str=request.instruction_template_str,
            chat_template_str=request.chat_template_str,
            character=request.character,
            name1=request.name1,
            name2=request.name2,
            user_bio=request.user_bio,
            context=request.context,
            chat_instruct_command=request.chat_instruct_command,
            continue_=request.continue_,
            tool_prompt=request.tool_prompt,
        ),
        # Already validated; which fields were given is kept (a preset fills only the others).
        sampling=SamplingFields.model_construct(
            _fields_set=given & set(_SAMPLING), **{name: getattr(request, name) for name in _SAMPLING}
        ),
    )


def _message(message: ChatMessage) -> Message:
    if message.role == "tool":
        content = message.content if isinstance(message.content, str) else _parts(message.content or [])
        return Message("tool", (ToolResult(message.tool_call_id, content),), name=message.name)
    parts: list[Part] = []
    if message.role == "assistant":
        reasoning = (message.model_extra or {}).get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append(Reasoning(reasoning))
    parts += [Text(message.content)] if isinstance(message.content, str) else _parts(message.content or [])
    if message.role == "assistant":
        parts += [_tool_call(call) for call in message.tool_calls or []]
    role = "system" if message.role == "developer" else message.role
    return Message(role, tuple(parts), name=message.name)


def _parts(content: list) -> tuple[Text | Image, ...]:
    parts: list[Text | Image] = []
    for part in content:
        if isinstance(part, TextPart):
            parts.append(Text(part.text))
        elif isinstance(part, ImagePart):
            url = part.image_url.get("url")
            detail = part.image_url.get("detail")
            parts.append(Image(url if isinstance(url, str) else "", detail if isinstance(detail, str) else None))
        else:  # an input_audio part no route transcribed (chat-prompt): a media slot, as an image is
            parts.append(Image(""))
    return tuple(parts)


def _tool_call(call: dict[str, Any]) -> ToolCall:
    """A history call as clients send it: OpenAI nests the function, some send it bare."""
    function = call.get("function", call)
    function = function if isinstance(function, dict) else {}
    name, arguments, call_id = function.get("name"), function.get("arguments"), call.get("id")
    if arguments is None:
        arguments = "{}"  # a call without arguments (templates print or iterate an empty object)
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(
        id=None if call_id is None else str(call_id),
        name=name if isinstance(name, str) else ("" if name is None else str(name)),
        arguments=arguments,
    )


def _tools(request: ChatCompletionRequest) -> tuple[tuple[FunctionTool, ...], ToolChoice, bool]:
    """(tools, tool_choice, whether they came as legacy `functions` / `function_call`)."""
    if request.tools or request.tool_choice is not None:
        raw, choice, param, legacy = list(request.tools or []), request.tool_choice, "tools", False
        if isinstance(choice, dict):
            function = choice.get("function")
            named = function.get("name") if isinstance(function, dict) else None
            choice = NamedFunction(named if choice.get("type", "function") == "function" else None)
    else:
        raw = [{"type": "function", "function": f} for f in request.functions or []]
        choice, param = request.function_call, "functions"
        legacy = bool(raw) or choice is not None
        if isinstance(choice, dict):
            choice = NamedFunction(choice.get("name"))
    return tuple(_tool(i, tool, param) for i, tool in enumerate(raw)), choice, legacy


def _tool(index: int, tool: Any, param: str) -> FunctionTool:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequestError("each tool must be {'type': 'function', 'function': {...}}", param=f"{param}[{index}]")
    function = tool["function"]
    name = function.get("name")
    return FunctionTool(
        name=name if isinstance(name, str) else "",  # not a string: refused by plan_tools, naming it
        description=function.get("description") or "",
        parameters=function.get("parameters"),
    )
