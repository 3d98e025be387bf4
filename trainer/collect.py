"""Trajectories: plans executed for real against the sandboxed server, on a fresh fixture.

The server runs exactly as in production (through the hub and its sandbox), except that a
folder it is granted read-write is swapped for a copy of the fixture workspace, reset before
every plan, and with no network whatever the registry grants: synthesized calls never reach a
real service (a remote server's tools are listed but never called). Servers that cannot act
then (Notion, monday.com) are detected by their first calls all failing; their plans, like a
remote server's, are kept as single-step examples from the discovered schemas, marked
unexecuted.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp.types as types

from agentflux.proxy.hub import Health, Hub, result_text, running_hub
from agentflux.registry.loader import Registry
from agentflux.registry.schema import ServerEntry
from agentflux.trainer.synth import Plan
from agentflux.trainer.workspace import FixtureEnv, build_workspace, fixture_entry, granted_folders, reset

logger = logging.getLogger(__name__)

UNEXECUTED = "[not executed: this server could not be reached while training]"
PROBE_PLANS = 6


@dataclass
class StepRecord:
    tool: str
    arguments: dict[str, Any]
    observation: str
    ok: bool


@dataclass
class Trajectory:
    query: str
    server: str
    steps: list[StepRecord]
    kind: str
    style: str
    source: str
    executed: bool = True
    rejected: str | None = None


def offline(entry: ServerEntry) -> ServerEntry:
    """The entry without network: synthesized calls must never reach a real service (a user's
    Notion or monday.com workspace) while training or benchmarking."""
    if entry.sandbox.network == "none":
        return entry
    return entry.model_copy(update={"sandbox": entry.sandbox.model_copy(update={"network": "none"})})


def read_only(entry: ServerEntry) -> ServerEntry:
    mounts = [mount.model_copy(update={"mode": "ro"}) for mount in entry.sandbox.mounts]
    return entry.model_copy(update={"sandbox": entry.sandbox.model_copy(update={"mounts": mounts})})


class FixtureServer:
    """A registry server, started on the fixture workspace when it is granted a folder; with
    `others`, the registry's other servers run beside it (the task benchmark routes among them).
    `world` picks the fixture (workspace.WORLDS): held-out data comes from a world of its own."""

    def __init__(self, registry: Registry, server: str, seed: int, others: bool = False, world: str = "train") -> None:
        self.registry = registry
        self.server = server
        self.seed = seed
        self._scratch = tempfile.TemporaryDirectory(prefix="agentflux-fixture-")
        root = Path(self._scratch.name)
        entry = registry.config.servers[server]
        # A remote server cannot be cut off from its service: its tools are listed, never called.
        self.remote = entry.url is not None
        self.env: FixtureEnv | None = None
        self.pristine: Path | None = None
        self.workspace: Path | None = None
        if granted_folders(entry, registry.base_dir):
            self.pristine, self.workspace = root / "pristine", root / "workspace"
            self.env = build_workspace(self.pristine, seed, world)
            reset(self.workspace, self.pristine)
            entry = fixture_entry(entry, registry.base_dir, self.workspace)
        servers = {server: entry}
        if others:
            # Beside it, the other local servers with read-only grants: the agent may call them, and
            # must change nothing of the user's. Remote servers cannot be held back, so they stay out.
            servers = {name: read_only(e) for name, e in registry.config.servers.items() if e.url is None} | servers
        config = registry.config.model_copy(update={"servers": {name: offline(e) for name, e in servers.items()}})
        self.hub = Hub(Registry(registry.path, config))

    @property
    def served_root(self) -> str | None:
        """The folder the server reports paths under (what a search returns), if it has one."""
        return str(self.workspace) if self.workspace is not None else None

    def reset(self) -> None:
        if self.workspace is not None and self.pristine is not None:
            reset(self.workspace, self.pristine)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[list[types.Tool]]:
        """Run the server for the duration of the block; yields the tools it lists (discovery)."""
        try:
            async with running_hub(self.hub):
                await self.hub.wait_settled(self.hub.settings.start_timeout_s + 5)
                server = self.hub.servers[self.server]
                if server.health is not Health.READY:
                    raise RuntimeError(f"server {self.server!r} did not start: {server.reason or server.health.value}")
                yield list(server.catalog.tools)
        finally:
            self._scratch.cleanup()


async def collect(
    fixture: FixtureServer, plans: list[Plan], on_progress: Callable[[int], None] | None = None
) -> list[Trajectory]:
    """Run every plan on the running fixture server; failed ones come back marked rejected."""
    trajectories: list[Trajectory] = []
    executable = not fixture.remote
    for index, plan in enumerate(plans):
        if executable:
            trajectories.append(await _execute(fixture, plan))
            if index + 1 == PROBE_PLANS and all(t.rejected for t in trajectories):
                executable = False
                logger.warning(
                    "server %s: every call failed (e.g. %s); keeping unexecuted single steps",
                    fixture.server,
                    trajectories[0].rejected,
                )
                trajectories = [_unexecuted(fixture.server, p) for p in plans[: index + 1]]
        else:
            trajectories.append(_unexecuted(fixture.server, plan))
        if on_progress:
            on_progress(1)
    return trajectories


async def _execute(fixture: FixtureServer, plan: Plan) -> Trajectory:
    fixture.reset()
    steps = []
    rejected = None
    for call in plan.calls:
        result = await fixture.hub.call_tool(fixture.server, call.tool, call.arguments)
        observation = result_text(result)
        steps.append(StepRecord(call.tool, call.arguments, observation, not result.is_error))
        if result.is_error:
            rejected = f"execution failed: {observation[:160]}"
            break
    return Trajectory(plan.query, fixture.server, steps, plan.kind, plan.style, plan.source, True, rejected)


def _unexecuted(server: str, plan: Plan) -> Trajectory:
    first = plan.calls[0]
    step = StepRecord(first.tool, first.arguments, UNEXECUTED, True)
    return Trajectory(plan.query, server, [step], "single", plan.style, plan.source, executed=False)
