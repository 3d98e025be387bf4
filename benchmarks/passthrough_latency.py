"""`read_file` round trip: direct to the filesystem server, and through agentflux over stdio and HTTP.

    .venv/bin/python benchmarks/passthrough_latency.py [--calls 500]

One run measures all three paths on the same machine, sequentially (concurrency 1), after a
warm-up, and prints p50/p95 per path and the latency agentflux adds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
import yaml
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
FILESYSTEM = ROOT / "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
WARMUP = 50


async def measure(client: Client, tool: str, path: str, calls: int) -> list[float]:
    for _ in range(WARMUP):
        await client.call_tool(tool, {"path": path})
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        result = await client.call_tool(tool, {"path": path})
        samples.append((time.perf_counter() - start) * 1000)
        assert not result.is_error, result
    return samples


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def wait_ready(client: Client, tool: str) -> None:
    with anyio.fail_after(60):
        while tool not in {t.name for t in (await client.list_tools()).tools}:
            await anyio.sleep(0.1)


async def run(calls: int) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="agentflux-bench-"))
    workspace = work / "workspace"
    shutil.copytree(ROOT / "examples/workspace", workspace)
    target = str(workspace / "notes/todo.txt")
    registry = work / "registry.yaml"
    registry.write_text(yaml.safe_dump({"mcpServers": {"fs": {"command": "node", "args": [str(FILESYSTEM), str(workspace)]}}}))
    env = {"AGENTFLUX_HOME": str(work / "home"), "PATH": os.environ["PATH"]}
    results: dict[str, list[float]] = {}

    direct = StdioServerParameters(command="node", args=[str(FILESYSTEM), str(workspace)])
    async with Client(direct, mode="legacy") as client:
        results["direct (stdio)"] = await measure(client, "read_file", target, calls)

    proxied = StdioServerParameters(
        command=sys.executable, args=["-m", "agentflux.proxy", "serve", "--registry", str(registry)], env=env
    )
    async with Client(proxied, mode="legacy") as client:
        await wait_ready(client, "fs__read_file")
        results["agentflux stdio"] = await measure(client, "fs__read_file", target, calls)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "agentflux.proxy", "serve", "--registry", str(registry), "--transport", "http", "--port", str(port)]
    server = subprocess.Popen(command, env=env | {"AGENTFLUX_HTTP_TOKEN": "bench-token-123456"})
    try:
        with anyio.fail_after(30):
            while True:
                try:
                    httpx2.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                    break
                except httpx2.TransportError:
                    await anyio.sleep(0.1)
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer bench-token-123456"}, timeout=30) as http:
            async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http), mode="legacy") as client:
                await wait_ready(client, "fs__read_file")
                results["agentflux HTTP"] = await measure(client, "fs__read_file", target, calls)
    finally:
        server.terminate()
        server.wait(timeout=15)
    shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, list[float]]) -> str:
    base = statistics.median(results["direct (stdio)"])
    lines = ["| path | p50 ms | p95 ms | added p50 ms |", "|---|---|---|---|"]
    for name, samples in results.items():
        p50 = statistics.median(samples)
        added = "" if name.startswith("direct") else f"{p50 - base:+.2f}"
        lines.append(f"| {name} | {p50:.2f} | {percentile(samples, 95):.2f} | {added} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    print(report(anyio.run(run, args.calls)))
