"""Public names for downstream tools and prompts.

Hosts are stricter than MCP: Anthropic's API accepts only `[A-Za-z0-9_-]`, OpenAI caps
names at 64 characters and Cursor drops longer ones. A namespaced name is
`<server>__<tool>` with every other character replaced by `_`; a name that is still too
long, or that two different tools would share after sanitizing, gets a short hash of
its origin so it stays unique and stable across restarts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

SEPARATOR = "__"
MAX_LENGTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def sanitize(text: str) -> str:
    return _UNSAFE.sub("_", text) or "_"


def _hashed(name: str, server: str, original: str) -> str:
    digest = hashlib.sha1(f"{server}\0{original}".encode()).hexdigest()[:8]
    return f"{name[: MAX_LENGTH - len(digest) - 1]}_{digest}"


@dataclass(frozen=True)
class Origin:
    server: str
    name: str


class NameMap:
    """A two-way map between public names and (server, original name)."""

    def __init__(self, items: Iterable[Origin], namespacing: bool = True) -> None:
        self._public: dict[Origin, str] = {}
        self._origin: dict[str, Origin] = {}
        # Sorting makes collision resolution independent of the order servers became ready.
        for origin in sorted(set(items), key=lambda o: (o.server, o.name)):
            if namespacing:
                name = f"{sanitize(origin.server)}{SEPARATOR}{sanitize(origin.name)}"
                if len(name) > MAX_LENGTH or name in self._origin:
                    name = _hashed(name, origin.server, origin.name)
            else:
                # Transparent mode: names pass through untouched (one server, so no collisions).
                name = origin.name
            self._public[origin] = name
            self._origin[name] = origin

    def public(self, server: str, name: str) -> str:
        return self._public[Origin(server, name)]

    def origin(self, public: str) -> Origin | None:
        return self._origin.get(public)

    def __len__(self) -> int:
        return len(self._origin)
