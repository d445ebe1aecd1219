"""A tiny random-weight Hugging Face causal LM folder, built locally (nothing is downloaded).

The tokenizer is a byte-level BPE trained here on a small built-in corpus (non-ASCII text included,
so characters really split across tokens); the model is a 2-layer Llama with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
PADDED_LOGITS = 3  # the model's vocabulary is wider than the tokenizer's, as in many real models

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there, hello again.",
    "A small model says small things in a small voice.",
    "Café crème, naïve façade, déjà vu, jalapeño, über.",
    "日本語のテキストも少しだけ。東京、大阪、京都。",
    "Emoji: 🙂 🚀 🎉 and symbols like → ≤ ≥ ∞.",
    "def add(a, b):\n    return a + b\n",
    "Once upon a time there was a tiny language model that lived in a folder.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
]


def build_tiny_model(folder: Path) -> Path:
    """Writes the tokenizer, config, generation config and safetensors weights into `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = [PAD, BOS, EOS, IM_START, IM_END]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    n_tokens = len(tokenizer)
    eos_ids = [tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(IM_END)]
    config = LlamaConfig(
        vocab_size=n_tokens + PADDED_LOGITS,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,  # peaked enough that greedy has no near-ties, random enough to sample
        bos_token_id=bos_id,
        eos_token_id=eos_ids[0],
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[n_tokens:] = 0.0  # padding logits: never real tokens
    model.save_pretrained(folder, safe_serialization=True)
    generation = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    generation.save_pretrained(folder)
    return folder


def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, built once per test session."""
    folder = tmp_path_factory.getbasetemp() / "tiny-hf-model"
    if not (folder / "config.json").is_file():
        build_tiny_model(folder)
    return folder


def corrupt_copy(source: Path, target: Path, *, config: str | None = None, drop_weights: bool = False) -> Path:
    """A copy of the tiny model with a broken config.json or no weights, for failure tests."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if drop_weights and path.suffix in (".safetensors", ".bin"):
            continue
        (target / path.name).write_bytes(path.read_bytes())
    if config is not None:
        (target / "config.json").write_text(config)
    return target


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def sentencepiece_style_tokenizer():
    """A tiny Llama-2-style tokenizer (▁ for spaces, <0xNN> byte fallback, no model needed)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, BOS: 1, EOS: 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "▁w", "ll", "▁he", "▁hell", "▁hello", "or", "▁wor", "ld",
              "▁world"]
    vocab.update({piece: len(vocab) + i for i, piece in enumerate(pieces)})
    merges = [("▁", "h"), ("▁", "w"), ("l", "l"), ("▁h", "e"), ("▁he", "ll"), ("▁hell", "o"), ("o", "r"),
              ("▁w", "or"), ("l", "d"), ("▁wor", "ld")]
    bpe = models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True)
    backend = Tokenizer(bpe)
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token="<unk>")
