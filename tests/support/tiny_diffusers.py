"""A tiny random-weight Stable Diffusion pipeline, saved with `save_pretrained` in a few seconds:
real diffusers classes (CLIP text encoder and tokenizer, UNet2DConditionModel, AutoencoderKL, DDIM)
with toy sizes, so tests drive the real loading and pipeline paths without any downloaded weights.
The tokenizer's vocabulary is built here (bytes only, no merges): no hub."""

from __future__ import annotations

import json
from pathlib import Path


def _byte_chars() -> list[str]:
    """The byte-level BPE alphabet (GPT-2's bytes_to_unicode): one printable character per byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {token: i for i, token in enumerate([*chars, *(c + "</w>" for c in chars)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32), len(vocab)


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Writes the pipeline into `folder` (made if missing) and returns it."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer, vocab_size = _tokenizer(folder / "_vocab")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
        projection_dim=32,
    ))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 32), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=64,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    import shutil

    shutil.rmtree(folder / "_vocab", ignore_errors=True)
    return folder


if __name__ == "__main__":
    import sys

    print(build_tiny_sd(Path(sys.argv[1])))
