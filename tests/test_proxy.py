"""The proxy in process, in front of real downstream servers: an MCP client talks to
agentflux's upstream server while the hub supervises real stdio servers."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import Client

from agentflux.proxy.hub import Health, Hub, running_hub
from agentflux.proxy.server import ProxyServer
from agentflux.registry.loader import load_registry

from conftest import PYTHON, ROOT, filesystem_entry, python_entry, time_entry, write_registry

pytestmark = pytest.mark.anyio

TOOLBOX = {"command": PYTHON, "args": [str(ROOT / "tests/servers/toolbox_server.py")]}
FAST_RESTART = {"restart_backoff_s": 0.2, "restart_backoff_max_s": 1.0}


@asynccontextmanager
async def proxied(
    tmp_path: Path, servers: dict[str, Any], proxy: dict | None = None, **client_options: Any
) -> AsyncIterator[tuple[Hub, Client]]:
    proxy = {"surfaces": ["passthrough", "search"]} | (proxy or {})
    registry = load_registry(write_registry(tmp_path, servers, proxy))
    hub = Hub(registry)
    upstream = ProxyServer(hub, list(registry.config.proxy.surfaces), registry.config.proxy.namespacing)
    async with running_hub(hub):
        async with Client(upstream.server, mode="legacy", **client_options) as client:
            yield hub, client


async def wait_for(predicate: Any, timeout: float = 30) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.05)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def test_passthrough_namespaces_tools_and_reads_the_workspace(tmp_path: Path, workspace: Path) -> None:
    async with proxied(tmp_path, {"filesystem": filesystem_entry(workspace), "time": time_entry()}) as (hub, client):
        await hub.wait_settled(30)
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"filesystem__read_text_file", "filesystem__list_directory", "time__get_current_time"} <= names
        assert {"search_tools", "call_tool"} <= names
        assert len([n for n in names if n.startswith("filesystem__")]) == 14

        read = await client.call_tool("filesystem__read_text_file", {"path": str(workspace / "notes/todo.txt")})
        assert not read.is_error
        assert "water the plants" in text_of(read)

        listing = await client.call_tool("filesystem__list_directory", {"path": str(workspace)})
        assert "[DIR] notes" in text_of(listing)
        assert "[FILE] README.md" in text_of(listing)

        outside = await client.call_tool("filesystem__read_text_file", {"path": "/etc/hostname"})
        assert outside.is_error
        assert "outside allowed directories" in text_of(outside)


async def test_results_come_back_unchanged(tmp_path: Path) -> None:
    async with proxied(tmp_path, {"time": time_entry()}) as (hub, client):
        await hub.wait_settled(30)
        arguments = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
        through = await client.call_tool("time__convert_time", arguments)
        direct = await hub.call_tool("time", "convert_time", arguments)
        assert through.model_dump() == direct.model_dump()
        assert through.structured_content is not None
        assert through.structured_content["target"]["datetime"].endswith("21:00:00+09:00")


async def test_search_surface_finds_and_calls_tools(tmp_path: Path, workspace: Path) -> None:
    servers = {"filesystem": filesystem_entry(workspace), "time": time_entry()}
    async with proxied(tmp_path, servers, {"surfaces": ["search"]}) as (hub, client):
        await hub.wait_settled(30)
        assert [tool.name for tool in (await client.list_tools()).tools] == ["search_tools", "call_tool"]

        found = await client.call_tool("search_tools", {"query": "what time is it in another timezone", "limit": 3})
        names = [match["name"] for match in found.structured_content["tools"]]
        assert names[0] in {"time__get_current_time", "time__convert_time"}
        assert found.structured_content["tools"][0]["input_schema"]["type"] == "object"

        found = await client.call_tool("search_tools", {"query": "list directory contents"})
        assert found.structured_content["tools"][0]["name"].startswith("filesystem__list_directory")

        result = await client.call_tool(
            "call_tool", {"name": "filesystem__read_text_file", "arguments": {"path": str(workspace / "README.md")}}
        )
        assert "Example workspace" in text_of(result)
        unknown = await client.call_tool("call_tool", {"name": "nope__nothing", "arguments": {}})
        assert unknown.is_error and "unknown tool 'nope__nothing'" in text_of(unknown)


async def test_tool_filter_hides_and_blocks_tools(tmp_path: Path, workspace: Path) -> None:
    entry = filesystem_entry(workspace) | {"tools": {"allow": ["read_*", "list_directory"], "deny": ["read_media_file"]}}
    async with proxied(tmp_path, {"fs": entry}) as (hub, client):
        await hub.wait_settled(30)
        names = {t.name for t in (await client.list_tools()).tools} - {"search_tools", "call_tool"}
        assert names == {"fs__read_file", "fs__read_text_file", "fs__read_multiple_files", "fs__list_directory"}
        blocked = await hub.call_tool("fs", "write_file", {"path": str(workspace / "x"), "content": "x"})
        assert blocked.is_error and "not allowed by the registry's tool filter" in text_of(blocked)
        assert not (workspace / "x").exists()


async def test_killed_downstream_is_restarted_and_the_next_call_succeeds(tmp_path: Path, workspace: Path) -> None:
    async with proxied(tmp_path, {"fs": filesystem_entry(workspace)}, FAST_RESTART) as (hub, client):
        await hub.wait_settled(30)
        server = hub.servers["fs"]
        first_pid = server.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        await wait_for(lambda: server.restarts == 1)
        assert "killed by signal 9" in server.reason
        # The tools stay listed while the server restarts: hosts see a stable list.
        assert "fs__read_text_file" in {t.name for t in (await client.list_tools()).tools}
        await wait_for(lambda: server.health is Health.READY)
        assert server.pid not in (None, first_pid)
        result = await client.call_tool("fs__read_text_file", {"path": str(workspace / "notes/todo.txt")})
        assert not result.is_error and "water the plants" in text_of(result)


async def test_crash_mid_call_becomes_an_error_result_and_the_server_comes_back(tmp_path: Path) -> None:
    async with proxied(tmp_path, {"toolbox": TOOLBOX}, FAST_RESTART) as (hub, client):
        await hub.wait_settled(30)
        result = await client.call_tool("toolbox__crash", {})
        assert result.is_error
        assert "downstream error from server 'toolbox'" in text_of(result)
        server = hub.servers["toolbox"]
        await wait_for(lambda: server.restarts == 1 and server.health is Health.READY)
        assert server.last_failure == "exited with code 7: toolbox: crashing on purpose"
        echoed = await client.call_tool("toolbox__echo", {"text": "back"})
        assert echoed.structured_content == {"echo": "back"}


async def test_crash_looping_server_is_marked_failed_with_its_last_words(tmp_path: Path) -> None:
    broken = python_entry("import sys; print('fatal: config missing', file=sys.stderr); sys.exit(3)")
    async with proxied(tmp_path, {"broken": broken, "time": time_entry()}, FAST_RESTART) as (hub, client):
        await hub.wait_settled(30)
        server = hub.servers["broken"]
        await wait_for(lambda: server.restarts >= 3)
        assert server.health in (Health.FAILED, Health.STARTING)
        assert server.last_failure == "exited with code 3: fatal: config missing"
        assert hub.servers["time"].health is Health.READY
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error


async def test_hanging_server_does_not_delay_the_others(tmp_path: Path, workspace: Path) -> None:
    hang = python_entry("import time; time.sleep(600)") | {"start_timeout_s": 120}
    async with proxied(tmp_path, {"hang": hang, "fs": filesystem_entry(workspace)}) as (hub, client):
        # The upstream answered initialize and tools/list before any server was ready...
        assert {t.name for t in (await client.list_tools()).tools} >= {"search_tools", "call_tool"}
        await wait_for(lambda: hub.servers["fs"].health is Health.READY)
        # ...and the filesystem server is fully usable while the other still hangs.
        assert hub.servers["hang"].health is Health.STARTING
        names = {t.name for t in (await client.list_tools()).tools}
        assert "fs__list_directory" in names and not any(n.startswith("hang__") for n in names)
        result = await client.call_tool("fs__list_directory", {"path": str(workspace)})
        assert "[DIR] notes" in text_of(result)


async def test_missing_token_disables_only_that_server(tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AF_TEST_NOTION_TOKEN", raising=False)
    notion = {
        "command": "node",
        "args": [str(ROOT / "node_modules/@notionhq/notion-mcp-server/bin/cli.mjs")],
        "env": {"NOTION_TOKEN": "${AF_TEST_NOTION_TOKEN}"},
    }
    async with proxied(tmp_path, {"notion": notion, "fs": filesystem_entry(workspace)}, FAST_RESTART) as (hub, client):
        await hub.wait_settled(30)
        await anyio.sleep(0.5)  # long enough for several restarts, were it crash-looping
        status = {s.name: s for s in hub.statuses()}
        assert status["notion"].health is Health.DISABLED
        assert "missing secret AF_TEST_NOTION_TOKEN" in status["notion"].reason
        assert status["notion"].restarts == 0
        assert status["fs"].health is Health.READY
        result = await client.call_tool("notion__API-get-self", {})
        assert result.is_error and "unknown tool" in text_of(result)


async def test_protocol_errors_become_error_results(tmp_path: Path) -> None:
    async with proxied(tmp_path, {"toolbox": TOOLBOX}) as (hub, client):
        await hub.wait_settled(30)
        result = await client.call_tool("toolbox__protocol_error", {})
        assert result.is_error
        assert "getaddrinfo ENOTFOUND api.example.com" in text_of(result)


async def test_offline_notion_error_is_an_error_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_TEST_NOTION_TOKEN", "ntn_offline_test_token")
    notion = {
        "command": "node",
        "args": [str(ROOT / "node_modules/@notionhq/notion-mcp-server/bin/cli.mjs")],
        "env": {"NOTION_TOKEN": "${AF_TEST_NOTION_TOKEN}"},
    }
    async with proxied(tmp_path, {"notion": notion}) as (hub, client):
        await hub.wait_settled(30)
        assert hub.servers["notion"].health is Health.READY
        assert len(hub.servers["notion"].catalog.tools) == 24
        result = await client.call_tool("notion__API-get-self", {})
        assert result.is_error
        assert "ntn_offline_test_token" not in text_of(result)


async def test_progress_is_relayed_and_cancellation_reaches_the_downstream_handler(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled.txt"
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    # The sandbox hides the test's folder unless granted; the marker file is written there.
    toolbox = TOOLBOX | {"sandbox": {"mounts": [{"path": str(tmp_path), "mode": "rw"}]}}
    async with proxied(tmp_path, {"toolbox": toolbox}) as (hub, client):
        await hub.wait_settled(30)
        done = await client.call_tool("toolbox__sleep", {"seconds": 0.3}, progress_callback=on_progress)
        assert text_of(done) == "slept 0.3s"
        # Notifications are delivered asynchronously; the last may land just after the result.
        await wait_for(lambda: len(updates) == 3, timeout=5)
        assert [u[0] for u in updates] == [1, 2, 3] and updates[-1][2] == "step 3/3"

        with anyio.move_on_after(0.5):
            await client.call_tool("toolbox__sleep", {"seconds": 30, "marker": str(marker)})
        await wait_for(marker.exists, timeout=10)
        assert marker.read_text() == "cancelled"
        # The downstream session stays usable after a cancellation.
        echoed = await client.call_tool("toolbox__echo", {"text": "still here"})
        assert echoed.structured_content == {"echo": "still here"}


async def test_downstream_list_changes_reach_the_host(tmp_path: Path) -> None:
    notifications: list[Any] = []

    async def on_message(message: Any) -> None:
        notifications.append(message)

    async with proxied(tmp_path, {"toolbox": TOOLBOX}, message_handler=on_message) as (hub, client):
        await client.list_tools()  # the proxy learns about this client's session
        await hub.wait_settled(30)
        await wait_for(lambda: any(isinstance(m, types.ToolListChangedNotification) for m in notifications))
        notifications.clear()
        grown = await client.call_tool("toolbox__grow", {})
        assert text_of(grown) == "grown_1"
        await wait_for(lambda: any(isinstance(m, types.ToolListChangedNotification) for m in notifications))
        await wait_for(lambda: "grown_1" in [t.name for t in hub.servers["toolbox"].catalog.tools])
        assert "toolbox__grown_1" in {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("toolbox__grown_1", {})
        assert text_of(result) == "grown_1"


async def test_large_results_pass_through_whole(tmp_path: Path) -> None:
    async with proxied(tmp_path, {"toolbox": TOOLBOX}) as (hub, client):
        await hub.wait_settled(30)
        result = await client.call_tool("toolbox__big", {"megabytes": 10})
        assert not result.is_error
        assert len(text_of(result)) == 10 * 1024 * 1024


async def test_long_names_are_sanitized_shortened_and_still_callable(tmp_path: Path) -> None:
    name = "a server.with/odd chars and a very long name indeed"
    async with proxied(tmp_path, {name: TOOLBOX}) as (hub, client):
        await hub.wait_settled(30)
        names = [t.name for t in (await client.list_tools()).tools if "echo" in t.name]
        assert len(names) == 1
        public = names[0]
        assert len(public) <= 64 and all(ch.isalnum() or ch in "_-" for ch in public)
        result = await client.call_tool(public, {"text": "ok"})
        assert result.structured_content == {"echo": "ok"}
