"""Newline-delimited JSON-RPC over byte pipes, for both ends of the proxy.

- Downstream: a server process's stdin/stdout. The SDK's `stdio_client` spawns its own
  process; agentflux lets the sandbox layer spawn it (isolation, environment, stderr
  capture, process-group cleanup) and only needs the message streams.
- Upstream: agentflux's own stdin/stdout when a host runs `agentflux serve`. The SDK's
  `stdio_server` moves every read and write through a worker thread, which costs about a
  millisecond per call; here the pipes are made non-blocking and awaited with anyio.

Both sides frame messages the same way, in `line_streams`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import mcp.types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from agentflux.sandbox.launch import ServerProcess

logger = logging.getLogger(__name__)

Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
_PIPE_ERRORS = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError)


@asynccontextmanager
async def line_streams(
    read_chunk: Callable[[], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]], peer: str
) -> AsyncIterator[Streams]:
    """Message streams over a byte pipe: `read_chunk` returns b"" at end of input."""
    to_session, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](0)

    async def reader() -> None:
        buffer = b""
        async with to_session:
            try:
                while chunk := await read_chunk():
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        if line.strip():
                            await to_session.send(_parse(line, peer))
            except _PIPE_ERRORS:
                pass

    async def writer() -> None:
        async with from_session:
            try:
                async for message in from_session:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await write(data.encode() + b"\n")
            except _PIPE_ERRORS:
                # The peer is gone: end the read side too, so pending requests fail instead of hanging.
                await to_session.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            tg.cancel_scope.cancel()
            for stream in (read_stream, write_stream):
                stream.close()


def _parse(line: bytes, peer: str) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        # Something printed to the protocol stream; say who and what, then carry on.
        logger.warning("%s wrote a line that is not JSON-RPC: %s", peer, line[:200].decode(errors="replace"))
        return exc


# -- downstream: a server process ------------------------------------------------------------


def process_streams(server: ServerProcess, name: str) -> AsyncIterator[Streams]:
    """Message streams over `server`'s stdin and stdout, for a `ClientSession`."""
    process = server.process
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    async def read_chunk() -> bytes:
        try:
            return await stdout.receive()
        except anyio.EndOfStream:
            return b""

    return line_streams(read_chunk, stdin.send, f"server {name!r}")


# -- upstream: our own stdin and stdout ------------------------------------------------------


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[Streams]:
    """Message streams over this process's stdin/stdout, for the upstream `Server`."""
    if not (_is_pipe(0) and _is_pipe(1)):
        # A terminal is shared with other processes; leave it blocking and use the SDK's transport.
        async with stdio_server() as streams:
            yield streams
        return
    # Serve the protocol from private duplicates, and point fds 0 and 1 elsewhere so that a
    # stray print() in any library lands on stderr instead of corrupting the protocol.
    read_fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    write_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)

    async def read_chunk() -> bytes:
        while True:
            try:
                return os.read(read_fd, 1 << 16)
            except BlockingIOError:
                await anyio.wait_readable(read_fd)

    async def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(write_fd, view) :]
            except BlockingIOError:
                await anyio.wait_writable(write_fd)

    try:
        async with line_streams(read_chunk, write, "the MCP host") as streams:
            yield streams
    finally:
        os.set_blocking(read_fd, True)
        os.set_blocking(write_fd, True)
        os.dup2(read_fd, 0)
        os.dup2(write_fd, 1)
        os.close(read_fd)
        os.close(write_fd)


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
