"""Which trained adapters serve which toolset, kept in step with the running servers.

For every ready server the index computes the fingerprint of the tools it lists now and looks
up the adapter store under (base model, server, fingerprint). Found adapters are loaded into
the backend under names that include the fingerprint, so a retrained set never collides with
the one it replaces (and vLLM never serves stale weights under a reused name); the old set
keeps answering until the new one is fully loaded. A toolset with no matching adapters runs
zero-shot on the base model, and every step says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from agentflux.proxy.backends import Backend
from agentflux.registry.store import ROUTER, AdapterStore, Manifest, tool_fingerprint

logger = logging.getLogger(__name__)


@dataclass
class LoadedSet:
    fingerprint: str
    folder: Path
    manifest: Manifest
    names: dict[str, str] = field(default_factory=dict)  # role ("selector", "tool:<name>", "traditional", "router") -> backend name


class AdapterIndex:
    def __init__(
        self, backend: Backend, store: AdapterStore, base_id: str, mode: str = "decoupled", use_router: bool = True
    ) -> None:
        self.backend = backend
        self.use_router = use_router  # model.router: adapter; with `base` the base model routes
        self.store = store
        self.base_id = base_id
        self.mode = mode  # decoupled, or traditional (the baseline answers both questions)
        self.sets: dict[str, LoadedSet] = {}
        self.router: LoadedSet | None = None
        self._lock = anyio.Lock()

    async def sync(self, toolsets: dict[str, list[dict]]) -> list[str]:
        """Load adapters for the servers' current tools, unload what no longer applies; returns what changed."""
        async with self._lock:
            changed = []
            for server, tools in toolsets.items():
                fingerprint = tool_fingerprint(tools)
                current = self.sets.get(server)
                if current is not None and current.fingerprint == fingerprint:
                    continue
                manifest = self.store.find(self.base_id, server, fingerprint)
                if manifest is None:
                    if current is not None:
                        # The tools changed: the old adapters keep serving until new ones exist.
                        logger.info("server %s changed its tools; keeping its previous adapters until retrained", server)
                    continue
                folder = self.store.directory(self.base_id, server, fingerprint)
                loaded = await self._load(server, LoadedSet(fingerprint, folder, manifest))
                self.sets[server] = loaded
                if current is not None:
                    await self._unload(current)
                changed.append(server)
            # A router only knows the toolsets it was trained on: with any other set, route zero-shot.
            router = self._find_router(set(toolsets)) if self.use_router else None
            if (router and router.fingerprint) != (self.router and self.router.fingerprint):
                previous, self.router = self.router, await self._load(ROUTER, router) if router else None
                if previous is not None:
                    await self._unload(previous)
                changed.append(ROUTER)
            return changed

    async def _load(self, server: str, loaded: LoadedSet) -> LoadedSet:
        manifest = loaded.manifest
        roles: dict[str, str | None] = {"selector": manifest.selector, "traditional": manifest.traditional}
        if manifest.mode == "router":
            roles = {"router": manifest.selector}
        roles |= {f"tool:{tool}": folder for tool, folder in manifest.tools.items()}
        for role, folder in roles.items():
            if folder is None:
                continue
            name = f"{server}@{loaded.fingerprint}/{role}"
            await self.backend.load_adapter(name, loaded.folder / folder)
            loaded.names[role] = name
        logger.info("loaded %d adapters for %s (%s)", len(loaded.names), server, loaded.fingerprint)
        return loaded

    async def _unload(self, loaded: LoadedSet) -> None:
        for name in loaded.names.values():
            await self.backend.unload_adapter(name)

    def _find_router(self, servers: set[str]) -> LoadedSet | None:
        """The newest router trained on exactly the toolsets now served (a router knows no others)."""
        for manifest in self.store.manifests(ROUTER, self.base_id):
            if set(manifest.toolsets) == servers:
                folder = self.store.directory(self.base_id, ROUTER, manifest.fingerprint)
                return LoadedSet(manifest.fingerprint, folder, manifest)
        return None

    def with_mode(self, mode: str) -> AdapterIndex:
        """The same loaded adapters answering as `mode`: the benchmark compares systems on one backend."""
        view = AdapterIndex(self.backend, self.store, self.base_id, mode, self.use_router)
        view.sets, view.router = self.sets, self.router
        return view

    # -- what answers each question --------------------------------------------------------

    def selector(self, server: str) -> str | None:
        loaded = self.sets.get(server)
        if loaded is None:
            return None
        return loaded.names.get("traditional" if self.mode == "traditional" else "selector")

    def arguments(self, server: str, tool: str) -> str | None:
        loaded = self.sets.get(server)
        if loaded is None:
            return None
        return loaded.names.get("traditional" if self.mode == "traditional" else f"tool:{tool}")

    def router_adapter(self) -> str | None:
        return self.router.names.get("router") if self.router else None
