"""The `agentflux registry` commands, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ROOT, python_entry, time_entry, write_registry
from conftest import run_agentflux as agentflux


def test_check_the_example_registry(subprocess_env: dict[str, str]) -> None:
    env = {k: v for k, v in subprocess_env.items() if k not in ("NOTION_TOKEN", "MONDAY_TOKEN")}
    done = agentflux("registry", "check", str(ROOT / "examples/registry.yaml"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    servers = {s["name"]: s for s in json.loads(done.stdout)["servers"]}
    assert servers["filesystem"]["health"] == "ready" and servers["filesystem"]["tools"] == 14
    assert "read_text_file" in servers["filesystem"]["tool_names"]
    assert servers["time"]["health"] == "ready" and servers["time"]["tools"] == 2
    assert servers["git"]["health"] == "ready" and servers["git"]["tools"] == 12
    for name, secret in (("notion", "NOTION_TOKEN"), ("monday", "MONDAY_TOKEN")):
        assert servers[name]["health"] == "disabled"
        assert f"missing secret {secret}" in servers[name]["reason"]


def test_check_exits_non_zero_when_a_server_fails(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    broken = python_entry("import sys; print('no database at /data', file=sys.stderr); sys.exit(2)")
    registry = write_registry(tmp_path, {"time": time_entry(), "db": broken})
    done = agentflux("registry", "check", str(registry), env=subprocess_env)
    assert done.returncode == 1
    assert "time: ready" in done.stdout
    assert "db: failed (exited with code 2: no database at /data" in done.stdout


def test_invalid_registry_is_reported_with_its_position(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("mcpServers:\n  time:\n    command: mcp-server-time\n    argz: [--local-timezone, UTC]\n")
    for command in ("check", "validate"):
        done = agentflux("registry", command, str(path), env=subprocess_env)
        assert done.returncode == 2
        assert f"{path}:4:5: mcpServers.time.argz: unknown key 'argz'" in done.stderr
    done = agentflux("registry", "validate", str(path), "--json", env=subprocess_env)
    report = json.loads(done.stdout)
    assert report["valid"] is False and report["problems"][0]["line"] == 4


def test_serve_refuses_an_invalid_registry(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text("mcpServers:\n  t: {command: x, url: http://y}\n")
    done = agentflux("serve", "--registry", str(path), env=subprocess_env)
    assert done.returncode == 2
    assert "not both" in done.stderr
