"""A running agentflux follows its registry file: edits are validated, applied server by
server, and reported; `registry add/remove` edit the file atomically and keep its comments."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client, StdioServerParameters

from agentflux.registry.edit import EditError, add_server, remove_server
from agentflux.registry.status import running_status

from conftest import PYTHON, run_agentflux, time_entry, write_registry

COMMENTED = """\
# my servers
proxy:
  surfaces: [passthrough]   # no model needed

mcpServers:
  # the clock
  time:
    command: mcp-server-time
    args: [--local-timezone, UTC]   # keep UTC

  # another clock, for tests
  clock:
    command: mcp-server-time
"""


def test_add_and_remove_keep_comments_and_formatting(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(COMMENTED)
    add_server(path, "git", {"command": "mcp-server-git", "args": ["--repository", "."]})
    text = path.read_text()
    assert text.startswith(COMMENTED)  # everything before is byte for byte what it was
    assert "\n  git:\n    command: mcp-server-git\n" in text
    remove_server(path, "git")
    assert path.read_text() == COMMENTED
    remove_server(path, "time")  # its own comment goes with it; the others stay
    assert "# the clock" not in path.read_text() and "# another clock, for tests" in path.read_text()
    assert "# keep UTC" not in path.read_text() and "# no model needed" in path.read_text()


def test_json_registries_and_refused_edits_leave_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"mcpServers": {"time": time_entry()}}))
    add_server(path, "clock", {"command": "mcp-server-time"})
    assert list(json.loads(path.read_text())["mcpServers"]) == ["time", "clock"]
    before = path.read_text()
    with pytest.raises(EditError, match="exists already"):
        add_server(path, "clock", {"command": "other"})
    with pytest.raises(EditError, match="no server named 'nope'.*time, clock"):
        remove_server(path, "nope")
    with pytest.raises(EditError, match=r"invalid, so the file is unchanged:\n.*mcpServers.bad.env"):
        add_server(path, "bad", {"command": "x", "env": {"A": "${not closed"}})
    assert path.read_text() == before


def test_registry_add_command_takes_the_server_command_after_dashes(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(COMMENTED)
    added = run_agentflux("registry", "add", "tz", "--registry", str(path), "--sandbox", "none", "--mount", "/tmp:rw",
                          "--", "mcp-server-time", "--local-timezone", "Europe/Paris", env=subprocess_env)
    assert added.returncode == 0, added.stderr
    entry = yaml.safe_load(path.read_text())["mcpServers"]["tz"]
    assert entry == {"command": "mcp-server-time", "args": ["--local-timezone", "Europe/Paris"],
                     "sandbox": {"kind": "none", "mounts": [{"path": "/tmp", "mode": "rw"}]}}
    missing = run_agentflux("registry", "add", "x", "--registry", str(path), env=subprocess_env)
    assert missing.returncode == 2 and "give the server's command after --" in missing.stderr


# -- a running agentflux -------------------------------------------------------------------------

BAD_EDITS = [
    # (what a user did, the file's text, what the error must say)
    ("YAML syntax", "mcpServers: [unclosed\n", "registry.yaml:"),
    ("a typo in a key", "mcpServers:\n  time:\n    comand: mcp-server-time\n", "mcpServers.time"),
    ("no command or url", "mcpServers:\n  time: {args: [x]}\n", "missing 'command'"),
    ("a malformed secret", "mcpServers:\n  time: {command: x, env: {A: '${bad'}}\n", "malformed secret reference"),
    ("a wrong type", "proxy: {call_timeout_s: soon}\nmcpServers: {}\n", "proxy.call_timeout_s"),
    ("no servers block", "proxy: {}\n", "mcpServers"),
    ("an empty file", "", "registry.yaml"),
]


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    with anyio.fail_after(timeout):
        while not (value := check()):
            await anyio.sleep(0.2)
    return value


def status_of(path: Path) -> dict[str, Any] | None:
    documents = running_status(path)
    return documents[0] if documents else None


def server_of(status: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    return next((s for s in (status or {}).get("servers", []) if s["name"] == name), None)


@pytest.mark.anyio
async def test_running_proxy_applies_valid_edits_and_rejects_bad_ones(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = write_registry(tmp_path, {"time": time_entry()}, {"surfaces": ["passthrough"]})
    good = path.read_text()
    params = StdioServerParameters(command=PYTHON, args=["-m", "agentflux.proxy", "serve", "--registry", str(path)],
                                   env=subprocess_env)
    async with Client(params, mode="legacy") as client:

        async def tools() -> set[str]:
            return {t.name for t in (await client.list_tools()).tools}

        async def answers() -> None:
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not result.is_error and "UTC" in result.content[0].text

        await wait_for(lambda: (s := server_of(status_of(path), "time")) and s["health"] == "ready", "time ready")
        await answers()
        time_pid = server_of(status_of(path), "time")["pid"]
        for what, text, expected in BAD_EDITS:
            path.write_text(text)
            status = await wait_for(lambda: (s := status_of(path)) and s["registry_error"] and s, what)
            assert expected in status["registry_error"], (what, status["registry_error"])
            await answers()  # the last good configuration keeps running
            path.write_text(good)
            await wait_for(lambda: (s := status_of(path)) and not s["registry_error"], f"{what} repaired")
        # Only what changed is touched: adding a server leaves the running one alone.
        added = run_agentflux("registry", "add", "clock", "--registry", str(path), "--", "mcp-server-time", env=subprocess_env)
        assert added.returncode == 0, added.stderr
        await wait_for(lambda: (s := server_of(status_of(path), "clock")) and s["health"] == "ready", "clock ready")
        assert "clock__get_current_time" in await tools()
        assert server_of(status_of(path), "time")["pid"] == time_pid
        # Changing an entry restarts that server only; removing one stops it.
        edited = yaml.safe_load(path.read_text())
        edited["mcpServers"]["time"]["args"] = ["--local-timezone", "Europe/Paris"]
        path.write_text(yaml.safe_dump(edited))
        await wait_for(lambda: (s := server_of(status_of(path), "time")) and s["pid"] not in (None, time_pid), "restart")
        removed = run_agentflux("registry", "remove", "clock", "--registry", str(path), env=subprocess_env)
        assert removed.returncode == 0, removed.stderr
        await wait_for(lambda: server_of(status_of(path), "clock") is None, "clock removed")
        assert "clock__get_current_time" not in await tools()
        await answers()
        shown = run_agentflux("registry", "status", str(path), env=subprocess_env)
        assert shown.returncode == 0 and "time: ready" in shown.stdout, shown.stdout + shown.stderr
