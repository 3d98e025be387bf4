"""Drive agentflux the way an MCP host does: start `agentflux serve` over stdio and use it.

    .venv/bin/python examples/demo_client.py [--registry examples/registry.yaml]

Lists what each downstream server offers, reads and lists files of examples/workspace
through the filesystem server, asks the time server, and finds a tool with search_tools.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import anyio
import mcp.types as types
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def show(title: str, body: str) -> None:
    print(f"\n== {title}")
    print("\n".join(f"   {line}" for line in body.strip().splitlines()[:12]))


async def main(registry: Path) -> None:
    env = {name: os.environ[name] for name in ("AGENTFLUX_HOME", "NOTION_TOKEN", "MONDAY_TOKEN") if name in os.environ}
    server = StdioServerParameters(command=sys.executable, args=["-m", "agentflux.proxy", "serve", "--registry", str(registry)], env=env)
    async with Client(server, mode="legacy") as client:
        print(f"connected to {client.server_info.name} {client.server_info.version}")
        show("tools offered", "\n".join(t.name for t in (await client.list_tools()).tools))

        async def call(name: str, arguments: dict) -> types.CallToolResult:
            # agentflux answers at once and starts its servers in the background: retry until ready.
            with anyio.move_on_after(60):
                while (result := await client.call_tool("call_tool", {"name": name, "arguments": arguments})).is_error:
                    if "unknown tool" not in text_of(result) and "not ready" not in text_of(result):
                        break
                    await anyio.sleep(0.3)
            return result

        listing = await call("filesystem__list_directory", {"path": "."})
        show("filesystem__list_directory .", text_of(listing))
        todo = await call("filesystem__read_text_file", {"path": "notes/todo.txt"})
        show("filesystem__read_text_file notes/todo.txt", text_of(todo))
        now = await call("time__get_current_time", {"timezone": "Europe/Paris"})
        show("time__get_current_time Europe/Paris", json.dumps(now.structured_content, indent=1))
        found = await client.call_tool("search_tools", {"query": "search for files matching a pattern", "limit": 3})
        show("search_tools 'search for files matching a pattern'", "\n".join(m["name"] for m in found.structured_content["tools"]))

        # The local agent. Until `agentflux train` has built adapters, every stage runs zero-shot
        # on the base model, and the trajectory says so; the tiny model knows nothing zero-shot.
        task = "List the notes folder, then read notes/todo.txt."
        result = await client.call_tool("do_task", {"task": task, "max_steps": 3, "timeout_s": 120})
        show(f"do_task {task!r}", text_of(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=HERE / "registry.yaml")
    anyio.run(main, parser.parse_args().registry)
