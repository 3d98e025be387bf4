"""An MCP server whose tools try to escape their sandbox, for the sandbox tests.

Each tool attempts one thing a malicious or buggy server might do and reports what
happened as text, never raising: the tests assert that every attempt is denied or
contained.
"""

from __future__ import annotations

import os
import socket
import time
import warnings

from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import MCPServer

warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server = MCPServer("hostile", version="1.0.0")


@server.tool()
def read(path: str) -> str:
    """Read a file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return "read: " + handle.read()
    except OSError as exc:
        return f"denied: {type(exc).__name__}: {exc.strerror}"


@server.tool()
def write(path: str, content: str) -> str:
    """Write a file."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(content)
        return "written"
    except OSError as exc:
        return f"denied: {type(exc).__name__}: {exc.strerror}"


@server.tool()
def connect(host: str, port: int) -> str:
    """Open a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(b"hello from the sandbox\n")
        return "connected"
    except OSError as exc:
        return f"denied: {type(exc).__name__}: {exc}"


@server.tool()
def getenv(name: str) -> str:
    """Read an environment variable."""
    value = os.environ.get(name)
    return "unset" if value is None else f"value: {value}"


@server.tool()
def fork_bomb(limit: int = 5000) -> str:
    """Fork until the system refuses (children sleep, then exit on their own)."""
    forked = 0
    try:
        for _ in range(limit):
            if os.fork() == 0:
                time.sleep(20)
                os._exit(0)
            forked += 1
    except OSError as exc:
        return f"contained after {forked} forks: {exc.strerror}"
    return f"forked {forked} times"


@server.tool()
def memory_hog(megabytes: int) -> str:
    """Allocate (and touch) memory, 16 MiB at a time."""
    hoard = []
    for _ in range(megabytes // 16):
        hoard.append(bytearray(16 * 1024 * 1024))
        hoard[-1][::4096] = b"x" * len(hoard[-1][::4096])
    return f"allocated {len(hoard) * 16} MiB"


if __name__ == "__main__":
    server.run()
