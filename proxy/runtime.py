"""The model side of a running agentflux: the backend, its adapters, and the agent.

Loading a model takes seconds (the tiny one) to minutes (a 7B on vLLM), so it happens in the
background after the server starts: hosts get their `initialize` and tool list at once, and a
`do_task` that arrives early waits for the model with progress notifications. Whenever the
servers' tools change, or a training job publishes adapters, `refresh` hot-loads what now
applies.
"""

from __future__ import annotations

import logging

import anyio

from agentflux.proxy.adapters import AdapterIndex
from agentflux.proxy.agent import Agent
from agentflux.proxy.backends.factory import create_backend, model_format, model_path
from agentflux.proxy.hub import Health, Hub
from agentflux.registry.loader import Registry
from agentflux.registry.store import AdapterStore, base_model_id

logger = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """The model could not be loaded; the message says why and what to change."""


class AgentRuntime:
    def __init__(self, registry: Registry, hub: Hub, store: AdapterStore | None = None, mode: str = "decoupled") -> None:
        self.registry = registry
        self.hub = hub
        self.store = store or AdapterStore()
        self.mode = mode
        self.agent: Agent | None = None
        self.adapters: AdapterIndex | None = None
        self.error: str | None = None
        self._ready = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the model, then keep adapters in step with the servers until cancelled."""
        task_status.started()
        settings = self.registry.config.model
        try:
            path = model_path(settings, self.registry.base_dir)
            fmt = model_format(settings, path)
            backend = await anyio.to_thread.run_sync(create_backend, settings, self.registry.base_dir)
        except Exception as exc:  # any failure to load is reported to every do_task, never raised
            self.error = f"the model could not be loaded: {exc}"
            logger.error("%s", self.error)
            self._ready.set()
            return
        self.adapters = AdapterIndex(backend, self.store, base_model_id(path), self.mode, settings.router == "adapter")
        self.agent = Agent(backend, self.hub, self.adapters, fmt, summary=settings.summary)
        await self.refresh()
        self._ready.set()
        logger.info("model ready: %s (%s backend)", path, settings.backend)
        await anyio.sleep_forever()

    async def ready_agent(self, timeout: float) -> Agent:
        with anyio.move_on_after(timeout):
            await self._ready.wait()
        if self.agent is None:
            raise ModelUnavailable(self.error or f"the model is still loading after {timeout:g}s; try again shortly")
        return self.agent

    async def refresh(self) -> list[str]:
        """Load the adapters that match the ready servers' current tools; returns the servers that changed."""
        if self.adapters is None:
            return []
        toolsets = {
            name: [tool.model_dump() for tool in server.catalog.tools]
            for name, server in self.hub.servers.items()
            if server.health is Health.READY
        }
        try:
            return await self.adapters.sync(toolsets)
        except Exception:  # a broken adapter folder must not take do_task down: zero-shot instead
            logger.exception("loading adapters failed")
            return []
