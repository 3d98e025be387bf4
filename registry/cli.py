"""`agentflux registry ...` commands that need only the file itself."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from agentflux.registry.home import agentflux_home
from agentflux.registry.loader import Registry, RegistryError, load_registry

REGISTRY_ENV = "AGENTFLUX_REGISTRY"


def command_group(commands: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """The sub-command group `name`, shared by every package that adds commands to it."""
    parser = commands.choices.get(name)
    if parser is None:
        parser = commands.add_parser(name, help=help, description=help)
        parser.set_defaults(handler=lambda args: parser.print_help() or 2)
        parser._agentflux_commands = parser.add_subparsers(metavar="COMMAND")  # type: ignore[attr-defined]
    return parser._agentflux_commands  # type: ignore[attr-defined]


def default_registry_path() -> Path:
    raw = os.environ.get(REGISTRY_ENV)
    return Path(raw).expanduser() if raw else agentflux_home() / "registry.yaml"


def add_registry_argument(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    help = f"the registry file (default: ${REGISTRY_ENV} or ~/.agentflux/registry.yaml)"
    if positional:
        parser.add_argument("registry", nargs="?", type=Path, help=help)
    else:
        parser.add_argument("--registry", type=Path, help=help)


def load_or_report(path: Path | None) -> Registry | None:
    """Load the registry, or print its problems to stderr and return None."""
    try:
        return load_registry(path or default_registry_path())
    except RegistryError as exc:
        print(f"invalid registry:\n{exc}", file=sys.stderr)
        return None


def _validate(args: argparse.Namespace) -> int:
    path = args.registry or default_registry_path()
    try:
        registry = load_registry(path)
    except RegistryError as exc:
        if args.json:
            problems = [p.__dict__ for p in exc.problems]
            print(json.dumps({"file": str(exc.file), "valid": False, "problems": problems}, indent=2))
        else:
            print(f"invalid registry:\n{exc}", file=sys.stderr)
        return 2
    servers = registry.config.servers
    if args.json:
        print(json.dumps({"file": str(registry.path), "valid": True, "servers": list(servers)}, indent=2))
    else:
        print(f"{registry.path}: valid, {len(servers)} servers: {', '.join(servers)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = command_group(commands, "registry", "inspect and edit the registry of downstream MCP servers")
    validate = group.add_parser("validate", help="check the file against the schema without starting anything")
    add_registry_argument(validate, positional=True)
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(handler=_validate)
