"""The services an app serves: per-model ones (built for each loaded model) and shared ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from homeport.engines.base import TextEngine
from homeport.engines.embeddings import EmbedderConfig, RerankerConfig, embedding_entry, reranker_entry
from homeport.errors import HomeportError, InvalidRequestError
from homeport.registry.library import ModelEntry, ModelLibrary
from homeport.services.text.chat import ChatService
from homeport.services.text.completions import CompletionService
from homeport.services.embeddings.embeddings import EmbeddingService
from homeport.services.text.internal import InternalService
from homeport.services.lora import LoraService
from homeport.engines.speech.backends import speech_entries
from homeport.services.audio import AudioService
from homeport.services.images import ImageService
from homeport.registry.manager import EngineLoader, ModelManager
from homeport.services.embeddings.moderations import ModerationService
from homeport.services.text.presets import PresetLibrary
from homeport.services.text.prompts import ChatPromptService, ChatTemplate, ChatTemplateLibrary, ChatTemplateRenderer
from homeport.services.text.prompts import instruction_templates
from homeport.services.text.prompts.media_policy import MediaPolicy
from homeport.services.embeddings.rerank import RerankService
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
    loras: LoraService
    audio: AudioService | None = None  # transcription, translation, speech
    images: ImageService | None = None  # generations, edits, variations

    @classmethod
    def build(
        cls,
        settings: Settings,
        engine: TextEngine | None,
        *,
        entry: ModelEntry | None = None,
        loader: EngineLoader | None = None,
        model_library: ModelLibrary | None = None,
    ) -> Services:
        """`engine` is the model loaded at start-up (None: `entry`, loaded by the app once it
        serves); `loader` loads others from the library (None: only that one is served)."""
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
                tool_prompt=settings.tool_prompt,
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

        if entry is None:
            if engine is None:
                raise ValueError("Services.build needs the start-up engine or its entry")
            entry = ModelEntry(engine.info.model_id, Path(engine.info.path), "gguf", 0)
        offered = model_library or ModelLibrary(settings.model_dir)
        # Each kind's default model: the start-up text model, the embedding model (a 503 on use
        # when it cannot be found, as before), the rerank cross-encoder when one is configured.
        defaults: dict[str, str | HomeportError] = {}
        extra = [entry]
        try:
            embedding = embedding_entry(
                EmbedderConfig(model=settings.embedding_model, device=settings.embedding_device,
                               model_dir=settings.model_dir)
            )
        except HomeportError as exc:
            defaults["embedding"] = exc
        else:
            defaults["embedding"] = embedding.id
            extra.append(embedding)
        if settings.rerank_model is not None:  # a bad folder is a StartupError now, not on first use
            rerank = reranker_entry(
                RerankerConfig(settings.rerank_model, device=settings.embedding_device, model_dir=settings.model_dir)
            )
            defaults["rerank"] = rerank.id
            extra.append(rerank)
        for kind, speech in speech_entries(settings).items():  # the bundled Whisper base and hibari voices
            if isinstance(speech, ModelEntry):
                defaults[kind] = speech.id
                extra.append(speech)
            else:
                defaults[kind] = speech
        if settings.image_model:  # a bad folder is a StartupError, not a surprise on first use
            image = _image_entry(settings)
            defaults["image"] = image.id
            extra.append(image)
        models = ModelManager(
            library=ModelLibrary(offered.model_dir, extra=(*extra, *offered.extra)),
            loader=loader if loader is not None else _OtherKindsLoader(settings),
            build_services=build_services,
            default_model=entry.id,
            defaults=defaults,
            max_loaded=settings.max_loaded_models,
            idle_timeout=settings.idle_timeout * 60,
            aliases=settings.model_aliases,
            unknown_to_default=not settings.strict_model_names,
        )
        if engine is not None:
            models.adopt(entry, engine)
        embeddings = EmbeddingService(models=models)
        return cls(
            settings=settings,
            models=models,
            embeddings=embeddings,
            moderations=ModerationService(embeddings, threshold=settings.moderation_threshold),
            rerank=RerankService(embeddings, models=models),
            loras=LoraService(models, settings.user_data_dir),
            audio=AudioService(models),
            images=ImageService(models),
        )


class _OtherKindsLoader:
    """Without a library loader (only the start-up text model is served), the embedding and rerank
    models still load on demand, as they always did."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, entry: ModelEntry, args: dict):
        from homeport.registry.loading import load_engine
        from homeport.errors import ServiceUnavailableError

        if entry.kind == "text":
            raise ServiceUnavailableError(f"the model '{entry.id}' is not loaded and this server cannot load models")
        return load_engine(entry, self.settings, args)


def _image_entry(settings: Settings) -> ModelEntry:
    """--image-model: a name the library knows, or a diffusers folder's path."""
    from homeport.errors import StartupError
    from homeport.registry import recognise

    found = ModelLibrary(settings.model_dir).find(settings.image_model)
    path = Path(settings.image_model).expanduser()
    if found is None and path.is_dir() and getattr(recognise(path), "kind", None) == "image":
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        found = ModelEntry(path.name, path, "diffusers", size, "image", "diffusers")
    if found is None or found.kind != "image":
        raise StartupError(f"--image-model {settings.image_model}: not a diffusers folder (looked for a path, "
                           f"and in {settings.model_dir})")
    return found


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
