"""Image generation on diffusers pipelines (a folder with model_index.json): text-to-image,
image-to-image and inpainting from the same weights. This package only registers the backend;
torch and diffusers are imported inside `load` (backend.py) and by engine.py."""

from homeport.engines.diffusers.backend import DIFFUSERS
from homeport.registry import register

register(DIFFUSERS)
