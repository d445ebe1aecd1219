"""The diffusers backend's declaration: what folders it serves, its load arguments, how it loads.
No torch or diffusers import here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from homeport.errors import InvalidRequestError, StartupError
from homeport.registry import Backend, LoadArg, arg_value, check_args_fit, json_object

if TYPE_CHECKING:
    from homeport.registry.library import ModelEntry
    from homeport.settings import Settings

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def is_diffusers(folder: Path) -> bool:
    """A pipeline folder: model_index.json written by diffusers."""
    index = json_object(folder / "model_index.json")
    return any(key in index for key in ("_diffusers_version", "_class_name"))


def load_diffusers(entry: ModelEntry, settings: Settings, args: dict[str, Any]) -> Any:
    from homeport.engines.diffusers.engine import DiffusersEngine
    from homeport.engines.diffusers.pipelines import PipelineError, load_pipelines

    check_args_fit(entry, DIFFUSERS, args)
    values = {a.name: arg_value(DIFFUSERS, a.name, args, settings) for a in DIFFUSERS.load_args}
    # checked here, not by the declaration: `device`, `dtype`, `threads` are shared with other backends
    for name, allowed in (("device", DEVICES), ("dtype", DTYPES)):
        if values[name] not in allowed:
            raise InvalidRequestError(f"{name} must be one of {', '.join(allowed)}", param=f"args.{name}")
    try:
        pipelines = load_pipelines(entry.path, **values)
    except PipelineError as exc:
        raise StartupError(f"{entry.id}: {exc}") from exc
    return DiffusersEngine(pipelines, model_id=entry.id, path=str(entry.path), args=values,
                           max_queue=max(1, settings.max_queue))


DIFFUSERS = Backend(
    name="diffusers", kind="image", format="diffusers", files="folder", detect=is_diffusers,
    load=load_diffusers, capabilities=("image_generation",), priority=40,
    load_args=(
        LoadArg("device", str, "cpu, cuda or auto (cuda when torch sees a GPU)", default="auto"),
        LoadArg("dtype", str, "weights dtype: auto (float32 on CPU, float16 on CUDA), float32, bfloat16 or float16",
                default="auto"),
        LoadArg("threads", int, "torch CPU threads (0 = torch's default)", default=0),
        LoadArg("attention_slicing", bool, "compute attention in slices (less memory, a little slower)", default=False),
        LoadArg("vae_tiling", bool, "decode the VAE in tiles (large sizes in less memory)", default=False),
    ),
)
