"""Prompt building: chat templates, instruction templates, characters, modes and truncation."""

from homeport.services.text.prompts.builder import BuiltPrompt, ChatPromptService
from homeport.services.text.prompts.chat_templates import (
    ChatTemplate,
    ChatTemplateLibrary,
    ChatTemplateRenderer,
    infer_stop_markers,
)

__all__ = [
    "BuiltPrompt",
    "ChatPromptService",
    "ChatTemplate",
    "ChatTemplateLibrary",
    "ChatTemplateRenderer",
    "infer_stop_markers",
]
