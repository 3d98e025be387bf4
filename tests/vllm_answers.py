"""Answers of the in-process vLLM backend, printed as JSON, for parity tests that must not host
a second vLLM engine in the pytest process (one already serves the tiny model there).

    python tests/vllm_answers.py MODEL QUESTIONS.json ADAPTER=PATH ...

QUESTIONS.json: {"choices": [[prompt, [candidates]]], "json": [[prompt, schema]]}; every
question is asked of the base model and of each adapter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio


async def collect_answers(backend, questions: dict, adapters: list[str]) -> dict:  # type: ignore[no-untyped-def]
    """Every question asked of the base model and of each adapter, on any backend."""
    from agentflux.proxy.backends import GenerationError

    found: dict = {}
    for adapter in [None, *adapters]:
        rows = []
        for prompt, candidates in questions["choices"]:
            rows.append({"scores": await backend.scores(prompt, candidates, adapter),
                         "choice": await backend.choose(prompt, candidates, adapter)})  # fmt: skip
        for prompt, schema in questions["json"]:
            try:
                rows.append({"json": await backend.generate_json(prompt, schema, adapter)})
            except GenerationError as exc:
                rows.append({"json": str(exc)})
        found[str(adapter)] = rows
    return found


async def vllm_answers(model: str, questions: dict, adapters: dict[str, Path]) -> dict:
    from agentflux.proxy.backends.vllm import VLLMBackend

    backend = VLLMBackend(model, dtype="float32", max_loras=2, max_lora_rank=16, max_model_len=4096, max_json_tokens=64)
    for name, path in adapters.items():
        await backend.load_adapter(name, path)
    return await collect_answers(backend, questions, list(adapters))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    model, questions_path, *pairs = sys.argv[1:]
    adapters = {pair.split("=", 1)[0]: Path(pair.split("=", 1)[1]) for pair in pairs}
    result = anyio.run(vllm_answers, model, json.loads(Path(questions_path).read_text()), adapters)
    print("ANSWERS " + json.dumps(result))
