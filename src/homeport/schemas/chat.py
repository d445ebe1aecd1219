"""`POST /v1/chat/completions`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, model_validator

from homeport.schemas.audio import InputAudioPart
from homeport.schemas.common import SamplingFields, WireModel


DEFAULT_CHAT_INSTRUCT_COMMAND = (
    'Continue the chat dialogue below. Write a single reply for the character "<|character|>".\n\n<|prompt|>'
)


class TextPart(WireModel):
    type: Literal["text"]
    text: str


class ImagePart(WireModel):
    type: Literal["image_url"]
    image_url: dict[str, Any]


ContentPart = Annotated[TextPart | ImagePart | InputAudioPart, Field(discriminator="type")]  # audio: see services/audio/chat_audio.py


class ChatMessage(WireModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self


# Who shows a request's tools to the model (`--tool-prompt`, a request's `tool_prompt`).
ToolPrompt = Literal["auto", "template", "generic"]


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Who shows the tools to the model: its template (`template`), homeport's own tool prompt
    # (`generic`), or the template where it can and homeport otherwise (`auto`); None: --tool-prompt.
    tool_prompt: ToolPrompt | None = None
    enable_thinking: bool = True
    reasoning_effort: str | None = None

    # The reference API's prompt-building fields (text-generation-webui): modes, templates, characters.
    mode: Literal["instruct", "chat", "chat-instruct"] = "instruct"
    instruction_template: str | None = None  # a name under user_data/instruction-templates
    instruction_template_str: str | None = None  # Jinja, or that folder's YAML format
    chat_template_str: str | None = None  # the chat-mode template (name1/name2 lines)
    character: str | None = None  # a name under user_data/characters; None: "Assistant"
    # Both spellings work (the reference accepts only name1/name2 and silently drops the others).
    name1: str | None = Field(default=None, validation_alias=AliasChoices("name1", "user_name"))
    name2: str | None = Field(default=None, validation_alias=AliasChoices("name2", "bot_name"))
    user_bio: str | None = None
    context: str | None = None  # replaces the character's context
    greeting: str | None = None  # read for compatibility; like the reference, not part of the prompt
    chat_instruct_command: str = Field(
        default=DEFAULT_CHAT_INSTRUCT_COMMAND,
        validation_alias=AliasChoices("chat_instruct_command", "chat-instruct_command"),
    )
    continue_: bool = Field(default=False, validation_alias=AliasChoices("continue_", "continue"))

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
