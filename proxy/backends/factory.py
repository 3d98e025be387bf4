"""Building the configured backend from the registry's `model` settings."""

from __future__ import annotations

import os
from pathlib import Path

from agentflux.proxy.backends import Backend
from agentflux.registry.schema import ModelSettings


class ModelNotConfigured(Exception):
    """No base model is set; the message says how to set one."""


def model_path(settings: ModelSettings, base_dir: Path) -> str:
    """The base model as the backends load it: a directory (relative to the registry) or a hub name."""
    if not settings.base:
        raise ModelNotConfigured(
            "no model configured: set model.base in the registry (a directory such as one made by "
            "`agentflux model init-tiny`, or a name such as Qwen/Qwen2.5-7B-Instruct)"
        )
    candidate = Path(settings.base).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    return str(candidate.resolve()) if candidate.exists() else settings.base


def create_backend(settings: ModelSettings, base_dir: Path) -> Backend:
    """Load the model (this takes seconds to minutes): call it off the event loop."""
    path = model_path(settings, base_dir)
    if settings.backend == "transformers":
        from agentflux.proxy.backends.hf import TransformersBackend

        dtype = "float32" if settings.dtype == "auto" else settings.dtype
        return TransformersBackend(path, dtype=dtype, device=settings.device, max_json_tokens=settings.max_json_tokens)
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
