"""Model runtime on the tiny model: latency per backend, adapter switch cost, prompt sizes.

    .venv/bin/python benchmarks/runtime.py [--calls 20] [--backends transformers,vllm,vllm-server]

In one run:
- per backend: `choose` over the filesystem toolset's 14 tools + summarize, `generate_json`
  for `read_text_file` (at most 64 tokens), and the cost of switching adapters between calls
  (alternating two adapters versus repeating one);
- the prompt tokens of one selection step when a plain tool-calling model sees every tool of
  filesystem + Notion + monday (flat) versus agentflux's hierarchical selector, which sees one
  toolset (the schemas are the real servers', listed live; Notion and monday run offline with
  placeholder tokens).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODULES = ROOT / "node_modules"
# Random adapters rarely finish a JSON value: bound each generation so that runs compare equal work.
JSON_TOKENS = 64


async def real_toolsets(work: Path) -> dict[str, list]:
    """The live tool lists of the filesystem, Notion and monday servers."""
    from agentflux.proxy.hub import Hub, running_hub
    from agentflux.registry.loader import load_registry

    os.environ.setdefault("AF_BENCH_TOKEN", "offline-placeholder-token")
    servers = {
        "filesystem": {"command": "node", "args": [str(MODULES / "@modelcontextprotocol/server-filesystem/dist/index.js"), str(ROOT / "examples/workspace")]},
        "notion": {"command": "node", "args": [str(MODULES / "@notionhq/notion-mcp-server/bin/cli.mjs")], "env": {"NOTION_TOKEN": "${AF_BENCH_TOKEN}"}},
        "monday": {"command": "node", "args": [str(MODULES / "@mondaydotcomorg/monday-api-mcp/dist/index.js")], "env": {"MONDAY_TOKEN": "${AF_BENCH_TOKEN}"}},
    }
    for entry in servers.values():
        entry["sandbox"] = {"kind": "none"}
    path = work / "registry.yaml"
    path.write_text(yaml.safe_dump({"mcpServers": servers}))
    hub = Hub(load_registry(path))
    async with running_hub(hub):
        await hub.wait_settled(60)
        return {name: server.catalog.tools for name, server in hub.servers.items()}


def toolsets_from(tools: dict[str, list]):
    from agentflux.proxy.protocol import Tool, Toolset

    return {
        name: Toolset(name, "", tuple(Tool(t.name, t.description or "", t.input_schema) for t in items))
        for name, items in tools.items()
    }


def make_adapters(model: Path, work: Path) -> list[Path]:
    """Two LoRA adapters with random weights: latency does not depend on what they learned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for index in range(2):
        torch.manual_seed(index)
        base = AutoModelForCausalLM.from_pretrained(model)
        config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(base, config)
        path = work / f"adapter-{index}"
        peft_model.save_pretrained(path)
        paths.append(path)
    return paths


