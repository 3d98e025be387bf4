"""Sandboxes deny by default: a hostile server under bwrap and under Docker tries to escape,
and every attempt is denied or contained while the proxy keeps serving the other servers.
The real filesystem server works under both, exactly as without a sandbox."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import yaml

from agentflux.proxy.hub import Health
from agentflux.sandbox import bwrap

from conftest import FILESYSTEM_SERVER, PYTHON, ROOT, filesystem_entry, require, run_agentflux, sandbox_block, time_entry
from test_proxy import proxied, text_of, wait_for

pytestmark = pytest.mark.anyio

HOSTILE = str(ROOT / "tests/servers/hostile_server.py")
SECRET = "the-secret-is-42"


@pytest.fixture(params=["bwrap", "docker"])
def kind(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The sandbox kind under test, and the Docker image for kind docker."""
    if request.param == "bwrap":
        require(bwrap.available(), "bubblewrap (apt install bubblewrap)")
        return "bwrap", None
    return "docker", request.getfixturevalue("docker_image")


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's loopback that records anything it receives."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                received.append(conn.recv(1024))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def layout(tmp_path: Path) -> dict[str, Path]:
    """An allowed folder, a secret outside it, a symlink inside pointing at the secret, and
    a sibling whose name extends the allowed one (the CVE-2025-53110 prefix confusion)."""
    allowed, secret_dir, sibling = tmp_path / "allowed", tmp_path / "secret", tmp_path / "allowed-evil"
    for folder in (allowed, secret_dir, sibling):
        folder.mkdir()
    (secret_dir / "secret.txt").write_text(SECRET)
    (sibling / "loot.txt").write_text(SECRET)
    (allowed / "escape").symlink_to(secret_dir / "secret.txt")
    (allowed / "ok.txt").write_text("inside")
    return {"allowed": allowed, "secret": secret_dir / "secret.txt", "sibling": sibling / "loot.txt"}


async def call(client, tool: str, **arguments: object) -> str:
    result = await client.call_tool(f"hostile__{tool}", arguments)
    return text_of(result)


