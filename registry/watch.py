"""Watching the registry file: every saved change is validated before anything acts on it.

The file is polled (its size, modification time and, when those change, a hash of its text):
polling works the same on every filesystem, editor and container mount, and a second's delay
is nothing next to starting a server. Editors that save by writing a new file and renaming it
over the old one are handled like any other change; a file that is briefly missing is simply
not valid yet.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from agentflux.registry.loader import Registry, RegistryError, load_registry
from agentflux.registry.schema import ServerEntry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Diff:
    """What changed between two valid registries, server by server."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    settings_changed: list[str]  # top-level sections other than mcpServers (proxy, model, training)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.settings_changed)

    def describe(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed),
                  ("settings changed:", self.settings_changed)) if names]  # fmt: skip
        return "; ".join(parts) or "no change"


def diff(old: Registry, new: Registry) -> Diff:
    before: dict[str, ServerEntry] = old.config.servers
    after: dict[str, ServerEntry] = new.config.servers
    # A relative path in an entry means something else when the file moves: compare resolved places too.
    moved = old.base_dir != new.base_dir
    return Diff(
        added=[name for name in after if name not in before],
        removed=[name for name in before if name not in after],
        changed=[name for name in after if name in before and (moved or after[name] != before[name])],
        settings_changed=[s for s in ("proxy", "model", "training") if getattr(old.config, s) != getattr(new.config, s)],
    )


class RegistryWatcher:
    """Yields each new valid registry; invalid edits are logged and kept in `error`."""

    def __init__(self, current: Registry, interval_s: float = 1.0) -> None:
        self.current = current
        self.interval_s = interval_s
        self.error: str | None = None  # why the file on disk is not what runs, when it is invalid
        self._stamp = _stamp(current.path)
        self._digest = _digest(current.path)

    async def changes(self) -> AsyncIterator[tuple[Registry, Diff]]:
        while True:
            await anyio.sleep(self.interval_s)
            stamp = await anyio.to_thread.run_sync(_stamp, self.current.path)
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            digest = await anyio.to_thread.run_sync(_digest, self.current.path)
            if digest == self._digest:
                continue  # touched, not changed
            self._digest = digest
            try:
                new = await anyio.to_thread.run_sync(load_registry, self.current.path)
            except RegistryError as exc:
                self.error = f"the registry file was edited but is invalid; still running the last valid version:\n{exc}"
                logger.error("%s", self.error)
                continue
            self.error = None
            change = diff(self.current, new)
            self.current = new
            if not change.empty:
                logger.info("registry file changed: %s", change.describe())
                yield new, change


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
