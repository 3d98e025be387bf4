"""`agentflux registry ...` commands that need only the file itself."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from typing import Any

from agentflux.registry.edit import EditError, add_server, remove_server
from agentflux.registry.home import agentflux_home
from agentflux.registry.loader import Registry, RegistryError, load_registry
from agentflux.registry.status import offline_status, render_status, running_status

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


def _entry(args: argparse.Namespace) -> dict[str, Any]:
    """The registry entry the `add` options describe, in the file's own (Claude Desktop) shape."""
    entry: dict[str, Any] = {}
    if args.description:
        entry["description"] = args.description
    if args.url:
        if args.command_line:
            raise EditError("give either --url (a remote server) or a command after --, not both")
        entry["url"] = args.url
        if args.header:
            entry["headers"] = dict(_pair(item, "--header") for item in args.header)
    else:
        if not args.command_line:
            raise EditError("give the server's command after --, e.g. agentflux registry add time -- mcp-server-time")
        entry["command"], entry["args"] = args.command_line[0], list(args.command_line[1:])
        if args.env:
            entry["env"] = dict(_pair(item, "--env") for item in args.env)
        sandbox: dict[str, Any] = {}
        if args.sandbox:
            sandbox["kind"] = args.sandbox
        if args.image:
            sandbox["image"] = args.image
        if args.mount:
            sandbox["mounts"] = [_mount(item) for item in args.mount]
        if args.network:
            sandbox["network"] = args.network
        if sandbox:
            entry["sandbox"] = sandbox
    if args.allow_tool:
        entry["tools"] = {"allow": list(args.allow_tool)}
    return entry


def _pair(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise EditError(f"{option} takes KEY=VALUE, got {item!r} (for secrets write KEY='${{NAME}}')")
    return key, value


def _mount(item: str) -> dict[str, str]:
    path, _, mode = item.rpartition(":") if item.endswith((":ro", ":rw")) else (item, "", "ro")
    return {"path": path, "mode": mode}


def _add(args: argparse.Namespace) -> int:
    path = args.registry or default_registry_path()
    try:
        add_server(path, args.name, _entry(args), replace=args.replace)
    except EditError as exc:
        print(f"agentflux registry add: {exc}", file=sys.stderr)
        return 2
    print(f"added {args.name} to {path}; a running agentflux starts it (and trains its adapters) within seconds")
    return 0


def _remove(args: argparse.Namespace) -> int:
    path = args.registry or default_registry_path()
    try:
        remove_server(path, args.name)
    except EditError as exc:
        print(f"agentflux registry remove: {exc}", file=sys.stderr)
        return 2
    print(f"removed {args.name} from {path}; its trained adapters stay in {agentflux_home() / 'adapters'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    registry = load_or_report(args.registry)
    if registry is None:
        return 2
    documents = running_status(registry.path) or [offline_status(registry)]
    if args.json:
        print(json.dumps(documents if len(documents) > 1 else documents[0], indent=2))
    else:
        print("\n\n".join(render_status(document) for document in documents))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = command_group(commands, "registry", "inspect and edit the registry of downstream MCP servers")
    validate = group.add_parser("validate", help="check the file against the schema without starting anything")
    add_registry_argument(validate, positional=True)
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(handler=_validate)

    add = group.add_parser(
        "add", help="add a server to the registry file (comments and formatting are kept)",
        usage="agentflux registry add NAME [options] -- COMMAND [ARGS...]",
    )  # fmt: skip
    add.add_argument("name", help="the server's name (its toolset's name)")
    add.add_argument("--url", help="a remote streamable HTTP server instead of a command")
    add.add_argument("--header", action="append", metavar="KEY=VALUE", help="HTTP header for --url (repeatable)")
    add.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment for the server; secrets as '${NAME}'")
    add.add_argument("--description", help="what the toolset is for, in a sentence (the router reads it)")
    add.add_argument("--sandbox", choices=("bwrap", "docker", "none"), help="default: bwrap")
    add.add_argument("--image", help="the Docker image, with --sandbox docker")
    add.add_argument("--mount", action="append", metavar="PATH[:ro|rw]", help="a folder the server may see (repeatable)")
    add.add_argument("--network", choices=("none", "host"), help="default: none")
    add.add_argument("--allow-tool", action="append", metavar="GLOB", help="expose only matching tools (repeatable)")
    add.add_argument("--replace", action="store_true", help="replace a server of the same name")
    add_registry_argument(add)
    add.set_defaults(handler=_add, command_line=[])

    remove = group.add_parser("remove", help="remove a server from the registry file (its adapters stay on disk)")
    remove.add_argument("name")
    add_registry_argument(remove)
    remove.set_defaults(handler=_remove)

    status = group.add_parser("status", help="servers, tools, adapters and training jobs of the running agentflux")
    add_registry_argument(status, positional=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
