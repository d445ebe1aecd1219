"""The services an app serves: per-model ones (built for each loaded model) and shared ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from homeport.engines.base import TextEngine
from homeport.engines.embeddings import EmbedderConfig, RerankerConfig
from homeport.errors import InvalidRequestError
from homeport.model_paths import ModelEntry, ModelLibrary
from homeport.services.chat import ChatService
from homeport.services.completions import CompletionService
from homeport.services.embeddings import EmbeddingService
from homeport.services.internal import InternalService
from homeport.services.model_manager import EngineLoader, ModelManager
from homeport.services.moderations import ModerationService
from homeport.services.presets import PresetLibrary
from homeport.services.prompts import ChatPromptService, ChatTemplate, ChatTemplateLibrary, ChatTemplateRenderer
from homeport.services.prompts import instruction_templates
from homeport.services.prompts.media_policy import MediaPolicy
from homeport.services.rerank import CrossEncoderService, RerankService
from homeport.settings import Settings

USER_TEMPLATE_TABLE = "chat_templates.yaml"


@dataclass(frozen=True)
class ModelServices:
    """What one loaded model serves."""

    engine: TextEngine
    prompts: ChatPromptService
    completions: CompletionService
    chat: ChatService
    internal: InternalService


@dataclass(frozen=True)
class Services:
    settings: Settings
    models: ModelManager[ModelServices]
    embeddings: EmbeddingService
    moderations: ModerationService
    rerank: RerankService

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: TextEngine,
        *,
        entry: ModelEntry | None = None,
        loader: EngineLoader | None = None,
        model_library: ModelLibrary | None = None,
    ) -> Services:
        """`engine` is the model loaded at start-up; `loader` loads others from the library
        (None: only that one is served)."""
        presets = PresetLibrary(settings.user_data_dir / "presets")
        renderer = ChatTemplateRenderer()  # shared: it caches compiled templates
        library = ChatTemplateLibrary(settings.user_data_dir / USER_TEMPLATE_TABLE)

        def build_services(model_engine: TextEngine, load_template: ChatTemplate | None = None) -> ModelServices:
            prompts = ChatPromptService(
                info=model_engine.info,
                library=library,
                renderer=renderer,
                user_data_dir=settings.user_data_dir,
                load_template=load_template,
            )
            limits = {"debug": settings.debug, "max_queue": settings.max_queue}
            media = MediaPolicy(settings.allow_remote_media, settings.remote_media_allow_private)
            return ModelServices(
                engine=model_engine,
                prompts=prompts,
                completions=CompletionService(model_engine, presets, **limits, media=media),
                chat=ChatService(model_engine, prompts, presets, **limits, media=media),
                internal=InternalService(model_engine, presets),
            )

        entry = entry or ModelEntry(engine.info.model_id, Path(engine.info.path), "gguf", 0)
        offered = model_library or ModelLibrary(settings.model_dir)
        models = ModelManager(
            library=ModelLibrary(offered.model_dir, extra=(entry, *offered.extra)),
            loader=loader,
            build_services=build_services,
            default_model=entry.id,
            max_loaded=settings.max_loaded_models,
            idle_timeout=settings.idle_timeout * 60,
            aliases=settings.model_aliases,
            unknown_to_default=not settings.strict_model_names,
        )
        models.adopt(entry, engine)
        embeddings = EmbeddingService.from_config(
            EmbedderConfig(model=settings.embedding_model, device=settings.embedding_device, model_dir=settings.model_dir)
        )
        return cls(
            settings=settings,
            models=models,
            embeddings=embeddings,
            moderations=ModerationService(embeddings, threshold=settings.moderation_threshold),
            rerank=RerankService(embeddings, _cross_encoder(settings)),
        )


def _cross_encoder(settings: Settings) -> CrossEncoderService | None:
    """The rerank cross-encoder, or None (rerank by embedding similarity). A bad folder is a StartupError."""
    if settings.rerank_model is None:
        return None
    config = RerankerConfig(settings.rerank_model, device=settings.embedding_device, model_dir=settings.model_dir)
    return CrossEncoderService.from_config(config)


def load_template(settings: Settings, name: str | None, text: str | None) -> ChatTemplate | None:
    """model/load's instruction_template (a name under user_data) or instruction_template_str."""
    if text:
        return instruction_templates.from_text(text, "instruction_template_str")
    if not name:
        return None
    templates = instruction_templates.InstructionTemplates(
        settings.user_data_dir / "instruction-templates", ChatTemplateLibrary(settings.user_data_dir / USER_TEMPLATE_TABLE)
    )
    found = templates.get(name)
    if found is None:
        known = ", ".join(templates.names())
        raise InvalidRequestError(f"unknown instruction template {name!r} (instruction templates: {known})", param="instruction_template")
    return found
