"""A tiny random-weight multimodal projector (mmproj GGUF) for the default model, Gemma 3 270M.

No real vision model is available offline, so tests fabricate one and drive llama.cpp's real mtmd
loading, image preprocessing, encoding and decoding with it. Projector type `gemma3`: it is the
projector of the text model's own family (mtmd wraps an image in `<start_of_image>` ...
`<end_of_image>`, tokens the Gemma 3 vocabulary has) and it needs the fewest extra tensors (a
SigLIP ViT, then average pooling, an RMS norm and one projection), yet it exercises the
non-causal image attention real Gemma 3 models need. Sizes: a 32x32 image in 4x4 patches (8x8
patches), one ViT block of width 32, pooled 2x2 into 4x4 = 16 tokens per image, projected to the
text model's embedding size. Keys and tensor names follow llama.cpp's tools/mtmd/clip-impl.h and
clip.cpp (`load_hparams`, `load_tensors`, `clip_graph_siglip`).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

IMAGE_SIZE = 32
PATCH_SIZE = 4
MERGE = 2  # clip.vision.projector.scale_factor: pooling kernel per side
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE // MERGE) ** 2  # 16
VISION_EMBD = 32
VISION_HEADS = 2
VISION_FF = 64  # must differ from VISION_EMBD, or clip.cpp takes up/down for swapped legacy weights


def write_tiny_mmproj(out: Path, text_embd: int = 640, seed: int = 0) -> Path:
    """Writes a `gemma3` projector whose output size is `text_embd` (640 fits the default model)."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float) -> np.ndarray:
        return rng.normal(0.0, scale, shape).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    writer = gguf.GGUFWriter(out, "clip")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "gemma3")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.projector.scale_factor", MERGE)
    writer.add_uint32("clip.vision.embedding_length", VISION_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", VISION_FF)
    writer.add_uint32("clip.vision.block_count", 1)
    writer.add_uint32("clip.vision.attention.head_count", VISION_HEADS)
    writer.add_uint32("clip.vision.projection_dim", text_embd)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    # numpy shapes are ggml's reversed: a ggml weight [n_in, n_out] is a numpy (n_out, n_in) array.
    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    d = VISION_EMBD
    w = 1.0 / np.sqrt(d)  # keeps each layer's activations near unit size
    tensors = {
        "v.patch_embd.weight": normal(d, 3, PATCH_SIZE, PATCH_SIZE, scale=1.0 / np.sqrt(3 * PATCH_SIZE**2)),
        "v.patch_embd.bias": zeros(d),
        "v.position_embd.weight": normal(n_patches, d, scale=0.1),
        "v.blk.0.ln1.weight": ones(d),
        "v.blk.0.ln1.bias": zeros(d),
        "v.blk.0.attn_q.weight": normal(d, d, scale=w),
        "v.blk.0.attn_q.bias": zeros(d),
        "v.blk.0.attn_k.weight": normal(d, d, scale=w),
        "v.blk.0.attn_k.bias": zeros(d),
        "v.blk.0.attn_v.weight": normal(d, d, scale=w),
        "v.blk.0.attn_v.bias": zeros(d),
        "v.blk.0.attn_out.weight": normal(d, d, scale=w),
        "v.blk.0.attn_out.bias": zeros(d),
        "v.blk.0.ln2.weight": ones(d),
        "v.blk.0.ln2.bias": zeros(d),
        "v.blk.0.ffn_up.weight": normal(VISION_FF, d, scale=w),
        "v.blk.0.ffn_up.bias": zeros(VISION_FF),
        "v.blk.0.ffn_down.weight": normal(d, VISION_FF, scale=1.0 / np.sqrt(VISION_FF)),
        "v.blk.0.ffn_down.bias": zeros(d),
        "v.post_ln.weight": ones(d),
        "v.post_ln.bias": zeros(d),
        "mm.soft_emb_norm.weight": ones(d),
        # ggml [text_embd, d]: clip.cpp multiplies by its transpose, mapping d -> text_embd.
        "mm.input_projection.weight": normal(d, text_embd, scale=w),
    }
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