async def test_hostile_server_is_denied_and_contained(
    kind: tuple[str, str | None], tmp_path: Path, listener: tuple[int, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_kind, image = kind
    paths = layout(tmp_path)
    port, received = listener
    monkeypatch.setenv("AF_PROXY_ONLY_SECRET", SECRET)
    hostile = {
        "command": PYTHON,
        "args": [HOSTILE],
        "sandbox": sandbox_block(
            sandbox_kind,
            [{"path": str(paths["allowed"]), "mode": "rw"}],
            image,
            limits={"memory_mb": 256, "pids": 64},
        ),
    }
    servers = {"hostile": hostile, "time": time_entry()}
    async with proxied(tmp_path, servers, {"restart_backoff_s": 0.2}) as (hub, client):
        await hub.wait_settled(60)
        assert hub.servers["hostile"].health is Health.READY, hub.servers["hostile"].reason

        # What was granted works.
        assert await call(client, "read", path=str(paths["allowed"] / "ok.txt")) == "read: inside"
        assert await call(client, "write", path=str(paths["allowed"] / "new.txt"), content="fine") == "written"
        assert (paths["allowed"] / "new.txt").read_text() == "fine"

        # Files outside the mounts do not exist for the server, through any path.
        for path in (paths["secret"], paths["allowed"] / "escape", paths["sibling"], Path.home() / ".bashrc"):
            answer = await call(client, "read", path=str(path))
            assert answer.startswith("denied:") and SECRET not in answer, (path, answer)
        shadow = await call(client, "read", path="/etc/shadow")
        assert shadow.startswith("denied:")

        # Nothing written outside the mounts reaches the host: system paths are read-only, the
        # planted symlink leads nowhere, and /tmp is a private tmpfs that vanishes with the sandbox.
        for path in (paths["allowed"] / "escape", Path("/usr/planted.txt")):
            answer = await call(client, "write", path=str(path), content="pwned")
            assert answer.startswith("denied:"), (path, answer)
        await call(client, "write", path=str(tmp_path / "planted.txt"), content="pwned")
        assert not (tmp_path / "planted.txt").exists()
        assert paths["secret"].read_text() == SECRET

        # No network: the host's loopback listener is unreachable.
        answer = await call(client, "connect", host="127.0.0.1", port=port)
        assert answer.startswith("denied:")
        assert received == []

        # agentflux's own environment does not leak in.
        assert await call(client, "getenv", name="AF_PROXY_ONLY_SECRET") == "unset"

        # A memory hog is killed by its limit, reported, and the server restarted.
        hog = await client.call_tool("hostile__memory_hog", {"megabytes": 2048})
        assert hog.is_error
        server = hub.servers["hostile"]
        await wait_for(lambda: server.restarts >= 1, timeout=30)
        assert server.last_failure == "killed: out of memory (limit 256 MiB)"
        await wait_for(lambda: server.health is Health.READY, timeout=60)

        # A fork bomb runs into the process limit.
        bomb = await call(client, "fork_bomb")
        assert bomb.startswith("contained after"), bomb
        assert int(bomb.split()[2]) < 64

        # Throughout, the other server kept answering.
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not result.is_error


async def test_filesystem_server_works_the_same_under_every_kind(
    kind: tuple[str, str | None], tmp_path: Path, workspace: Path
) -> None:
    sandbox_kind, image = kind
    entry = filesystem_entry(workspace)
    entry["sandbox"] = sandbox_block(sandbox_kind, [{"path": str(workspace), "mode": "rw"}], image)
    async with proxied(tmp_path, {"fs": entry, "plain": filesystem_entry(workspace, kind="none")}) as (hub, client):
        await hub.wait_settled(60)
        assert hub.servers["fs"].health is Health.READY, hub.servers["fs"].reason
        for tool, arguments in (
            ("list_directory", {"path": str(workspace)}),
            ("read_text_file", {"path": str(workspace / "notes/todo.txt")}),
            ("search_files", {"path": str(workspace), "pattern": "*.md"}),
            ("get_file_info", {"path": str(workspace / "projects/alpha/config.json")}),
            ("read_text_file", {"path": "/etc/hostname"}),
        ):
            sandboxed = await client.call_tool(f"fs__{tool}", arguments)
            plain = await client.call_tool(f"plain__{tool}", arguments)
            if tool == "get_file_info":  # access times move when the other server reads the file
                assert sandboxed.is_error == plain.is_error
                assert text_of(sandboxed).splitlines()[0] == text_of(plain).splitlines()[0]
            else:
                assert (sandboxed.is_error, text_of(sandboxed)) == (plain.is_error, text_of(plain))
        written = await client.call_tool("fs__write_file", {"path": str(workspace / "out.txt"), "content": "hello"})
        assert not written.is_error
        assert (workspace / "out.txt").read_text() == "hello"


async def test_missing_sandbox_disables_the_server_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bwrap, "available", lambda: False)
    servers = {"fs": {"command": PYTHON, "args": [HOSTILE]}, "open": time_entry() | {"sandbox": {"kind": "none"}}}
    async with proxied(tmp_path, servers) as (hub, client):
        await hub.wait_settled(30)
        status = {s.name: s for s in hub.statuses()}
        assert status["fs"].health is Health.DISABLED
        assert "install bubblewrap" in status["fs"].reason and "kind: none" in status["fs"].reason
        assert status["fs"].restarts == 0
        assert status["open"].health is Health.READY


def _agentflux_containers(owner: int) -> list[str]:
    import docker

    engine = docker.from_env()
    return [c.id for c in engine.containers.list(all=True, filters={"label": f"agentflux.owner={owner}"})]


def test_containers_and_processes_are_cleaned_up_after_the_proxy_is_killed(
    tmp_path: Path, docker_image: str, subprocess_env: dict[str, str]
) -> None:
    require(bwrap.available(), "bubblewrap (apt install bubblewrap)")
    servers = {
        "boxed": {"command": PYTHON, "args": [HOSTILE], "sandbox": sandbox_block("docker", [], docker_image)},
        "wrapped": {"command": PYTHON, "args": [HOSTILE]},
    }
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"mcpServers": servers}))
    proxy = subprocess.Popen(
        [PYTHON, "-m", "agentflux.proxy", "serve", "--registry", str(registry)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=subprocess_env,
    )
    try:
        # Both servers are up once a container exists and a bwrap process runs under the proxy.
        def children() -> list[int]:
            out = subprocess.run(["pgrep", "-f", f"bwrap.*{HOSTILE}"], capture_output=True, text=True).stdout
            return [int(pid) for pid in out.split()]

        anyio.run(_until, lambda: bool(_agentflux_containers(proxy.pid)) and bool(children()))
        wrapped = children()
        proxy.kill()
        proxy.wait(timeout=10)
        # bwrap dies with its parent; the container outlives it until the next start sweeps it.
        anyio.run(_until, lambda: not any(_alive(pid) for pid in wrapped))
        assert _agentflux_containers(proxy.pid)
    finally:
        if proxy.poll() is None:
            proxy.kill()
    check = run_agentflux("registry", "check", str(registry), "--timeout", "5", env=subprocess_env)
    assert check.returncode in (0, 1), check.stderr
    assert _agentflux_containers(proxy.pid) == []


async def _until(predicate, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_registry_check_warns_about_unmounted_directories(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    registry = tmp_path / "registry.yaml"
    entry = {"command": "node", "args": [str(FILESYSTEM_SERVER), str(data)]}
    registry.write_text(yaml.safe_dump({"mcpServers": {"fs": entry}}))
    done = run_agentflux("registry", "check", str(registry), "--timeout", "20", env=subprocess_env)
    assert f"fs: argument {str(data)!r} names a host directory the sandbox does not mount" in done.stdout
    assert done.returncode == 1  # the filesystem server cannot start on a directory it cannot see

