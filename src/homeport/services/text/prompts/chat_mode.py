"""The chat modes' pieces: who is talking (names, context, bio) and the `name: text` template.

Names: the request's name1/name2 win, then the character file's, then "You" and the character's
file name. The character's context (or the request's `context`) becomes the system text.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeport.services.text.conversation import ChatOptions
from homeport.services.text.prompts.characters import CharacterLibrary, substitute_names

DEFAULT_USER_NAME = "You"

# The reference API's default chat template: one `name: text` line per turn, tool traffic in
# brackets. The user bio follows the context once, at the top.
DEFAULT_CHAT_TEMPLATE = """\
{%- for message in messages -%}
    {%- if message.role == 'system' -%}
        {%- if message.content -%}
            {{- message.content + '\\n\\n' -}}
        {%- endif -%}
        {%- if user_bio and loop.first -%}
            {{- user_bio + '\\n\\n' -}}
        {%- endif -%}
    {%- elif message.role == 'tool' -%}
        {{- '[Tool result: ' + message.content + ']\\n' -}}
    {%- elif message.role == 'assistant' and message.tool_calls -%}
        {%- if message.content -%}
            {{- name2 + ': ' + message.content + '\\n' -}}
        {%- endif -%}
        {%- for call in message.tool_calls -%}
            {{- '[Calling: ' + call.function.name + '(' + call.function.arguments + ')]\\n' -}}
        {%- endfor -%}
    {%- elif message.role == 'user' -%}
        {{- name1 + ': ' + message.content + '\\n' -}}
    {%- else -%}
        {{- name2 + ': ' + message.content + '\\n' -}}
    {%- endif -%}
{%- endfor -%}
"""


@dataclass(frozen=True)
class Persona:
    name1: str  # the user
    name2: str  # the character
    context: str  # names substituted
    user_bio: str


def resolve_persona(options: ChatOptions, characters: CharacterLibrary) -> Persona:
    character = characters.load(options.character)
    name1 = options.name1 or character.user_name or DEFAULT_USER_NAME
    name2 = options.name2 or character.name
    # An empty string means "not given", as in the reference API, whose defaults are "".
    context = options.context or character.context
    return Persona(
        name1=name1,
        name2=name2,
        context=substitute_names(context, name1, name2).strip(),
        user_bio=substitute_names(options.user_bio or "", name1, name2).strip(),
    )