def start_server(model: Path, work: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", VLLM_CPU_KVCACHE_SPACE="1")
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "tiny",
        "--port", str(port), "--dtype", "float32", "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8",
        "--max-model-len", "8192", "--enforce-eager", "--structured-outputs-config", '{"backend": "xgrammar"}',
    ]
    server = subprocess.Popen(command, env=env, stdout=(work / "server.log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(f"the vLLM server exited; see {work / 'server.log'}")
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx2.TransportError:
            time.sleep(1)
    raise RuntimeError("the vLLM server did not start")


def build(kind: str, model: Path, url: str | None):
    if kind == "transformers":
        from agentflux.proxy.backends.hf import TransformersBackend

        return TransformersBackend(str(model), dtype="float32", max_json_tokens=JSON_TOKENS)
    if kind == "vllm":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from agentflux.proxy.backends.vllm import VLLMBackend

        return VLLMBackend(str(model), dtype="float32", max_loras=2, max_lora_rank=8, max_model_len=8192, max_json_tokens=JSON_TOKENS)
    from agentflux.proxy.backends.openai import VLLMServerBackend

    assert url is not None
    return VLLMServerBackend(url, str(model), max_json_tokens=JSON_TOKENS)


async def timed(coroutine_factory, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        await coroutine_factory()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def measure(backend, adapters: list[Path], toolset, calls: int) -> dict[str, float]:
    from agentflux.proxy import protocol
    from agentflux.proxy.backends import GenerationError

    fmt = protocol.Qwen25()
    for index, path in enumerate(adapters):
        await backend.load_adapter(f"a{index}", path)
    select = protocol.select_prompt(fmt, "Read the file notes/todo.txt", [], toolset)
    tool = toolset.tool("read_text_file")
    arguments = protocol.arguments_prompt(fmt, "Read the file notes/todo.txt", [], tool)

    async def json_call(adapter: str) -> None:
        try:
            await backend.generate_json(arguments.text, tool.parameters, adapter)
        except GenerationError:
            pass  # random adapters may not finish; the time to the bound still counts

    for _ in range(3):  # warm-up (grammar compilation, caches)
        await backend.choose(select.text, select.continuations(), "a0")
        await json_call("a0")
    same = await timed(lambda: backend.choose(select.text, select.continuations(), "a0"), calls)
    flip = iter(range(10**6))
    alternating = await timed(lambda: backend.choose(select.text, select.continuations(), f"a{next(flip) % 2}"), calls)
    generate = await timed(lambda: json_call("a1"), max(3, calls // 4))
    return {
        "choose p50 ms": statistics.median(same),
        "generate_json p50 ms": statistics.median(generate),
        "adapter switch ms": statistics.median(alternating) - statistics.median(same),
    }


async def run(kinds: list[str], calls: int) -> None:
    from transformers import AutoTokenizer

    from agentflux.proxy import protocol
    from agentflux.proxy.tiny_model import init_tiny
    from agentflux.proxy.vocab import fetch

    work = Path(tempfile.mkdtemp(prefix="agentflux-runtime-bench-"))
    os.environ["AGENTFLUX_HOME"] = str(work / "home")
    model = init_tiny(ROOT / ".cache/tiny-model", 0, fetch(ROOT / ".cache/qwen2.5-vocab"))
    toolsets = toolsets_from(await real_toolsets(work))
    tokenizer = AutoTokenizer.from_pretrained(model)
    fmt = protocol.Qwen25()
    everything = protocol.Toolset("all", "", tuple(t for ts in toolsets.values() for t in ts.tools))
    task = "Read the file notes/todo.txt"
    # What a plain tool-calling model sees: every tool with its full schema, in one prompt.
    flat = len(protocol.encode(tokenizer, fmt.conversation("You are a helpful assistant.", everything.tools, task, [])))
    flat_compact = len(protocol.encode(tokenizer, protocol.select_prompt(fmt, task, [], everything).text))
    print("| selection prompt | tools | prompt tokens |")
    print("|---|---|---|")
    print(f"| flat, full schemas (a plain tool-calling model): filesystem + Notion + monday | {len(everything.tools)} | {flat} |")
    print(f"| flat, compact tools: filesystem + Notion + monday | {len(everything.tools)} | {flat_compact} |")
    for name, toolset in toolsets.items():
        tokens = len(protocol.encode(tokenizer, protocol.select_prompt(fmt, task, [], toolset).text))
        print(f"| hierarchical: {name} only | {len(toolset.tools)} | {tokens} |")
    router = len(protocol.encode(tokenizer, protocol.route_prompt(fmt, task, [], list(toolsets.values())).text))
    print(f"| hierarchical: router over the 3 toolsets | 3 | {router} |")

    adapters = make_adapters(model, work)
    server, url = start_server(model, work) if "vllm-server" in kinds else (None, None)
    print("\n| backend | choose p50 ms | generate_json p50 ms | adapter switch ms |")
    print("|---|---|---|---|")
    try:
        for kind in kinds:
            backend = await anyio.to_thread.run_sync(build, kind, model, url)
            figures = await measure(backend, adapters, toolsets["filesystem"], calls)
            print(f"| {kind} | {figures['choose p50 ms']:.1f} | {figures['generate_json p50 ms']:.1f} | {figures['adapter switch ms']:+.1f} |")
            await backend.aclose()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--backends", default="transformers,vllm,vllm-server")
    args = parser.parse_args()
    anyio.run(run, args.backends.split(","), args.calls)
