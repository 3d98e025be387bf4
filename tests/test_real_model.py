"""The embedded real model end to end: Gemma 3 270M (from PyPI) trained with quick settings on
the time server, then serving `do_task` over stdio to a real MCP client.

Sized for CI: one server with two tools, a few requests per tool, decoupled adapters plus the
router (about two minutes on two cores). The accuracy claims of docs/evaluation.md come from
`make demo` and `agentflux eval`, on every filesystem tool; this test holds the chain to them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, StdioServerParameters

from conftest import PYTHON, TRAINED_TIME
from vllm_answers import collect_answers

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def gemma_time(gemma_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from agentflux.registry.loader import load_registry
    from agentflux.registry.store import Manifest
    from agentflux.trainer.pipeline import TrainOptions, train_server

    home = tmp_path_factory.mktemp("gemma-home")
    previous = os.environ.get("AGENTFLUX_HOME")
    os.environ["AGENTFLUX_HOME"] = str(home)
    path = tmp_path_factory.mktemp("gemma-registry") / "registry.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"base": str(gemma_model), "router": "adapter"},
        "training": {"auto": False},
        "mcpServers": {"time": TRAINED_TIME},
    }))  # fmt: skip
    try:
        options = TrainOptions.quick(examples_per_tool=10, test_size=10, progress=False)
        folder = train_server(load_registry(path), "time", options)
        manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
        yield {"registry": path, "home": home, "manifest": manifest}
    finally:
        if previous is None:
            os.environ.pop("AGENTFLUX_HOME", None)
        else:
            os.environ["AGENTFLUX_HOME"] = previous


def test_gemma_adapters_beat_the_base_model_on_held_out_requests(gemma_time: dict[str, Any]) -> None:
    """Held out: phrasings and cities the training data never used."""
    metrics = gemma_time["manifest"].metrics
    base, decoupled = metrics["base"], metrics["decoupled"]
    assert metrics["test_trajectories"] >= 8
    assert decoupled["selection_accuracy"] >= 0.9 > base["selection_accuracy"], metrics
    assert decoupled["argument_exact_match"] >= 0.7, metrics
    assert decoupled["argument_exact_match"] > base["argument_exact_match"], metrics


@pytest.mark.anyio
async def test_do_task_solves_clock_requests_with_the_real_model(gemma_time: dict[str, Any]) -> None:
    env = dict(os.environ) | {"AGENTFLUX_HOME": str(gemma_time["home"])}
    server = StdioServerParameters(command=PYTHON, args=["-m", "agentflux.proxy", "serve", "--registry",
                                                         str(gemma_time["registry"])], env=env)  # fmt: skip
    tasks = {
        "What time is it in Tokyo right now?": ("get_current_time", {"timezone": "Asia/Tokyo"}),
        "If it's 9:30 in New York, what time is it in London?": (
            "convert_time", {"source_timezone": "America/New_York", "time": "09:30", "target_timezone": "Europe/London"}),
    }  # fmt: skip
    async with Client(server, mode="legacy") as client:
        for task, (tool, arguments) in tasks.items():
            result = await client.call_tool("do_task", {"task": task, "max_steps": 3, "timeout_s": 120})
            outcome = result.structured_content
            assert not result.is_error and outcome, result
            first = outcome["steps"][0]
            assert (first["toolset"], first["tool"], first["arguments"]) == ("time", tool, arguments), outcome
            assert not first["is_error"] and first["zero_shot"] == []
            assert outcome["stopped"] == "summarize" and len(outcome["steps"]) == 1, outcome
            # The answer is the tool's own output, whole.
            assert first["observation"] and first["observation"] in outcome["summary"]


def test_transformers_and_vllm_agree_on_the_real_model(gemma_model: Path, gemma_tokenizer, tmp_path: Path) -> None:
    """Parity on Gemma 3 270M in float32: the same choices (scores within 2e-3) and the same
    constrained JSON, for the base model and two adapters trained here to answer differently."""
    import json
    import subprocess

    import anyio

    from agentflux.proxy import protocol
    from agentflux.proxy.backends.hf import TransformersBackend
    from agentflux.proxy.protocol import Tool, Toolset
    from agentflux.trainer.finetune import LoraSettings, train_adapter

    fmt = protocol.Gemma3()
    read = Tool("read_text_file", "Read a file.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
    listing = Tool("list_directory", "List a folder.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
    toolset = Toolset("filesystem", "Files.", (read, listing))
    trained = {"reader": (read, {"path": "notes/todo.txt"}), "lister": (listing, {"path": "projects"})}
    paths = {}
    for name, (tool, arguments) in trained.items():
        examples = [protocol.select_example(fmt, f"task number {i}", [], toolset, tool.name) for i in range(8)]
        examples += [protocol.arguments_example(fmt, f"task number {i}", [], tool, arguments) for i in range(8)]
        tokenized = [protocol.tokenize_example(gemma_tokenizer, example) for example in examples]
        settings = LoraSettings(r=8, alpha=16, learning_rate=1e-3, max_steps=8, layers=(9, 18))
        paths[name] = train_adapter(gemma_model, tokenized, tmp_path / name, settings, progress=False).path
    select = protocol.select_prompt(fmt, "task number 3", [], toolset)
    questions = {
        "choices": [[select.text, select.continuations()]],
        "json": [[protocol.arguments_prompt(fmt, "task number 3", [], tool).text, tool.parameters] for tool in (read, listing)],
    }
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    command = [sys.executable, str(Path(__file__).with_name("vllm_answers.py")), str(gemma_model), str(tmp_path / "questions.json"),
               *(f"{name}={path}" for name, path in paths.items())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ANSWERS "))[8:])

    async def reference() -> dict:
        backend = TransformersBackend(str(gemma_model), dtype="float32", max_json_tokens=64)
        for name, path in paths.items():
            await backend.load_adapter(name, path)
        return await collect_answers(backend, questions, list(paths))

    expected = anyio.run(reference)
    assert expected["reader"][0]["choice"] == select.options["read_text_file"]  # the adapters took
    assert expected["lister"][0]["choice"] == select.options["list_directory"]
    for adapter, rows in expected.items():
        for mine, theirs in zip(rows, served[adapter], strict=True):
            if "scores" in mine:
                assert theirs["choice"] == mine["choice"], adapter
                assert theirs["scores"] == pytest.approx(mine["scores"], abs=2e-3), adapter
            else:
                assert theirs["json"] == mine["json"], adapter
