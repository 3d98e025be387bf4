"""A tiny Qwen2-architecture model with the real Qwen2.5 tokenizer, for tests and the offline demo.

It exercises every code path a real Qwen2.5 does (same tokenizer, chat format, vocabulary
width, LoRA target modules, vLLM support) while training and running in seconds on a CPU.
It knows nothing until agentflux trains its adapters: point the registry's `model.base` at a
real model, such as Qwen/Qwen2.5-7B-Instruct, for real work.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agentflux.proxy.vocab import FIRST_ADDED_ID, build_tokenizer

logger = logging.getLogger(__name__)

EOS_ID = FIRST_ADDED_ID + 2  # <|im_end|>
PAD_ID = FIRST_ADDED_ID  # <|endoftext|>


MARKER = "agentflux-tiny.json"


def is_tiny(path: str | Path) -> bool:
    """Whether `path` is the tiny random test model (its training recipe differs from a real model's)."""
    return (Path(path) / MARKER).is_file()


def init_tiny(dest: Path, seed: int = 0, vocab: Path | None = None) -> Path:
    """Write a randomly initialised tiny model to `dest` (idempotent for the same seed)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    marker = dest / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("seed") == seed:
        return dest
    config = Qwen2Config(
        vocab_size=151936,  # Qwen2.5's width: the lm_head behaves as in the real model
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,  # head_dim 64: vLLM's CPU attention rejects smaller heads
        max_position_embeddings=8192,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        # The default 0.02 caps a tied tiny model's logits near 2.5, so training stalls at loss ~9.4.
        initializer_range=0.1,
        bos_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[EOS_ID, PAD_ID], pad_token_id=PAD_ID, bos_token_id=PAD_ID)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer = build_tokenizer(vocab)
    tokenizer.save_pretrained(dest)
    # Without this, transformers 5 records its generic backend class and vLLM loads the wrong one.
    config_path = dest / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "Qwen2Tokenizer"
    config_path.write_text(json.dumps(tokenizer_config, indent=2))
    marker.write_text(json.dumps({"seed": seed, "params": sum(p.numel() for p in model.parameters())}))
    logger.info("tiny model written to %s", dest)
    return dest
