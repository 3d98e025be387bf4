"""Starting a downstream server process and always cleaning it up.

A server runs in its own session (process group), so that it and everything it forks
can be stopped together: MCP servers are often launchers (`npx`, `uv run`, shell
wrappers) whose real work happens in grandchildren that a plain kill would orphan.
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
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from agentflux.sandbox.spec import SandboxSpec

logger = logging.getLogger(__name__)

# The only variables of the proxy's own environment a server sees, besides what its entry grants.
# Hosts such as Claude Desktop start agentflux with a similarly small set.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "TZ", "TMPDIR")

# How long a server gets to exit after its stdin closes, then after SIGTERM (MCP's shutdown sequence).
EXIT_GRACE_S = 2.0
TERM_GRACE_S = 2.0


class LaunchError(Exception):
    """A server that cannot be started as configured; the message says what to fix."""


@dataclass(frozen=True)
class LaunchPlan:
    """The exact process to run: what the sandbox layer decided."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None
    kind: str = "none"
    notes: list[str] = field(default_factory=list)


def plan_launch(
    spec: SandboxSpec,
    command: str,
    args: list[str],
    env: Mapping[str, str],
    cwd: Path | None,
    parent_env: Mapping[str, str] | None = None,
) -> LaunchPlan:
    """Decide how to run `command args` under `spec`, with only `env` granted on top of the base set."""
    parent_env = os.environ if parent_env is None else parent_env
    full_env = {name: parent_env[name] for name in BASE_ENV if name in parent_env}
    full_env.update(env)
    executable = resolve_command(command, full_env.get("PATH", ""), cwd)
    return LaunchPlan(argv=[executable, *args], env=full_env, cwd=cwd, kind=spec.kind)


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


class ServerProcess:
    """A running server process, its pipes, and a way to learn when it exits."""

    def __init__(self, process: Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        # Polling, not process.wait(): that also waits for pipe EOF, which a forked
        # grandchild holding the pipes would delay indefinitely.
        while self.process.returncode is None:
            await anyio.sleep(0.05)
        return self.process.returncode


@asynccontextmanager
async def spawn(plan: LaunchPlan, on_stderr: Callable[[str], None]) -> AsyncIterator[ServerProcess]:
    """Run the planned process for the duration of the block, then stop its whole process group."""
    try:
        process = await anyio.open_process(
            plan.argv,
            env=plan.env,
            cwd=plan.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise LaunchError(f"cannot start {plan.argv[0]!r}: {exc.strerror or exc}") from None
    server = ServerProcess(process)
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


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
