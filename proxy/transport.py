"""MCP over a server process's stdin/stdout: newline-delimited JSON-RPC.

The SDK's `stdio_client` spawns its own process; agentflux lets the sandbox layer spawn
it (isolation, environment, stderr capture, process-group cleanup) and only needs the
message streams, which this module provides.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import mcp.types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

from agentflux.sandbox.launch import ServerProcess

logger = logging.getLogger(__name__)

Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]


@asynccontextmanager
async def process_streams(server: ServerProcess, name: str) -> AsyncIterator[Streams]:
    """Message streams over `server`'s pipes, for a `ClientSession`."""
    process = server.process
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    to_session, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](0)

    async def read_stdout() -> None:
        buffer = b""
        async with to_session:
            try:
                async for chunk in stdout:
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        if line.strip():
                            await to_session.send(_parse(line, name))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                pass

    async def write_stdin() -> None:
        async with from_session:
            try:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send(data.encode() + b"\n")
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                # The server is gone: end the read side too, so pending requests fail instead of hanging.
                await to_session.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_stdout)
        tg.start_soon(write_stdin)
        try:
            yield read_stream, write_stream
        finally:
            tg.cancel_scope.cancel()
            for stream in (read_stream, write_stream):
                stream.close()


def _parse(line: bytes, name: str) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        # A server that prints to stdout breaks the protocol; say which server and what it printed.
        preview = line[:200].decode(errors="replace")
        logger.warning("server %r wrote a line that is not JSON-RPC: %s", name, preview)
        return exc
