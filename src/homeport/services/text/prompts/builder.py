"""A chat request → the prompt text: template choice, the three modes, continuation, truncation.

Template, highest first: the request's `instruction_template_str`, its `instruction_template`
(a name), the per-model settings (models/config-user.yaml), then the model's own template or the
built-in its name picks.

Modes (the reference API's):
- instruct: [system] + messages through the instruction template.
- chat: the character's context (+ user_bio) as the system text and the messages as `name: text`
  lines through the chat template; the prompt ends with `name2:`. The client's leading system
  messages are dropped, as in the reference: in this mode the character is the system prompt.
- chat-instruct: that chat transcript, wrapped in `chat_instruct_command`, is ONE user message
  rendered through the instruction template, after the client's system message.
With `continue_` the last assistant message is rendered as an open turn and the prompt cut right
after its content, so the model carries on writing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homeport.engines.base import ModelInfo
from homeport.errors import InvalidRequestError
from homeport.services.text.conversation import ChatOptions, Conversation
from homeport.services.text.prompts import instruction_templates
from homeport.services.text.prompts import messages as msgs
from homeport.services.text.prompts.characters import CharacterLibrary, substitute_names
from homeport.services.text.prompts.chat_mode import DEFAULT_CHAT_TEMPLATE, Persona, resolve_persona
from homeport.services.text.prompts.chat_templates import ChatTemplate, ChatTemplateLibrary, ChatTemplateRenderer
from homeport.services.text.prompts.images import show_slots
from homeport.services.text.prompts.instruction_templates import InstructionTemplates
from homeport.services.text.prompts.model_settings import ModelSettingsError, settings_for
from homeport.services.text.prompts.tool_prompt import (
    ToolRendering,
    ToolRenderingCache,
    history_as_text,
    tool_section,
    with_tool_section,
)
from homeport.services.text.prompts.truncation import fit
from homeport.services.text.tool_use import ToolPlan, plan_tools

# Marks where a continued reply's content ends in the rendered text; the prompt is cut there.
_CONTINUE_MARK = "<<|homeport-continue|>>"
# Placeholders rendered to find what a template writes between turns.
_USER_MARK, _REPLY_MARK, _NEXT_MARK = "<<|homeport-user|>>", "<<|homeport-reply|>>", "<<|homeport-next|>>"


@dataclass(frozen=True)
class BuiltPrompt:
    text: str  # the rendered prompt
    stops: tuple[str, ...]  # end-of-turn markers + mode-specific stops (e.g. "\nYou:" in chat mode)
    template_source: str  # the Jinja source of the outermost template (the chat template in chat mode)
    starts_in_reasoning: bool  # the prompt ends inside an opened <think>
    dropped_messages: int  # how many history messages truncation removed
    generic_tools: bool = False  # homeport wrote the tools into the prompt (the template cannot show them)


class ChatPromptService:
    def __init__(
        self,
        *,
        info: ModelInfo,
        library: ChatTemplateLibrary,
        renderer: ChatTemplateRenderer,
        user_data_dir: Path,
        load_template: ChatTemplate | None = None,
        tool_prompt: str = "auto",  # auto | template | generic (schemas/chat.py's ToolPrompt)
    ) -> None:
        self.info = info
        self.tool_prompt = tool_prompt  # the server's --tool-prompt; a request's `tool_prompt` wins
        self._tool_rendering = ToolRenderingCache()
        # A template given when the model was loaded (model/load's instruction_template): below the
        # request's own choice, above the per-model settings and the model's metadata.
        self.load_template = load_template
        self.library = library
        self.renderer = renderer
        self.characters = CharacterLibrary(user_data_dir / "characters")
        self.templates = InstructionTemplates(user_data_dir / "instruction-templates", library)
        self.models_dir = user_data_dir / "models"

    async def chat_prompt(self, conversation: Conversation) -> dict:
        """The prompt a chat request would get, untruncated (`/v1/internal/chat-prompt`)."""
        plan = plan_tools(conversation)
        built = await asyncio.to_thread(self.build, conversation, plan=plan, count_tokens=len, budget=None)
        return {"prompt": show_slots(built.text)}

    def build(
        self,
        conversation: Conversation,
        *,
        plan: ToolPlan | None,
        count_tokens: Callable[[str], int],
        budget: int | None,
    ) -> BuiltPrompt:
        """Blocking: renders (and, over `budget` tokens, re-renders) templates."""
        options = conversation.options
        continuing = options.continue_ and conversation.messages[-1].role == "assistant"
        template = self.instruction_template(options)
        system, history = msgs.split_leading_system(
            msgs.normalize(conversation.messages, keep_last_reasoning_inline=continuing)
        )
        tools = msgs.template_tools(plan.tools) if plan is not None and plan.parses_calls else None
        generic = False
        if options.mode == "instruct":
            shown = self.tool_rendering(template)
            mode = options.tool_prompt or self.tool_prompt
            generic = tools is not None and (mode == "generic" or (mode == "auto" and not shown.tools))
            # What the template cannot show (or, under homeport's tool prompt, all of it) as text.
            history = history_as_text(history, calls=generic or not shown.calls, results=generic or not shown.results)
            if generic:
                assert plan is not None
                section = tool_section(
                    tools, parallel=plan.parallel, forced_name=plan.forced_name, required=plan.choice == "required"
                )
                system, tools = with_tool_section(system, section), None
        variables: dict[str, Any] = {
            "tools": tools or None,
            "builtin_tools": None,
            "tools_in_user_message": False,
            "enable_thinking": conversation.thinking.enabled,
        }
        if conversation.thinking.effort is not None:
            # Passed only when given: templates test `reasoning_effort is defined` for their default.
            variables["reasoning_effort"] = conversation.thinking.effort
        # A character named in instruct mode is still checked: a typo should not pass silently.
        wants_persona = options.mode != "instruct" or bool(options.character)
        persona = resolve_persona(options, self.characters) if wants_persona else None
        render, outer = self._mode_renderer(options, template, system, persona, variables, continuing)
        fitted = fit(history, render, count_tokens, budget)
        continued = history[-1]["content"] if continuing else ""
        return BuiltPrompt(
            text=fitted.text,
            stops=self._stops(template, persona, options.mode),
            template_source=outer.source,
            starts_in_reasoning=_opens_reasoning(fitted.text) or _unclosed_think(continued),
            dropped_messages=fitted.dropped_messages,
            generic_tools=generic,
        )

    def tool_rendering(self, template: ChatTemplate) -> ToolRendering:
        """Whether `template` shows tools, calls and results (probed once per template)."""

        def render(messages: list[dict], tools: list[dict] | None, generation_prompt: bool) -> str:
            return self._render(template, messages, {"tools": tools}, add_generation_prompt=generation_prompt)

        return self._tool_rendering.get(template.source, render)

    def _mode_renderer(
        self,
        options: ChatOptions,
        template: ChatTemplate,
        system: str | None,
        persona: Persona | None,
        variables: dict[str, Any],
        continuing: bool,
    ) -> tuple[Callable[[list[dict]], str], ChatTemplate]:
        """(history → prompt text for the request's mode, the outermost template)."""
        if persona is None or options.mode == "instruct":
            return (lambda kept: self._instruct(template, system, kept, variables, continuing)), template

        chat = ChatTemplate("chat", options.chat_template_str or DEFAULT_CHAT_TEMPLATE, ())
        chat_variables = {**variables, "name1": persona.name1, "name2": persona.name2, "user_bio": persona.user_bio}
        if options.mode == "chat":
            prefix = "" if continuing else self._reply_prefix(chat, persona, chat_variables)
            return (lambda kept: self._chat(chat, persona, kept, chat_variables, continuing) + prefix), chat

        command = options.chat_instruct_command.replace("<|character|>", persona.name2)
        command = substitute_names(command, persona.name1, persona.name2)

        def chat_instruct(kept: list[dict]) -> str:
            # A continued reply stays out of the transcript: it is the open assistant turn after it.
            transcript = kept[:-1] if continuing else kept
            inner = self._chat(chat, persona, transcript, chat_variables, continuing=False)
            wrapped = [{"role": "user", "content": command.replace("<|prompt|>", inner.rstrip("\n"))}]
            outer_messages = [*wrapped, kept[-1]] if continuing else wrapped
            return self._instruct(template, system, outer_messages, variables, continuing)

        return chat_instruct, template

    def instruction_template(self, options: ChatOptions) -> ChatTemplate:
        if options.instruction_template_str:
            return instruction_templates.from_text(options.instruction_template_str, "instruction_template_str")
        if options.instruction_template:
            found = self.templates.get(options.instruction_template)
            if found is None:
                known = ", ".join(self.templates.names())
                raise InvalidRequestError(
                    f"unknown instruction template {options.instruction_template!r} (instruction templates: {known})",
                    param="instruction_template",
                )
            return found
        if self.load_template is not None:
            return self.load_template
        per_model = settings_for(self.models_dir, self.info.model_id)
        if isinstance(per_model.get("instruction_template_str"), str) and per_model["instruction_template_str"]:
            return instruction_templates.from_text(per_model["instruction_template_str"], "config-user.yaml")
        if isinstance(per_model.get("instruction_template"), str) and per_model["instruction_template"]:
            name = per_model["instruction_template"]
            found = self.templates.get(name)
            if found is None:
                raise ModelSettingsError(f"models/config-user.yaml names an unknown instruction template {name!r}")
            return found
        return self.library.for_model(self.info.model_id, self.info.chat_template)

    def _render(
        self, template: ChatTemplate, messages: list[dict], variables: dict, *, add_generation_prompt: bool
    ) -> str:
        return self.renderer.render(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.info.bos_token,
            eos_token=self.info.eos_token,
            **variables,
        )

    def _instruct(
        self, template: ChatTemplate, system: str | None, history: list[dict], variables: dict, continuing: bool
    ) -> str:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + history
        if continuing:
            return self._continued(template, messages, variables)
        return self._render(template, messages, variables, add_generation_prompt=True)

    def _chat(
        self, chat: ChatTemplate, persona: Persona, history: list[dict], variables: dict, continuing: bool
    ) -> str:
        """The `name: text` transcript after the context; the reply's `name2:` opener is the caller's."""
        messages = history
        if persona.context or persona.user_bio:
            messages = [{"role": "system", "content": persona.context}, *history]
        if continuing:
            return self._continued(chat, messages, variables)
        return self._render(chat, messages, variables, add_generation_prompt=False)

    def _continued(self, template: ChatTemplate, messages: list[dict], variables: dict) -> str:
        """The prompt up to the end of the last (assistant) message's content, without its end of turn."""
        last = messages[-1]
        marked = [*messages[:-1], {**last, "content": last["content"] + _CONTINUE_MARK}]
        text = self._render(template, marked, variables, add_generation_prompt=False)
        at = text.rfind(_CONTINUE_MARK)
        if at != -1:
            return text[:at]
        # The template dropped the content (some rewrite replies): open a fresh turn and write it there.
        return self._render(template, messages[:-1], variables, add_generation_prompt=True) + last["content"]

    def _reply_prefix(self, chat: ChatTemplate, persona: Persona, variables: dict) -> str:
        """What the chat template writes before a reply ("name2:"), found as the reference API does:
        render a user turn and a reply, and take what precedes the reply after the user turn's end."""
        messages = [{"role": "user", "content": _USER_MARK}, {"role": "assistant", "content": _REPLY_MARK}]
        text = self._render(chat, messages, variables, add_generation_prompt=False)
        start, end = text.find(_USER_MARK), text.find(_REPLY_MARK)
        if start == -1 or end < start:
            return f"{persona.name2}:"
        # "<user>\nAI: <reply>\n": the text after a turn ("\n") starts the text before the reply.
        between, after = text[start + len(_USER_MARK) : end], text[end + len(_REPLY_MARK) :]
        return between[len(after) :].rstrip(" ") if between.startswith(after) else f"{persona.name2}:"

    def _stops(self, template: ChatTemplate, persona: Persona | None, mode: str) -> tuple[str, ...]:
        stops: list[str] = []
        if mode != "chat":
            stops += template.stop or self._derived_stops(template)
        if mode != "instruct" and persona is not None:
            # "A single reply for the character": a new line that starts either speaker's turn ends it.
            stops += [f"\n{persona.name1}:", f"\n{persona.name2}:"]
        return tuple(dict.fromkeys(stops))

    def _derived_stops(self, template: ChatTemplate) -> list[str]:
        """For a template that writes no known end-of-turn marker: what it writes between a reply
        and the next user turn (e.g. Alpaca's "### Instruction:")."""
        messages = [
            {"role": "user", "content": _USER_MARK},
            {"role": "assistant", "content": _REPLY_MARK},
            {"role": "user", "content": _NEXT_MARK},
        ]
        try:
            text = self._render(template, messages, {}, add_generation_prompt=False)
        except InvalidRequestError:
            return []
        start, end = text.find(_REPLY_MARK), text.find(_NEXT_MARK)
        if start == -1 or end < start:
            return []
        between = text[start + len(_REPLY_MARK) : end]
        marker = between.strip()
        if not marker:
            return []
        return [("\n" if "\n" in between[: len(between) - len(between.lstrip())] else "") + marker]


def _opens_reasoning(prompt: str) -> bool:
    """The prompt ends with an opened <think> (only whitespace after it): the reply starts in reasoning."""
    at = prompt.rfind(msgs.THINK_OPEN)
    return at != -1 and not prompt[at + len(msgs.THINK_OPEN) :].strip()


def _unclosed_think(content: str) -> bool:
    return content.rfind(msgs.THINK_OPEN) > content.rfind(msgs.THINK_CLOSE)
