"""The chat pipeline's request: a conversation in no wire format.

Each wire adapter (OpenAI chat, Anthropic Messages, OpenAI Responses: services/wire) maps its
request onto a `Conversation` and checks what only its format can get wrong; the pipeline
(chat.py, prompts/, tool_use.py) reads nothing else. What a chat template needs (OpenAI-style
message dicts) is made from it in one place, prompts/messages.py.

The long list of sampling knobs stays one object, `SamplingFields` (shared with completions, which
presets and `build_sampling` read); every other fact has its own typed field here, and is never
repeated there (`sampling.stop` is left unset: the stop strings are the `limits`').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from homeport.schemas.common import SamplingFields

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Image:
    url: str  # a data: URL, or an http(s) URL (fetched only under --allow-remote-media)
    detail: str | None = None


@dataclass(frozen=True)
class ToolCall:
    """An earlier call the assistant made."""

    id: str | None
    name: str
    arguments: str  # JSON text, as the model wrote it (or the client sent it)


@dataclass(frozen=True)
class ToolResult:
    """What a call returned: the only part of a `tool` message."""

    call_id: str | None
    content: str | tuple[Text | Image, ...]
    is_error: bool = False


@dataclass(frozen=True)
class Reasoning:
    """An earlier reply's reasoning, sent back by the client."""

    text: str
    signature: str | None = None


Part = Text | Image | ToolCall | ToolResult | Reasoning


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...] = ()
    name: str | None = None


@dataclass(frozen=True)
class FunctionTool:
    name: str  # checked by tool_use.plan_tools (1-64 of [A-Za-z0-9_.-])
    description: str | None = None
    parameters: dict[str, Any] | None = None  # the JSON schema of its arguments; None: any object


@dataclass(frozen=True)
class NamedFunction:
    """A tool_choice that forces one function."""

    name: str | None  # None: the request named none (refused by plan_tools)


# auto | none | required (any other string is refused by plan_tools, naming the field), a named
# function, or None: not given (auto, and allowed without tools).
ToolChoice = str | NamedFunction | None


@dataclass(frozen=True)
class Limits:
    max_tokens: int | None = None  # None: what the context leaves
    stop: tuple[str, ...] | None = None  # the client's stop strings; None: not given (a preset's apply)

    def stop_strings(self) -> tuple[str, ...]:
        return self.stop or ()


@dataclass(frozen=True)
class Thinking:
    """The chat template's reasoning switch. (A thinking budget is an argument of ChatService.turn.)"""

    enabled: bool = True  # the template's enable_thinking
    effort: str | None = None  # the template's reasoning_effort; None: left undefined


@dataclass(frozen=True)
class Logprobs:
    enabled: bool = False
    top: int | None = None  # alternatives per token (only with enabled)


@dataclass(frozen=True)
class ChatOptions:
    """The reference API's prompt-building options (text-generation-webui): modes, templates,
    characters, continuation; and who shows the tools to the model."""

    mode: Literal["instruct", "chat", "chat-instruct"] = "instruct"
    instruction_template: str | None = None  # a name under user_data/instruction-templates
    instruction_template_str: str | None = None  # Jinja, or that folder's YAML format
    chat_template_str: str | None = None  # the chat-mode template (name1/name2 lines)
    character: str | None = None  # a name under user_data/characters; None: "Assistant"
    name1: str | None = None
    name2: str | None = None
    user_bio: str | None = None
    context: str | None = None  # replaces the character's context
    # The chat-instruct wrapper (<|character|>, <|prompt|>): the OpenAI adapter gives the reference's
    # default (schemas/chat.py); the other formats use instruct mode only.
    chat_instruct_command: str = ""
    continue_: bool = False  # carry on writing the last assistant message
    tool_prompt: str | None = None  # auto | template | generic; None: the server's --tool-prompt


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = None
    parallel_tool_calls: bool | None = None  # None: allowed
    # OpenAI's legacy `functions` / `function_call`: answered with `function_call`, one call at a
    # time, and errors name those fields.
    legacy_functions: bool = False
    limits: Limits = Limits()
    thinking: Thinking = Thinking()
    logprobs: Logprobs = Logprobs()
    options: ChatOptions = ChatOptions()
    # Sampling, seed, n, the response format / grammar, preset, truncation_length, stream: the
    # knobs completions share (its `stop` unset, see above).
    sampling: SamplingFields = field(default_factory=SamplingFields)
