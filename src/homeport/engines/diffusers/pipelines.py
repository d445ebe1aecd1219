"""Loading a diffusers folder offline into the three pipelines homeport runs (text-to-image,
image-to-image, inpainting: one set of weights, `from_pipe` shares them), the sampler names the
reference API takes, and the cheap latent previews. Blocking; imports torch and diffusers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# sampler names (the reference's and diffusers' own) → scheduler class and its config overrides
SAMPLERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpm++_sde": ("DPMSolverSDEScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}


def known_sampler(name: str) -> bool:
    return _normalise(name) in _TABLE


def _normalise(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


_TABLE = {_normalise(k): v for k, v in SAMPLERS.items()}


class PipelineError(Exception):
    pass


@dataclass
class Pipelines:
    text2image: Any
    image2image: Any
    inpaint: Any | None
    device: str
    dtype: Any
    default_size: int  # the UNet's native side in pixels
    default_scheduler: Any
    scale_factor: int  # pixels per latent

    def with_sampler(self, pipe: Any, sampler: str | None) -> Any:
        """The pipeline with the request's scheduler (a fresh one from the same config)."""
        import diffusers

        if not sampler:
            pipe.scheduler = self.default_scheduler
            return pipe
        class_name, overrides = _TABLE[_normalise(sampler)]
        try:
            pipe.scheduler = getattr(diffusers, class_name).from_config(self.default_scheduler.config, **overrides)
        except Exception as exc:  # noqa: BLE001 - a scheduler this model's config cannot make
            raise PipelineError(f"sampler {sampler!r} does not fit this model ({type(exc).__name__})") from exc
        return pipe


def load_pipelines(folder: Path, *, device: str, dtype: str, threads: int, attention_slicing: bool,
                   vae_tiling: bool) -> Pipelines:
    import torch
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device cuda: torch sees no GPU")
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    torch_dtype = getattr(torch, dtype)
    try:
        # offline: the folder only, never a download; never code shipped in the folder
        text2image = AutoPipelineForText2Image.from_pretrained(
            str(folder), torch_dtype=torch_dtype, local_files_only=True, trust_remote_code=False,
            safety_checker=None, requires_safety_checker=False,
        )
    except Exception as exc:  # noqa: BLE001 - diffusers reports bad folders in many ways
        raise PipelineError(f"cannot load the pipeline ({type(exc).__name__}: {exc})") from exc
    text2image.to(device)
    text2image.set_progress_bar_config(disable=True)
    if attention_slicing:
        text2image.enable_attention_slicing()
    if vae_tiling and hasattr(text2image, "vae"):
        text2image.vae.enable_tiling()
    image2image = AutoPipelineForImage2Image.from_pipe(text2image)
    try:
        inpaint = AutoPipelineForInpainting.from_pipe(text2image)
    except Exception:  # noqa: BLE001 - a family without an inpainting pipeline: edits with a mask are a 400
        log.info("no inpainting pipeline for this model")
        inpaint = None
    for pipe in (image2image, inpaint):
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)
    scale = getattr(text2image, "vae_scale_factor", 8)
    unet = getattr(text2image, "unet", None) or getattr(text2image, "transformer", None)
    sample = getattr(getattr(unet, "config", None), "sample_size", 64) or 64
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    return Pipelines(text2image, image2image, inpaint, device, torch_dtype, int(sample) * scale,
                     text2image.scheduler, scale)


def latents_preview(latents: Any, width: int, height: int):
    """A cheap RGB preview of 4-channel SD latents (a fixed linear map, no VAE pass), one PIL image
    per latent in the batch, resized to the request's size."""
    import torch
    from PIL import Image

    weights = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173],
                            [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]], dtype=torch.float32)
    images = []
    for latent in latents.detach().to("cpu", torch.float32):
        if latent.shape[0] != 4:  # another latent space: show its first three channels
            rgb = latent[:3].permute(1, 2, 0)
        else:
            rgb = torch.einsum("chw,cr->hwr", latent, weights)
        array = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
        images.append(Image.fromarray(array, "RGB").resize((width, height), Image.Resampling.BILINEAR))
    return images
