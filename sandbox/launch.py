"""Starting a downstream server under its sandbox, and always cleaning it up.

`launch()` is the one entry point: it turns a registry entry's command and `sandbox` block
into a running process whose stdin/stdout carry MCP, whatever the kind:

- `none`: the command itself, with a minimal environment, under resource limits;
- `bwrap`: the command inside bubblewrap (see `bwrap.py`), under resource limits;
- `docker`: a container created through the Docker SDK, attached over stdio (see `docker.py`).

A server runs in its own session (process group) so that it and everything it forks can
be stopped together: MCP servers are often launchers (`npx`, `uv run`, shell wrappers)
whose real work happens in grandchildren that a plain kill would orphan.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from agentflux.sandbox import bwrap, docker
from agentflux.sandbox.errors import LaunchError, SandboxUnavailable
from agentflux.sandbox.limits import enforce
from agentflux.sandbox.spec import SandboxSpec

logger = logging.getLogger(__name__)

# The only variables of agentflux's own environment an unsandboxed server sees, besides what
# its entry grants. Hosts such as Claude Desktop start agentflux with a similarly small set.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TZ", "TMPDIR")

# How long a server gets to exit after its stdin closes, then after SIGTERM (MCP's shutdown sequence).
EXIT_GRACE_S = 2.0
TERM_GRACE_S = 2.0


@dataclass(frozen=True)
class ServerCommand:
    """What the registry entry asks to run, with secrets already resolved."""

    name: str
    command: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    base_dir: Path  # relative mount paths are relative to this (the registry file's folder)


class ServerProcess:
    """A running server, its pipes, and what is known about why it stopped."""

    def __init__(self, process: Process, limit_check: Callable[[], str | None]) -> None:
        self.process = process
        self._limit_check = limit_check

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int:
        # Polling, not process.wait(): that also waits for pipe EOF, which a forked
        # grandchild holding the pipes would delay indefinitely.
        while self.process.returncode is None:
            await anyio.sleep(0.05)
        return self.process.returncode

    async def limit_exceeded(self) -> str | None:
        """The resource limit the server hit, if that is why it stopped (asks the kernel or Docker)."""
        return await anyio.to_thread.run_sync(self._limit_check)


@asynccontextmanager
async def launch(
    spec: SandboxSpec,
    server: ServerCommand,
    on_stderr: Callable[[str], None],
    parent_env: Mapping[str, str] | None = None,
) -> AsyncIterator[ServerProcess]:
    """Run `server` isolated as `spec` grants for the duration of the block."""
    parent_env = os.environ if parent_env is None else parent_env
    granted = {name: parent_env[name] for name in spec.env if name in parent_env} | server.env
    mounts = resolve_mounts(spec, server.base_dir)
    if spec.kind == "docker":
        async with docker.container(spec, server.name, server.command, server.args, granted, server.cwd, mounts) as c:
            async with _spawn(c.attach_argv, None, None, on_stderr, c.limit_exceeded) as process:
                yield process
        return

    host_env = {name: parent_env[name] for name in BASE_ENV if name in parent_env}
    executable = resolve_command(server.command, host_env.get("PATH", ""), server.cwd)
    argv = [executable, *server.args]
    if spec.kind == "bwrap":
        if not bwrap.available():
            raise SandboxUnavailable(
                "sandbox kind 'bwrap' is not available: install bubblewrap (apt install bubblewrap), "
                "or choose kind: docker, or opt out explicitly with kind: none"
            )
        argv = bwrap.bwrap_argv(spec, argv, bwrap.sandbox_env(granted, executable), server.cwd, mounts)
        env = {"PATH": host_env.get("PATH", bwrap.SANDBOX_PATH)}
    else:
        env = host_env | granted
    limits = enforce(spec.limits, server.name)
    for note in limits.notes:
        logger.warning("server %s: %s", server.name, note)
    try:
        async with _spawn(limits.prefix + argv, env, server.cwd, on_stderr, limits.exceeded) as process:
            yield process
    finally:
        limits.release()


def resolve_mounts(spec: SandboxSpec, base_dir: Path) -> list[tuple[Path, Path, str]]:
    """Granted mounts as (host path with links resolved, path inside the sandbox, mode).

    A missing host path is a configuration error. Inside the sandbox a mount keeps the path
    it was given (or its `target`), so `/lib64 -> usr/lib64` is still found at `/lib64`.
    """
    resolved = []
    for mount in spec.mounts:
        given = Path(mount.path).expanduser()
        given = Path(os.path.normpath(given if given.is_absolute() else base_dir / given))
        if not given.exists():
            raise LaunchError(f"sandbox mount {mount.path!r} does not exist (resolved to {given})")
        resolved.append((given.resolve(), Path(mount.target) if mount.target else given, mount.mode))
    return resolved


def unmounted_directories(spec: SandboxSpec, server: ServerCommand) -> list[str]:
    """Arguments naming a host directory the sandbox does not grant (the server would not see it)."""
    if spec.kind == "none":
        return []
    try:
        granted = [host for host, _, _ in resolve_mounts(spec, server.base_dir)]
    except LaunchError:
        granted = []
    missing = []
    for arg in server.args:
        candidate = Path(arg) if os.path.isabs(arg) else server.cwd / arg
        if arg.startswith("-") or not candidate.is_dir():
            continue
        real = candidate.resolve()
        if not any(real == g or g in real.parents for g in granted):
            missing.append(arg)
    return missing


def resolve_command(command: str, path: str, cwd: Path | None) -> str:
    """Find the executable: a path as given, else on PATH, else beside the running interpreter.

    The last fallback lets a registry name Python servers installed in agentflux's own
    virtualenv (`mcp-server-time`) even when that virtualenv is not on the host's PATH.
    """
    if os.sep in command:
        candidate = Path(command) if os.path.isabs(command) else (cwd or Path.cwd()) / command
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise LaunchError(f"command {command!r} is not an executable file (looked at {candidate})")
    found = shutil.which(command, path=path) or shutil.which(command, path=str(Path(sys.executable).parent))
    if found is None:
        raise LaunchError(
            f"command {command!r} was not found on PATH or beside {sys.executable}; "
            "install it or give its absolute path in the registry"
        )
    return found


@asynccontextmanager
async def _spawn(
    argv: list[str],
    env: dict[str, str] | None,
    cwd: Path | None,
    on_stderr: Callable[[str], None],
    limit_check: Callable[[], str | None],
) -> AsyncIterator[ServerProcess]:
    try:
        process = await anyio.open_process(
            argv,
            env=env,
            cwd=cwd if cwd is not None and cwd.is_dir() else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise LaunchError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    server = ServerProcess(process, limit_check)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_pump_stderr, process, on_stderr)
        try:
            yield server
        finally:
            with anyio.CancelScope(shield=True):
                await _stop(server)
            tg.cancel_scope.cancel()


async def _pump_stderr(process: Process, on_stderr: Callable[[str], None]) -> None:
    assert process.stderr is not None
    buffer = ""
    try:
        async for chunk in TextReceiveStream(process.stderr, errors="replace"):
            lines = (buffer + chunk).split("\n")
            buffer = lines.pop()
            for line in lines:
                on_stderr(line)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        pass
    if buffer:
        on_stderr(buffer)


async def _stop(server: ServerProcess) -> None:
    """MCP's shutdown sequence: close stdin, wait, SIGTERM the group, wait, SIGKILL the group."""
    process = server.process
    if process.stdin is not None:
        try:
            await process.stdin.aclose()
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
    with anyio.move_on_after(EXIT_GRACE_S):
        await server.wait()
    if process.returncode is None:
        _kill_group(process.pid, signal.SIGTERM)
        with anyio.move_on_after(TERM_GRACE_S):
            await server.wait()
    _kill_group(process.pid, signal.SIGKILL)
    with anyio.move_on_after(TERM_GRACE_S):
        await server.wait()
    if process.returncode is None:
        logger.warning("server process %d survived SIGKILL; abandoning it", process.pid)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            try:
                await stream.aclose()
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
    # asyncio keeps the subprocess transport open while a descendant holds a pipe, then warns
    # when it is collected after the loop is gone; nothing public closes it, so reach for it.
    transport = getattr(getattr(process, "_process", None), "_transport", None)
    if transport is not None:
        transport.close()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
