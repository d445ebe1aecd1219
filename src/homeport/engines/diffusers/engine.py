"""The diffusers engine as the model manager holds it (the `ImageGeneration` capability): one
pipeline call at a time per model in its own worker thread, jobs in arrival order, at most
`max_queue` waiting (then a 503). `callback_on_step_end` counts steps (model/info shows them),
hands previews to the job and stops the call at the next step once the job is cancelled."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from homeport.engines.base import GenerationStats, ModelInfo
from homeport.engines.capabilities import ImageJob
from homeport.engines.diffusers.pipelines import Pipelines, PipelineError, known_sampler, latents_preview
from homeport.errors import InvalidRequestError, ServiceUnavailableError


class JobCancelled(Exception):
    """Raised inside the pipeline call (from the step callback) to stop it."""


class DiffusersEngine:
    def __init__(self, pipelines: Pipelines, *, model_id: str, path: str, args: dict, max_queue: int = 16) -> None:
        self.info = ModelInfo(model_id=model_id, context_length=0, loader="diffusers", path=path)
        self.pipelines = pipelines
        self.default_size = pipelines.default_size
        self.scale_factor = pipelines.scale_factor
        self.can_inpaint = pipelines.inpaint is not None
        self._args = {**args, "device": pipelines.device, "dtype": str(pipelines.dtype).removeprefix("torch.")}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusers")
        self.max_queue = max_queue
        self._jobs = 0
        self._lock = threading.Lock()
        self._counts = {"completed": 0, "cancelled": 0, "failed": 0, "steps": 0}
        self.progress: dict[str, Any] | None = None  # the running job: step, steps, images

    # ---- Managed ---------------------------------------------------------------------------

    def effective_args(self) -> dict:
        return dict(self._args)

    def stats(self) -> GenerationStats:
        c = self._counts
        return GenerationStats(active=self._jobs, completed=c["completed"], cancelled=c["cancelled"],
                               failed=c["failed"], queued=max(0, self._jobs - (1 if self.progress else 0)))

    def job_progress(self) -> dict[str, Any] | None:
        """The running job's progress (step / steps), and the steps run since load."""
        return {"running": dict(self.progress) if self.progress else None, "steps_run": self._counts["steps"]}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- ImageGeneration -------------------------------------------------------------------

    def knows_sampler(self, name: str) -> bool:
        return known_sampler(name)

    async def generate_images(self, job: ImageJob) -> list:
        """PIL images, `len(job.seeds)` of them; `job.cancel` set → stops at the next step."""
        if self._jobs >= self.max_queue:
            raise ServiceUnavailableError(f"{self._jobs} image jobs are running or waiting; retry shortly",
                                          headers={"Retry-After": "5"})
        if job.mask is not None and not self.can_inpaint:
            raise InvalidRequestError(f"{self.info.model_id} has no inpainting pipeline", param="mask")
        self._count_job(+1)
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, self._run, job)
        except RuntimeError:
            self._count_job(-1)
            raise ServiceUnavailableError(f"the model {self.info.model_id} was unloaded") from None
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            job.cancel.set()  # the request is gone: the call stops at its next step
            raise

    def _count_job(self, change: int) -> None:
        with self._lock:
            self._jobs += change

    def _run(self, job: ImageJob) -> list:
        try:
            return self._run_job(job)
        finally:
            self._count_job(-1)

    def _run_job(self, job: ImageJob) -> list:
        import torch

        if job.cancel.is_set():
            self._counts["cancelled"] += 1
            return []
        images: list = []
        batches = [job.seeds[i:i + job.batch_size] for i in range(0, len(job.seeds), job.batch_size)]
        total = job.steps * len(batches)
        self.progress = {"step": 0, "steps": total, "images": len(job.seeds), "started": time.time()}
        try:
            with torch.inference_mode():
                for number, seeds in enumerate(batches):
                    images.extend(self._call(job, seeds, number * job.steps))
        except JobCancelled:
            self._counts["cancelled"] += 1
            return []
        except PipelineError as exc:
            self._counts["failed"] += 1
            raise InvalidRequestError(str(exc), param="sampler") from None
        except Exception:
            self._counts["failed"] += 1
            raise
        finally:
            self.progress = None
        self._counts["completed"] += 1
        return images

    def _call(self, job: ImageJob, seeds: list[int], offset: int) -> list:
        import torch

        p = self.pipelines
        if job.image is None:
            pipe = p.text2image
        else:
            pipe = p.inpaint if job.mask is not None else p.image2image
        pipe = p.with_sampler(pipe, job.sampler)
        device = "cpu" if p.device == "cpu" else p.device
        generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        count = len(seeds)
        kwargs: dict[str, Any] = dict(
            prompt=[job.prompt] * count, num_inference_steps=job.steps, guidance_scale=job.guidance,
            generator=generators, output_type="pil",
        )
        if job.negative_prompt:
            kwargs["negative_prompt"] = [job.negative_prompt] * count
        if job.image is not None:
            kwargs.update(image=[job.image] * count, strength=job.strength)
            if job.mask is not None:
                kwargs.update(mask_image=[job.mask] * count, width=job.width, height=job.height)
        else:
            kwargs.update(width=job.width, height=job.height)
        planned = _planned_steps(job)
        preview_at = _preview_steps(planned, job.previews)

        def on_step_end(pipe_, step: int, timestep, tensors: dict) -> dict:
            self._counts["steps"] += 1
            if self.progress is not None:
                self.progress["step"] = offset + step + 1
            if job.cancel.is_set():
                raise JobCancelled
            if job.on_preview is not None and step + 1 in preview_at and "latents" in tensors:
                job.on_preview(latents_preview(tensors["latents"], job.width, job.height), offset // job.steps)
            return tensors

        kwargs.update(callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
        images = list(pipe(**kwargs).images)
        if job.mask is not None:  # the VAE round trip blurs everything: keep the unmasked pixels as they were
            from PIL import Image

            original = job.image.convert("RGB")
            images = [Image.composite(image.convert("RGB"), original, job.mask.convert("L")) for image in images]
        return images


def _planned_steps(job: ImageJob) -> int:
    """The steps the pipeline runs (image-to-image runs `strength` of them)."""
    if job.image is None:
        return job.steps
    return max(1, min(job.steps, int(job.steps * job.strength)))


def _preview_steps(steps: int, previews: int) -> set[int]:
    """`previews` steps spread over the run, before its last (the final image is the last)."""
    if previews <= 0 or steps <= 1:
        return set()
    count = min(previews, steps - 1)
    return {max(1, round(steps * (i + 1) / (count + 1))) for i in range(count)}
