"""The images service's request checks, seeds, encoding and URL store, on a fake engine; the
diffusers backend's registration and preview schedule (no torch)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from PIL import Image

from homeport import registry
from homeport.engines.diffusers.engine import _preview_steps
from homeport.errors import InvalidRequestError
from homeport.schemas.images import ImageGenerationRequest
from homeport.services.images.files import ImageFiles
from homeport.services.images.service import ImageService, encode

ENGINE = SimpleNamespace(default_size=512, scale_factor=8, can_inpaint=True,
                         knows_sampler=lambda name: name.lower().replace(" ", "_") in KNOWN)
KNOWN = {"euler_a", "dpm++_2m_karras", "ddim", "unipc"}


def job(**fields):
    request = ImageGenerationRequest(prompt=fields.pop("prompt", "a tree"), **fields)
    return ImageService(models=None)._job(ENGINE, request, request.prompt)


def test_defaults_and_seeds():
    made = job(seed=10, batch_size=2, batch_count=3)
    assert (made.width, made.height) == (512, 512)
    assert made.seeds == [10, 11, 12, 13, 14, 15] and made.batch_size == 2
    assert job(n=3, seed=0).seeds == [0, 1, 2]
    assert len(job(seed=-1).seeds) == 1  # -1: a random seed


def test_sizes():
    assert (job(size="64x128").width, job(size="64x128").height) == (64, 128)
    assert (job(width=256, height=64).width, job(width=256, height=64).height) == (256, 64)


@pytest.mark.parametrize("fields, param", [
    ({"prompt": "  "}, "prompt"), ({"size": "100x64"}, "size"), ({"size": "64"}, "size"),
    ({"width": 4000}, "width"), ({"sampler": "bogus"}, "sampler"), ({"batch_size": 8, "batch_count": 3}, "batch_count"),
])
def test_bad_fields(fields, param):
    with pytest.raises(InvalidRequestError) as caught:
        job(**fields)
    assert caught.value.param == param


def test_engine_sampler_names():
    from homeport.engines.diffusers.pipelines import known_sampler

    assert all(known_sampler(n) for n in ("euler_a", "DPM++ 2M Karras", "ddim", "UniPC", "Euler-A"))
    assert not known_sampler("bogus")


def test_known_samplers_pass():
    for name in ("euler_a", "DPM++ 2M Karras", "ddim", "UniPC"):
        assert job(sampler=name).sampler == name


def test_encoding_is_deterministic_and_in_format():
    picture = Image.new("RGB", (16, 8), (10, 200, 30))
    for fmt, pil in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        data = encode(picture, fmt, 80)
        assert data == encode(picture, fmt, 80)
        assert Image.open(io.BytesIO(data)).format == pil


def test_files_expire_and_stay_bounded():
    files = ImageFiles(keep_seconds=0)
    assert files.get(files.put(b"x", "png")) is None
    files = ImageFiles(max_bytes=3)
    first, second = files.put(b"ab", "png"), files.put(b"cd", "jpeg")
    assert files.get(first) is None and files.get(second) == (b"cd", "image/jpeg")


def test_preview_steps_spread_before_the_last():
    assert _preview_steps(10, 3) == {2, 5, 8}
    assert _preview_steps(2, 3) == {1}
    assert _preview_steps(10, 0) == set() and _preview_steps(1, 2) == set()


def test_diffusers_folders_get_the_backend(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    found = registry.recognise(tmp_path)
    assert isinstance(found, registry.Backend) and found.name == "diffusers" and found.kind == "image"
    assert found.capabilities == ("image_generation",)
    assert {a.name for a in found.load_args} == {"device", "dtype", "threads", "attention_slicing", "vae_tiling"}
