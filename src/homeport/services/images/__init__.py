"""Image generation, edits and variations over the model manager and an ImageGeneration engine."""

from homeport.services.images.service import ImageReply, ImageService

__all__ = ["ImageReply", "ImageService"]
