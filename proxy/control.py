"""The control loop of a running agentflux: registry edits, training jobs, hot-loading, status.

    registry file edited ──> validated (an invalid edit is logged, shown in the status, ignored)
                        └──> hub.apply: only added, removed or changed servers start or stop
    server ready / tools changed ──> fingerprint ──> adapters in the store? ──no──> training job
    training job done ──> runtime.refresh: adapters hot-loaded, the next do_task step uses them

The status of all of it (servers, adapters, jobs, the registry's last error) is one JSON
document: written to `$AGENTFLUX_HOME/run/<pid>.json` for `agentflux registry status`, and
served to MCP hosts as the resource `agentflux://status`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio

from agentflux.proxy.backends.factory import model_path
from agentflux.proxy.hub import Health, Hub
from agentflux.proxy.runtime import AgentRuntime
from agentflux.registry.home import agentflux_home
from agentflux.registry.jobs import Job, JobQueue, JobState
from agentflux.registry.loader import Registry
from agentflux.registry.store import base_model_id, tool_fingerprint
from agentflux.registry.watch import Diff, RegistryWatcher

logger = logging.getLogger(__name__)

STATUS_INTERVAL_S = 1.0


def run_dir() -> Path:
    path = agentflux_home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Control:
    def __init__(self, registry: Registry, hub: Hub, runtime: AgentRuntime | None, on_change: Any) -> None:
        self.hub = hub
        self.runtime = runtime
        self.on_change = on_change  # the proxy's own change handler: refreshes adapters and tool lists
        self.watcher = RegistryWatcher(registry)
        self.started_at = time.time()
        self.jobs: JobQueue | None = None
        self.base_id: str | None = None
        self.training_note = "" if runtime else "no do_task surface: adapters are not used"
        self.needs_restart: list[str] = []
        if runtime is not None:
            self.jobs = JobQueue(registry.path, registry.config.training, on_finished=self._job_finished)
            try:
                self.base_id = base_model_id(str(model_path(registry.config.model, registry.base_dir)))
            except Exception as exc:  # the runtime reports the same problem to every do_task
                self.training_note = f"no training: {exc}"

    @property
    def registry(self) -> Registry:
        return self.watcher.current

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        status_file = run_dir() / f"{os.getpid()}.json"
        try:
            async with anyio.create_task_group() as tg:
                if self.jobs is not None:
                    await tg.start(self.jobs.run)
                tg.start_soon(self._write_status, status_file)
                task_status.started()
                async for registry, change in self.watcher.changes():
                    await self._apply(registry, change)
        finally:
            status_file.unlink(missing_ok=True)

    # -- registry edits ---------------------------------------------------------------------

    async def _apply(self, registry: Registry, change: Diff) -> None:
        old = self.hub.registry.config
        for name in change.removed:
            if self.jobs is not None:
                self.jobs.cancel(name, "the server was removed from the registry (its adapters stay on disk)")
        await self.hub.apply(registry, change.changed)
        if self.runtime is not None:
            self.runtime.registry = registry
        if self.jobs is not None:
            self.jobs.settings = registry.config.training
            self.jobs.registry_path = registry.path
        # Timeouts, backoff and training settings apply at once; these need a new process.
        new = registry.config
        self.needs_restart = [what for what, before, after in (
            ("model", old.model, new.model),
            ("proxy.surfaces", old.proxy.surfaces, new.proxy.surfaces),
            ("proxy.namespacing", old.proxy.namespacing, new.proxy.namespacing),
            ("proxy.http", old.proxy.http, new.proxy.http),
        ) if before != after] or self.needs_restart  # fmt: skip
        if self.needs_restart:
            logger.warning("restart agentflux to apply the new %s settings", ", ".join(self.needs_restart))

    # -- adapters and training --------------------------------------------------------------

    def fingerprint(self, name: str) -> str | None:
        server = self.hub.servers.get(name)
        if server is None or server.health is not Health.READY or not server.catalog.tools:
            return None
        return tool_fingerprint([tool.model_dump() for tool in server.catalog.tools])

    async def server_changed(self, name: str) -> None:
        """A server became ready or changed its tools: queue training when no adapters fit them."""
        fingerprint = self.fingerprint(name)
        if fingerprint is None or self.jobs is None or self.base_id is None:
            return
        store = self.runtime.store if self.runtime else None
        if store is not None and store.find(self.base_id, name, fingerprint) is not None:
            self.jobs.mark_ready(name, fingerprint)
            return
        if self.registry.config.training.auto:
            self.jobs.request(name, fingerprint)

    async def _job_finished(self, job: Job) -> None:
        if job.state is JobState.READY:
            logger.info("adapters for %s are trained; loading them", job.server)
            await self.on_change(job.server)

    # -- status -----------------------------------------------------------------------------

    def adapter_state(self, name: str) -> dict[str, Any]:
        """none (zero-shot), queued, training, ready or failed, and which adapters serve now."""
        fingerprint = self.fingerprint(name)
        index = self.runtime.adapters if self.runtime else None
        loaded = index.sets.get(name) if index else None
        serving = loaded.fingerprint if loaded else None
        job = self.jobs.jobs.get(name) if self.jobs else None
        if job is not None and job.fingerprint != fingerprint:
            job = None
        if fingerprint is not None and serving == fingerprint:
            state = "ready"
        elif job is not None and job.state is not JobState.CANCELLED:
            state = job.state.value
        else:
            state = "none"
        detail = job.describe() if job else ("" if state == "ready" else self.training_note or "zero-shot on the base model")
        if serving and serving != fingerprint:
            detail += f"; previous adapters ({serving}) serve until the new ones are ready"
        return {"state": state, "detail": detail, "serving": serving, "job": job.as_dict() if job else None}

    def status(self) -> dict[str, Any]:
        registry = self.registry
        runtime = self.runtime
        model: dict[str, Any] | None = None
        if runtime is not None:
            state = "error" if runtime.error else "ready" if runtime.agent else "loading"
            model = {"base": registry.config.model.base, "backend": registry.config.model.backend,
                     "state": state, "error": runtime.error}  # fmt: skip
        servers = []
        for status in self.hub.statuses():
            servers.append({
                "name": status.name, "health": status.health.value, "reason": status.reason or None,
                "pid": self.hub.servers[status.name].pid, "restarts": status.restarts,
                "tools": status.tools, "fingerprint": self.fingerprint(status.name),
                "adapters": self.adapter_state(status.name), "log_path": status.log_path,
            })  # fmt: skip
        return {
            "pid": os.getpid(),
            "registry": str(registry.path),
            "registry_error": self.watcher.error,
            "needs_restart": self.needs_restart or None,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "model": model,
            "training": {"auto": registry.config.training.auto, "note": self.training_note or None},
            "servers": servers,
        }

    async def _write_status(self, path: Path) -> None:
        previous = ""
        while True:
            snapshot = self.status()
            text = json.dumps({k: v for k, v in snapshot.items() if k != "updated_at"}, indent=2)
            if text != previous:
                previous = text
                partial = path.with_suffix(".partial")
                partial.write_text(json.dumps(snapshot, indent=2), encoding="utf-8")
                partial.replace(path)
            await anyio.sleep(STATUS_INTERVAL_S)
