"""Loading a registry file, with errors that point at the exact line.

YAML and JSON files go through the same path: the text is parsed into plain data while
remembering where each key sits, then validated by the pydantic schema; every problem is
reported as `file:line:column: dotted.path: what is wrong, and what is expected`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agentflux.registry.schema import RegistryFile

Location = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    column: int | None
    message: str


class RegistryError(Exception):
    """A registry file that cannot be used, with every problem found in it."""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = []
        for p in self.problems:
            where = str(self.file) if p.line is None else f"{self.file}:{p.line}:{p.column}"
            field = f" {p.path}:" if p.path else ""
            lines.append(f"{where}:{field} {p.message}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Registry:
    """A validated registry file and where it came from."""

    path: Path
    config: RegistryFile

    @property
    def base_dir(self) -> Path:
        """Relative paths in the file (server working directories) are relative to the file itself."""
        return self.path.parent


def load_registry(path: str | Path) -> Registry:
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(path, [Problem("", None, None, "file not found; pass --registry PATH or create it")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(path, [Problem("", None, None, f"cannot read the file: {exc}")]) from None
    return parse_registry(text, path)


def parse_registry(text: str, path: Path) -> Registry:
    data, positions = _parse(text, path)
    if not isinstance(data, dict):
        raise RegistryError(path, [Problem("", 1, 1, "expected a mapping with an 'mcpServers' key at the top level")])
    try:
        config = RegistryFile.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(error, positions) for error in exc.errors()]
        raise RegistryError(path, problems) from None
    problems = _cross_checks(config, positions)
    if problems:
        raise RegistryError(path, problems)
    return Registry(path=path, config=config)


def _cross_checks(config: RegistryFile, positions: dict[Location, tuple[int, int]]) -> list[Problem]:
    """Rules that span several fields, reported at the field a user would change."""
    problems = []
    enabled = [name for name, entry in config.servers.items() if entry.enabled]
    if not config.proxy.namespacing and len(enabled) > 1:
        loc: Location = ("proxy", "namespacing")
        line, column = _position(loc, positions)
        problems.append(
            Problem(
                "proxy.namespacing",
                line,
                column,
                "'false' exposes tool names unprefixed, which is only valid with one enabled server "
                f"(enabled: {', '.join(enabled)}); set it to true or disable the others",
            )
        )
    return problems


# -- parsing with positions ---------------------------------------------------------------


def _parse(text: str, path: Path) -> tuple[Any, dict[Location, tuple[int, int]]]:
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(path, [Problem("", exc.lineno, exc.colno, f"invalid JSON: {exc.msg}")]) from None
        # Valid JSON is YAML once tabs (legal JSON whitespace, never inside strings) become
        # spaces; the YAML composer then gives us positions with unchanged line numbers.
        text = text.replace("\t", " ")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RegistryError(path, [Problem("", 1, 1, "the file is empty; it needs an 'mcpServers' mapping")])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise RegistryError(path, [Problem("", line, column, f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise RegistryError(path, [Problem("", None, None, f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    positions: dict[Location, tuple[int, int]] = {}
    duplicates: list[Problem] = []
    _walk(node, (), positions, duplicates)
    if duplicates:
        raise RegistryError(path, duplicates)
    return data, positions


def _walk(node: yaml.Node, loc: Location, positions: dict[Location, tuple[int, int]], duplicates: list[Problem]) -> None:
    positions.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                duplicates.append(Problem(_dotted(loc + (key,)), *where, "duplicate key; each key may appear once"))
            seen.add(key)
            positions[loc + (key,)] = where
            _walk(value_node, loc + (key,), positions, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, loc + (index,), positions, duplicates)


def _position(loc: Location, positions: dict[Location, tuple[int, int]]) -> tuple[int | None, int | None]:
    """The position of `loc`, or of its nearest existing parent (a missing key has none)."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return positions[loc[:end]]
    return None, None


def _dotted(loc: Location) -> str:
    return ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in loc).replace(".[", "[")


# -- turning pydantic errors into precise messages ------------------------------------------


def _problem(error: Any, positions: dict[Location, tuple[int, int]]) -> Problem:
    loc: Location = tuple(part for part in error["loc"] if not _is_union_tag(part))
    line, column = _position(loc, positions)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        message = f"unknown key {loc[-1]!r}{hint}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("value_error", "assertion_error"):
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        message = f"{error['msg']}, got {_short(error.get('input'))}"
    return Problem(_dotted(loc), line, column, message)


def _is_union_tag(part: str | int) -> bool:
    # pydantic inserts the member type's name into the location of union errors.
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(loc: Location) -> list[str]:
    """The keys the model at `loc` accepts, walking the schema the way the data nests."""
    model: type[BaseModel] | None = RegistryFile
    dict_level = False
    for part in loc:
        if model is None:
            return []
        if dict_level:
            dict_level = False
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        annotation = field.annotation
        origin = getattr(annotation, "__origin__", None)
        if origin is dict:
            model, dict_level = annotation.__args__[1], True
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    if model is None or dict_level:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]
