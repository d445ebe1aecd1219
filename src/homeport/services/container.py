"""The services an app serves, built once from the settings and the loaded engine."""

from __future__ import annotations

from dataclasses import dataclass

from homeport.engines.base import TextEngine
from homeport.engines.embeddings import EmbedderConfig
from homeport.services.chat import ChatPromptBuilder, ChatService
from homeport.services.completions import CompletionService
from homeport.services.embeddings import EmbeddingService
from homeport.services.prompts.chat_templates import ChatTemplateLibrary, ChatTemplateRenderer
from homeport.services.rerank import RerankService
from homeport.services.internal import InternalService
from homeport.services.moderations import ModerationService
from homeport.services.presets import PresetLibrary
from homeport.settings import Settings

USER_TEMPLATE_TABLE = "chat_templates.yaml"


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: TextEngine
    completions: CompletionService
    chat: ChatService
    internal: InternalService
    embeddings: EmbeddingService
    moderations: ModerationService
    rerank: RerankService

    @classmethod
    def build(cls, settings: Settings, engine: TextEngine) -> Services:
        library = ChatTemplateLibrary(settings.user_data_dir / USER_TEMPLATE_TABLE)
        template = library.for_model(engine.info.model_id, engine.info.chat_template)
        prompts = ChatPromptBuilder(
            template, ChatTemplateRenderer(), bos_token=engine.info.bos_token, eos_token=engine.info.eos_token
        )
        presets = PresetLibrary(settings.user_data_dir / "presets")
        limits = {"debug": settings.debug, "max_queue": settings.max_queue}
        embeddings = EmbeddingService.from_config(
            EmbedderConfig(model=settings.embedding_model, device=settings.embedding_device, model_dir=settings.model_dir)
        )
        return cls(
            settings=settings,
            engine=engine,
            completions=CompletionService(engine, presets, **limits),
            chat=ChatService(engine, prompts, presets, **limits),
            internal=InternalService(engine, settings.model_dir, presets),
            embeddings=embeddings,
            moderations=ModerationService(embeddings, threshold=settings.moderation_threshold),
            rerank=RerankService(embeddings),
        )
