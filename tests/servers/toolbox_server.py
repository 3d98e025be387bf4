"""A small stdio MCP server whose tools exercise the proxy's edge cases.

- `sleep(seconds, marker)`: reports progress every 0.1 s; if cancelled it writes `cancelled`
  to the file `marker`, so a test can prove cancellation reached the downstream handler.
- `echo(text)`: returns the text, with structured content.
- `protocol_error()`: answers with a JSON-RPC error instead of a tool result.
- `crash()`: the process exits at once, mid-call.
- `grow()`: registers one more tool and announces `tools/list_changed`.
- `big(megabytes)`: returns that much text.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import anyio
from mcp import MCPDeprecationWarning, MCPError
from mcp.server.mcpserver import Context, MCPServer

warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server = MCPServer("toolbox", version="1.0.0")
_grown = 0


@server.tool()
async def sleep(seconds: float, ctx: Context, marker: str = "") -> str:
    """Sleep for a while, reporting progress."""
    steps = max(1, round(seconds / 0.1))
    try:
        for step in range(steps):
            await ctx.report_progress(step + 1, steps, f"step {step + 1}/{steps}")
            await anyio.sleep(0.1)
    except anyio.get_cancelled_exc_class():
        if marker:
            Path(marker).write_text("cancelled")
        raise
    return f"slept {seconds}s"


@server.tool()
def echo(text: str) -> dict[str, str]:
    """Return the text."""
    return {"echo": text}


@server.tool()
def protocol_error() -> str:
    """Fail at the protocol level."""
    raise MCPError(-32603, "backend unreachable: getaddrinfo ENOTFOUND api.example.com")


@server.tool()
def crash() -> str:
    """Exit the process mid-call."""
    print("toolbox: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(7)


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a tool and tell the client the list changed."""
    global _grown
    _grown += 1
    name = f"grown_{_grown}"

    def grown() -> str:
        return name

    server.add_tool(grown, name=name, description="A tool added at run time.")
    await ctx.session.send_tool_list_changed()
    return name


@server.tool()
def big(megabytes: float) -> str:
    """Return a large text."""
    return "x" * int(megabytes * 1024 * 1024)


if __name__ == "__main__":
    server.run()
