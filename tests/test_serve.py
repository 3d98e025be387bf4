"""`agentflux serve` as a host runs it: a real subprocess over stdio and over streamable HTTP."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from conftest import PYTHON, filesystem_entry, free_port, time_entry, write_registry

pytestmark = pytest.mark.anyio
TOKEN = "test-bearer-token-5f1c2a"
PASSTHROUGH = {"surfaces": ["passthrough"]}


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"agentflux serve exited early: {process.stderr.read() if process.stderr else ''}")
        try:
            httpx2.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"agentflux serve did not listen on port {port}")


@pytest.fixture
def http_server(tmp_path: Path, workspace: Path, subprocess_env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    registry = write_registry(tmp_path, {"fs": filesystem_entry(workspace), "time": time_entry()}, PASSTHROUGH)
    port = free_port()
    env = subprocess_env | {"AGENTFLUX_HTTP_TOKEN": TOKEN}
    command = [PYTHON, "-m", "agentflux.proxy", "serve", "--registry", str(registry), "--transport", "http", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp", workspace
    finally:
        process.terminate()
        process.wait(timeout=15)


async def test_http_with_the_bearer_token_serves_tools(http_server: tuple[str, Path]) -> None:
    url, workspace = http_server
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            with anyio.fail_after(30):
                while "fs__read_text_file" not in {t.name for t in (await client.list_tools()).tools}:
                    await anyio.sleep(0.1)
            result = await client.call_tool("fs__read_text_file", {"path": str(workspace / "notes/todo.txt")})
            assert "renew the library card" in text_of(result)


async def test_http_without_the_token_is_refused(http_server: tuple[str, Path]) -> None:
    url, _ = http_server
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        anonymous = await http.post(url, json=body, headers=headers)
        wrong = await http.post(url, json=body, headers=headers | {"Authorization": "Bearer wrong-token"})
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in anonymous.text + wrong.text


async def test_http_rejects_a_foreign_host_header(http_server: tuple[str, Path]) -> None:
    url, _ = http_server
    headers = {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example.com", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    assert response.status_code in (403, 421)


def test_serving_beyond_loopback_needs_a_token(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    registry = write_registry(tmp_path, {"time": time_entry()})
    env = {k: v for k, v in subprocess_env.items() if k != "AGENTFLUX_HTTP_TOKEN"}
    command = [PYTHON, "-m", "agentflux.proxy", "serve", "--registry", str(registry), "--transport", "http", "--host", "0.0.0.0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a bearer token" in done.stderr


async def test_stdio_as_claude_desktop_starts_it(tmp_path: Path, workspace: Path, subprocess_env: dict[str, str]) -> None:
    registry = write_registry(tmp_path, {"fs": filesystem_entry(workspace)}, PASSTHROUGH)
    # Hosts pass only a minimal environment; AGENTFLUX_HOME is given explicitly as a host config would.
    params = StdioServerParameters(
        command=PYTHON,
        args=["-m", "agentflux.proxy", "serve", "--registry", str(registry)],
        env={"AGENTFLUX_HOME": subprocess_env["AGENTFLUX_HOME"]},
    )
    async with Client(params, mode="legacy") as client:
        with anyio.fail_after(30):
            while "fs__list_directory" not in {t.name for t in (await client.list_tools()).tools}:
                await anyio.sleep(0.1)
        result = await client.call_tool("fs__list_directory", {"path": str(workspace / "projects/alpha")})
        assert "[FILE] config.json" in text_of(result)
