"""Call agentflux's do_task from another agent, over streamable HTTP with a bearer token.

Start agentflux first:

    export AGENTFLUX_HTTP_TOKEN=$(openssl rand -hex 24)
    .venv/bin/agentflux serve --registry examples/registry.yaml --transport http --port 8765

then, in the same environment:

    .venv/bin/python examples/subagent_client.py "List the notes folder, then read notes/todo.txt."
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import anyio
import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, task: str, max_steps: int) -> int:
    token = os.environ.get("AGENTFLUX_HTTP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def progress(value: float, total: float | None, message: str | None) -> None:
        print(f"  … {message}", file=sys.stderr)

    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=600)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            result = await client.call_tool("do_task", {"task": task, "max_steps": max_steps}, progress_callback=progress)
    text = "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))
    print(text)
    if result.structured_content:
        print(json.dumps(result.structured_content["steps"], indent=1, ensure_ascii=False))
    return 1 if result.is_error else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--url", default="http://127.0.0.1:8765/mcp")
    parser.add_argument("--max-steps", type=int, default=8)
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.url, args.task, args.max_steps))
