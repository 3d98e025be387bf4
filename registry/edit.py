"""Editing the registry file from the command line, keeping what the user wrote.

YAML files are edited with a round-trip parser, so comments, key order, quoting and flow
style of everything not touched stay as they were; JSON files (which have no comments) keep
their key order and get two-space indentation. The edited text is validated as a whole
before it replaces the file, and it replaces it atomically (written beside, then renamed),
so a running agentflux never reads half a file and a bad edit never lands.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from agentflux.registry.loader import RegistryError, parse_registry

SERVERS_KEY = "mcpServers"


class EditError(Exception):
    """An edit that cannot be made; the message says why."""


def add_server(path: Path, name: str, entry: dict[str, Any], *, replace: bool = False) -> None:
    """Add server `name` (or replace it with `replace`)."""
    path = path.expanduser()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    servers = _servers(text, path)
    if name in servers and not replace:
        raise EditError(f"{path}: a server named {name!r} exists already; remove it first or pass --replace")
    if name in servers:
        text = _without(text, path, name)
    _commit(path, _with(text, path, name, entry))


def remove_server(path: Path, name: str) -> None:
    path = path.expanduser()
    if not path.exists():
        raise EditError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    servers = _servers(text, path)
    if name not in servers:
        raise EditError(f"{path}: no server named {name!r} (servers: {', '.join(servers) or 'none'})")
    _commit(path, _without(text, path, name))


def _commit(path: Path, text: str) -> None:
    try:
        parse_registry(text, path.resolve())
    except RegistryError as exc:
        raise EditError(f"the edit would make the registry invalid, so the file is unchanged:\n{exc}") from None
    _write_atomically(path, text)


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _load(text: str, path: Path) -> Any:
    if not text.strip():
        return {} if _is_json(path) else CommentedMap()
    try:
        data = json.loads(text) if _is_json(path) else _yaml().load(text)
    except Exception as exc:
        raise EditError(f"{path}: cannot parse the file, so it is unchanged: {exc}") from None
    if not isinstance(data, dict):
        raise EditError(f"{path}: expected a mapping with an '{SERVERS_KEY}' key at the top level")
    return data


def _servers(text: str, path: Path) -> dict[str, Any]:
    servers = _load(text, path).get(SERVERS_KEY)
    return servers if isinstance(servers, dict) else {}


def _with(text: str, path: Path, name: str, entry: dict[str, Any]) -> str:
    data = _load(text, path)
    servers = data.get(SERVERS_KEY)
    if _is_json(path):
        data.setdefault(SERVERS_KEY, {})[name] = entry
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if isinstance(servers, CommentedMap) and servers and not servers.fa.flow_style():
        return _append_entry(text, servers, name, entry)
    if not isinstance(servers, dict):
        data[SERVERS_KEY] = servers = CommentedMap()
    servers[name] = entry
    return _dump_yaml(data)


def _without(text: str, path: Path, name: str) -> str:
    data = _load(text, path)
    servers = data[SERVERS_KEY]
    if _is_json(path):
        del servers[name]
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if servers.fa.flow_style():
        del servers[name]
        return _dump_yaml(data)
    lines = text.splitlines(keepends=True)
    first, last = _entry_lines(lines, servers, name)
    # Comment lines right above the entry describe it and go with it.
    while first > 0 and lines[first - 1].strip().startswith("#"):
        first -= 1
    del lines[first : last + 1]
    # Entries separated by blank lines stay separated by exactly one.
    if 0 < first < len(lines) and not lines[first - 1].strip() and not lines[first].strip():
        del lines[first]
    return "".join(lines).rstrip("\n") + "\n"


def _entry_lines(lines: list[str], servers: CommentedMap, name: str) -> tuple[int, int]:
    """The first and last line (0-based) of an entry's own text, without the blank or comment
    lines after it, which belong to whatever follows."""
    keys = list(servers)
    first = servers.lc.key(name)[0]
    index = keys.index(name)
    end = servers.lc.key(keys[index + 1])[0] if index + 1 < len(keys) else _block_end(lines, servers, first)
    last = end - 1
    while last > first and (not lines[last].strip() or lines[last].strip().startswith("#")):
        last -= 1
    return first, last


def _block_end(lines: list[str], servers: CommentedMap, first: int) -> int:
    """The line after the mcpServers block: the next line indented less than its keys."""
    indent = servers.lc.key(next(iter(servers)))[1]
    for number in range(first + 1, len(lines)):
        line = lines[number]
        if line.strip() and not line.strip().startswith("#") and len(line) - len(line.lstrip()) < indent:
            return number
    return len(lines)


def _append_entry(text: str, servers: CommentedMap, name: str, entry: dict[str, Any]) -> str:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    keys = list(servers)
    _, last = _entry_lines(lines, servers, keys[-1])
    indent = servers.lc.key(keys[0])[1]
    block = _dump_yaml({name: entry}).splitlines(keepends=True)
    block = [" " * indent + line if line.strip() else line for line in block]
    # Follow the file's habit: a blank line between entries when it has them.
    spaced = len(keys) > 1 and not lines[servers.lc.key(keys[-1])[0] - 1].strip()
    lines[last + 1 : last + 1] = (["\n"] if spaced else []) + block
    return "".join(lines)


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode: comments, order, quoting and flow style survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never re-wrap long lines
    return yaml


def _dump_yaml(data: Any) -> str:
    buffer = io.StringIO()
    _yaml().dump(data, buffer)
    return buffer.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
