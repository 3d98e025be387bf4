"""Building the configured backend from the registry's `model` settings."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from agentflux.proxy import embedded
from agentflux.proxy.backends import Backend
from agentflux.proxy.protocol import FORMATS, ChatFormat, chat_format
from agentflux.proxy.tiny_model import is_tiny
from agentflux.registry.schema import ModelSettings


class ModelNotFound(Exception):
    """The configured model cannot be used; the message says why and what to run or change."""


# config.json `model_type` -> the chat format its family is trained and served in.
FAMILIES = {"qwen2": "qwen2.5", "gemma3_text": "gemma3", "gemma3": "gemma3"}
WEIGHTS = ("*.safetensors", "*.bin", "*.pt")
HUB_NAME = re.compile(r"^\w[\w.-]*/[\w.-]+$")  # org/name, as in Qwen/Qwen2.5-7B-Instruct


def model_path(settings: ModelSettings, base_dir: Path) -> str:
    """The base model as the backends load it: a directory (relative to the registry) or a hub name.

    No `model.base` means the embedded model (Gemma 3 270M, `agentflux model fetch`)."""
    if not settings.base:
        return str(embedded.require(embedded.default_dir()))
    candidate = Path(settings.base).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if not candidate.exists():
        if HUB_NAME.match(settings.base):
            return settings.base
        raise ModelNotFound(f"model.base {settings.base!r}: no such folder ({candidate})")
    folder = candidate.resolve()
    if (folder / embedded.MANIFEST).exists():
        embedded.require(folder)
    elif not any(any(folder.glob(pattern)) for pattern in WEIGHTS):
        raise ModelNotFound(
            f"model.base {settings.base!r}: {folder} has no weights (*.safetensors or *.bin); "
            "point it at a complete model folder, or run `agentflux model fetch` for the embedded one"
        )
    return str(folder)


def model_format(settings: ModelSettings, path: str) -> ChatFormat:
    """The chat format of the model at `path`: the registry's, checked against the model's
    config, or the one its family uses when the registry says `auto`."""
    family = _model_type(path)
    detected = FAMILIES.get(family or "")
    if settings.chat_format == "auto":
        if detected is None:
            raise ModelNotFound(
                f"cannot tell the chat format of {path} (model_type {family or 'unknown'}); "
                f"set model.chat_format to one of: {', '.join(FORMATS)}"
            )
        return chat_format(detected)
    if detected is not None and detected != settings.chat_format:
        raise ModelNotFound(
            f"model.chat_format {settings.chat_format!r} does not match the model {path} "
            f"(model_type {family}, format {detected!r}); set chat_format to {detected!r} or auto"
        )
    return chat_format(settings.chat_format)


def _model_type(path: str) -> str | None:
    config = Path(path) / "config.json"
    if config.is_file():
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    lowered = path.lower()  # a hub name: its family is in its name
    return "qwen2" if "qwen2" in lowered else "gemma3_text" if "gemma-3" in lowered else None


def bf16_supported() -> bool:
    """Whether bf16 is fast here: a CUDA device that has it, or a CPU with AVX-512 BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, path: str) -> str:
    """`auto`: bfloat16 where it is fast (about twice float32's speed on such a CPU), else
    float32; the tiny test model always runs in float32, the precision its tests compare in."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_supported() and not is_tiny(path) else "float32"


def create_backend(settings: ModelSettings, base_dir: Path) -> Backend:
    """Load the model (this takes seconds to minutes): call it off the event loop."""
    path = model_path(settings, base_dir)
    if settings.backend == "transformers":
        from agentflux.proxy.backends.hf import TransformersBackend

        return TransformersBackend(path, dtype=resolve_dtype(settings.dtype, path), device=settings.device,
                                   max_json_tokens=settings.max_json_tokens)  # fmt: skip
    if settings.backend == "vllm":
        from agentflux.proxy.backends.vllm import VLLMBackend

        return VLLMBackend(
            path,
            dtype=settings.dtype,
            max_loras=settings.max_loras,
            max_lora_rank=settings.max_lora_rank,
            max_cpu_loras=settings.max_cpu_loras,
            max_model_len=settings.max_model_len,
            memory_fraction=settings.memory_fraction,
            max_json_tokens=settings.max_json_tokens,
        )
    from agentflux.proxy.backends.openai import VLLMServerBackend

    assert settings.server_url is not None
    api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    return VLLMServerBackend(
        settings.server_url, path, model=settings.server_model, api_key=api_key, max_json_tokens=settings.max_json_tokens
    )
