"""Prompt building: chat templates (and, beside them, whatever else turns messages into a prompt)."""

from homeport.services.prompts.chat_templates import (
    ChatTemplate,
    ChatTemplateLibrary,
    ChatTemplateRenderer,
    infer_stop_markers,
)

__all__ = ["ChatTemplate", "ChatTemplateLibrary", "ChatTemplateRenderer", "infer_stop_markers"]
