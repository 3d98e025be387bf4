"""The downstream hub: one long-lived MCP session per registered server.

Every server gets a supervisor task that starts it (through the sandbox layer for stdio
servers, over streamable HTTP for remote ones), performs the legacy `initialize`
handshake, reads its catalog (tools, resources, prompts) and then watches it: a process
that exits, an HTTP server that stops answering pings, or a connection that closes marks
the server `failed` with the reason, and the supervisor restarts it with exponential
backoff. A server whose secrets are missing is `disabled`, never crash-looped.

All servers start in parallel and in the background, so the host's `initialize` is
answered at once and a slow or broken server never delays another's tools or calls.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import httpx2
import mcp.types as types
from mcp import ClientSession, MCPError
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from agentflux.proxy.transport import process_streams
from agentflux.registry.home import logs_dir
from agentflux.registry.loader import Registry
from agentflux.registry.schema import ProxySettings, ServerEntry
from agentflux.registry.secrets import REDACTOR, references, substitute
from agentflux.sandbox import docker, limits
from agentflux.sandbox.errors import LaunchError, SandboxUnavailable
from agentflux.sandbox.launch import ServerCommand, launch

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=types.Result)

# A server that stayed up this long is considered healthy again: its next crash restarts quickly.
STABLE_AFTER_S = 60.0
PING_TIMEOUT_S = 10.0


class Health(StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    DISABLED = "disabled"


class Peer(Protocol):
    """The upstream request on whose behalf a downstream call runs.

    Downstream servers may ask their client for sampling or elicitation, and log while a
    call is in flight; the hub hands these to the upstream request that caused them.
    """

    async def sample(self, params: types.CreateMessageRequestParams) -> types.CreateMessageResult: ...

    async def elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult: ...

    async def log(self, params: types.LoggingMessageNotificationParams) -> None: ...


@dataclass
class Catalog:
    """What a server offers, after the registry's tool filter."""

    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    templates: list[types.ResourceTemplate] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of one server, for `registry check`, logs and the status resource."""

    name: str
    transport: str
    health: Health
    reason: str
    tools: int
    restarts: int
    last_failure: str
    server_info: str | None
    log_path: str | None

    def line(self) -> str:
        detail = f" ({self.reason})" if self.reason else ""
        info = f" [{self.server_info}]" if self.server_info else ""
        line = f"{self.name}: {self.health.value}{detail}, {self.tools} tools, {self.restarts} restarts{info}"
        if self.restarts and self.health is Health.READY:
            line += f"; last failure: {self.last_failure}"
        return line


class Downstream:
    """One registered server and everything the hub knows about it."""

    def __init__(self, name: str, entry: ServerEntry) -> None:
        self.name = name
        self.entry = entry
        self.health = Health.STARTING
        self.reason = ""
        self.session: ClientSession | None = None
        self.server_info: types.Implementation | None = None
        self.capabilities: types.ServerCapabilities | None = None
        # The last catalog stays visible while the server restarts, so that hosts see a
        # stable list; calls in that window get a clear "not ready" error.
        self.catalog = Catalog()
        self.restarts = 0
        self.last_failure = ""
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self.log_path: Path | None = None
        self.pid: int | None = None
        self.peers: list[Peer] = []
        self.settled = anyio.Event()
        self.broken = anyio.Event()
        self.broken_reason = ""
        self.scope: anyio.CancelScope | None = None  # cancelled when the registry drops or changes this server

    def mark(self, health: Health, reason: str = "") -> None:
        changed = (health, reason) != (self.health, self.reason)
        self.health, self.reason = health, REDACTOR.redact(reason)
        if health is not Health.STARTING:
            self.settled.set()
        if changed:
            log = logger.warning if health in (Health.FAILED, Health.DISABLED) else logger.info
            log("server %s: %s%s", self.name, health.value, f" ({self.reason})" if self.reason else "")

    def break_connection(self, reason: str) -> None:
        if not self.broken.is_set():
            self.broken_reason = reason
            self.broken.set()

    def status(self) -> ServerStatus:
        info = f"{self.server_info.name} {self.server_info.version}" if self.server_info else None
        return ServerStatus(
            name=self.name,
            transport=self.entry.transport,
            health=self.health,
            reason=self.reason,
            tools=len(self.catalog.tools),
            restarts=self.restarts,
            last_failure=self.last_failure,
            server_info=info,
            log_path=str(self.log_path) if self.log_path else None,
        )


ChangeListener = Callable[[str], Awaitable[None]]


class Hub:
    """Owns the sessions to every downstream server of a registry."""

    def __init__(
        self,
        registry: Registry,
        *,
        environ: Mapping[str, str] | None = None,
        on_change: ChangeListener | None = None,
        on_resource_updated: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry
        self.settings: ProxySettings = registry.config.proxy
        self._environ = os.environ if environ is None else environ
        self.on_change = on_change
        self.on_resource_updated = on_resource_updated
        self.servers: dict[str, Downstream] = {
            name: Downstream(name, entry) for name, entry in registry.config.servers.items()
        }
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Supervise every server until cancelled. Reports started before any server is up."""
        # Whatever a killed agentflux left behind (cgroups, containers) goes before anything starts.
        swept = await anyio.to_thread.run_sync(lambda: limits.sweep_orphans() + docker.sweep_orphans())
        if swept:
            logger.info("removed %d sandboxes left by an earlier agentflux that is gone", swept)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for server in self.servers.values():
                self._start(server)
            task_status.started()

    def _start(self, server: Downstream) -> None:
        assert self._tg is not None, "the hub is not running"
        scope = server.scope = anyio.CancelScope()

        async def supervise() -> None:
            with scope:
                await self._supervise(server)

        self._tg.start_soon(supervise, name=f"supervise {server.name}")

    async def apply(self, registry: Registry, changed: list[str]) -> None:
        """Adopt a new valid registry: stop servers it no longer has, restart the `changed`
        ones, start new ones; every other server keeps running untouched."""
        before = self.servers
        self.registry, self.settings = registry, registry.config.proxy
        self.servers = {}
        for name, entry in registry.config.servers.items():
            keep = name in before and name not in changed
            self.servers[name] = before[name] if keep else Downstream(name, entry)
        for name, server in before.items():
            if self.servers.get(name) is not server and server.scope is not None:
                server.scope.cancel()
                server.session = None
        for name, server in self.servers.items():
            if before.get(name) is not server:
                self._start(server)
        for name in before.keys() - self.servers.keys():
            await self._changed(name)

    async def wait_settled(self, timeout: float) -> None:
        """Wait until every server is ready, failed or disabled, or `timeout` passes."""
        with anyio.move_on_after(timeout):
            for server in self.servers.values():
                await server.settled.wait()

    def statuses(self) -> list[ServerStatus]:
        return [server.status() for server in self.servers.values()]

    async def _changed(self, name: str) -> None:
        if self.on_change is not None:
            try:
                await self.on_change(name)
            except Exception:
                logger.exception("change listener failed for server %s", name)

    async def _supervise(self, server: Downstream) -> None:
        backoff = self.settings.restart_backoff_s
        while True:
            missing = self._missing_secrets(server.entry)
            if not server.entry.enabled:
                server.mark(Health.DISABLED, "enabled: false in the registry")
                return
            if missing:
                names = ", ".join(missing)
                server.mark(Health.DISABLED, f"missing secret {names}: set it in the environment agentflux runs in")
                return
            server.mark(Health.STARTING)
            server.broken, server.broken_reason = anyio.Event(), ""
            started = anyio.current_time()
            try:
                reason = await self._serve_once(server)
            except SandboxUnavailable as exc:
                server.mark(Health.DISABLED, str(exc))
                return
            except LaunchError as exc:
                reason = str(exc)
            except Exception as exc:  # any failure of a server is reported, never propagated
                reason = _describe(exc)
                logger.debug("server %s failed", server.name, exc_info=True)
            server.session, server.pid = None, None
            server.restarts += 1
            server.last_failure = REDACTOR.redact(reason)
            if anyio.current_time() - started > STABLE_AFTER_S:
                backoff = self.settings.restart_backoff_s
            server.mark(Health.FAILED, f"{reason}; restarting in {backoff:g}s")
            await self._changed(server.name)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.restart_backoff_max_s)

    def _missing_secrets(self, entry: ServerEntry) -> list[str]:
        texts = [entry.command or "", entry.url or "", entry.cwd or "", *entry.args]
        texts += [*entry.env.values(), *entry.headers.values()]
        names = [name for text in texts for name in references(text)]
        return sorted({name for name in names if name not in self._environ})

    def _resolve(self, text: str) -> str:
        return substitute(text, self._environ).value

    # -- one connection ----------------------------------------------------------------------

    async def _serve_once(self, server: Downstream) -> str:
        """Connect, become ready, and return the reason the connection ended."""
        REDACTOR.add_all(server.entry.secret_values())
        if server.entry.transport == "stdio":
            return await self._serve_stdio(server)
        return await self._serve_http(server)

    def server_command(self, name: str) -> ServerCommand:
        """What a stdio server's entry asks to run, with its secret references resolved."""
        entry = self.servers[name].entry
        return ServerCommand(
            name=name,
            command=self._resolve(entry.command or ""),
            args=[self._resolve(arg) for arg in entry.args],
            env={key: self._resolve(value) for key, value in entry.env.items()},
            cwd=self.registry.base_dir / self._resolve(entry.cwd) if entry.cwd else self.registry.base_dir,
            base_dir=self.registry.base_dir,
        )

    async def _serve_stdio(self, server: Downstream) -> str:
        entry = server.entry
        command = self.server_command(server.name)
        server.log_path = logs_dir() / "servers" / f"{_file_safe(server.name)}.log"
        server.log_path.parent.mkdir(parents=True, exist_ok=True)
        with server.log_path.open("a", encoding="utf-8", buffering=1) as log:

            def on_stderr(line: str) -> None:
                line = REDACTOR.redact(line)
                server.stderr_tail.append(line)
                log.write(line + "\n")

            async with launch(entry.sandbox, command, on_stderr, parent_env=self._environ) as process:
                server.pid = process.pid
                async with anyio.create_task_group() as tg:

                    async def watch_exit() -> None:
                        code = await process.wait()
                        await anyio.sleep(0.1)  # let the last stderr lines arrive
                        reason = _exit_reason(code, server.stderr_tail)
                        if exceeded := await process.limit_exceeded():
                            reason = f"killed: {exceeded}"
                        server.break_connection(reason)

                    tg.start_soon(watch_exit)
                    async with process_streams(process, server.name) as (read, write):
                        reason = await self._session_lifetime(server, read, write)
                    tg.cancel_scope.cancel()
                    return reason

    async def _serve_http(self, server: Downstream) -> str:
        entry = server.entry
        headers = {key: self._resolve(value) for key, value in entry.headers.items()}
        timeout = httpx2.Timeout(30, read=self._call_timeout(entry) + 30)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
            async with streamable_http_client(self._resolve(entry.url or ""), http_client=http) as (read, write):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._ping_forever, server)
                    reason = await self._session_lifetime(server, read, write)
                    tg.cancel_scope.cancel()
                    return reason

    async def _ping_forever(self, server: Downstream) -> None:
        """Remote servers have no process to watch: a failed ping is how we learn they are gone."""
        while True:
            await anyio.sleep(self.settings.health_interval_s)
            session = server.session
            if session is None:
                continue
            try:
                with anyio.fail_after(PING_TIMEOUT_S):
                    await session.send_ping()
            except (Exception, TimeoutError) as exc:
                server.break_connection(f"stopped answering pings: {_describe(exc)}")
                return

    async def _session_lifetime(self, server: Downstream, read: Any, write: Any) -> str:
        refresh = anyio.Event()

        async def on_message(message: Any) -> None:
            # Runs inside the session's receive loop: only record work here, never await the session.
            if isinstance(
                message,
                types.ToolListChangedNotification
                | types.ResourceListChangedNotification
                | types.PromptListChangedNotification,
            ):
                refresh.set()
            elif isinstance(message, types.ResourceUpdatedNotification) and self.on_resource_updated:
                tg.start_soon(self.on_resource_updated, server.name, message.params.uri)

        session = ClientSession(
            read,
            write,
            sampling_callback=_delegate(server, lambda peer, params: peer.sample(params), "sampling"),
            elicitation_callback=_delegate(server, lambda peer, params: peer.elicit(params), "elicitation"),
            logging_callback=_delegate_logging(server),
            message_handler=on_message,
        )
        async with anyio.create_task_group() as tg, session:
            try:
                with anyio.fail_after(self._start_timeout(server.entry)):
                    init = await session.initialize()
                    server.catalog = await self._read_catalog(server, session, init.capabilities)
            except TimeoutError:
                if server.broken.is_set():
                    return server.broken_reason
                return f"did not finish initialize and listing within {self._start_timeout(server.entry):g}s"
            except MCPError as exc:
                # A process that died during the handshake explains itself better than the closed pipe.
                with anyio.move_on_after(0.5):
                    await server.broken.wait()
                return server.broken_reason or _describe(exc)
            server.server_info, server.capabilities = init.server_info, init.capabilities
            server.session = session
            server.mark(Health.READY)
            await self._changed(server.name)

            async def refresher() -> None:
                nonlocal refresh
                while True:
                    await refresh.wait()
                    refresh = anyio.Event()
                    try:
                        server.catalog = await self._read_catalog(server, session, init.capabilities)
                    except (MCPError, Exception) as exc:
                        logger.warning("server %s: re-reading its catalog failed: %s", server.name, _describe(exc))
                        continue
                    await self._changed(server.name)

            tg.start_soon(refresher)
            await server.broken.wait()
            tg.cancel_scope.cancel()
        # The session also ends on its own (cancelling the block above) when the server
        # closes the connection; the exit watcher may be about to say why.
        server.session = None
        with anyio.move_on_after(1.0):
            await server.broken.wait()
        return server.broken_reason or "the server closed the connection"

    async def _read_catalog(
        self, server: Downstream, session: ClientSession, capabilities: types.ServerCapabilities
    ) -> Catalog:
        catalog = Catalog()
        if capabilities.tools is not None:
            tools = await _all_pages(session.list_tools, "tools")
            catalog.tools = [tool for tool in tools if _tool_allowed(server.entry, tool.name)]
        if capabilities.resources is not None:
            catalog.resources = await _all_pages(session.list_resources, "resources")
            catalog.templates = await _all_pages(session.list_resource_templates, "resource_templates")
        if capabilities.prompts is not None:
            catalog.prompts = await _all_pages(session.list_prompts, "prompts")
        return catalog

    def _start_timeout(self, entry: ServerEntry) -> float:
        return entry.start_timeout_s or self.settings.start_timeout_s

    def _call_timeout(self, entry: ServerEntry) -> float:
        return entry.call_timeout_s or self.settings.call_timeout_s

    # -- requests ----------------------------------------------------------------------------

    def ready_session(self, name: str) -> ClientSession:
        """The live session of server `name`, or an MCPError that says why there is none."""
        server = self.servers.get(name)
        if server is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown server {name!r}")
        if server.session is None:
            state = f"{server.health.value}: {server.reason}" if server.reason else server.health.value
            raise MCPError(types.INTERNAL_ERROR, f"server {name!r} is not ready ({state})")
        return server.session

    async def request(
        self,
        name: str,
        request: types.ClientRequest,
        result_type: type[ResultT],
        *,
        peer: Peer | None = None,
        progress: ProgressFnT | None = None,
    ) -> ResultT:
        """Send `request` to server `name` on behalf of `peer`; raises MCPError on any failure."""
        session = self.ready_session(name)
        server = self.servers[name]
        timeout = self._call_timeout(server.entry)
        if peer is not None:
            server.peers.append(peer)
        try:
            return await session.send_request(
                request, result_type, request_read_timeout_seconds=timeout, progress_callback=progress
            )
        except MCPError as exc:
            # A stdio server's exit is reported by its exit watcher, with its exit code and last
            # words; a remote server's lost session is only visible here.
            if server.entry.transport == "http" and (exc.code == CONNECTION_CLOSED or "Session terminated" in exc.message):
                server.break_connection(f"connection lost: {exc.message}")
            if exc.code == REQUEST_TIMEOUT:
                raise MCPError(REQUEST_TIMEOUT, f"server {name!r} did not answer within {timeout:g}s") from None
            raise
        finally:
            if peer is not None:
                server.peers.remove(peer)

    async def call_tool(
        self,
        name: str,
        tool: str,
        arguments: dict[str, Any] | None,
        *,
        peer: Peer | None = None,
        progress: ProgressFnT | None = None,
    ) -> types.CallToolResult:
        """Call a tool; every failure comes back as an `is_error` result a model or user can read."""
        server = self.servers.get(name)
        if server is not None and not _tool_allowed(server.entry, tool):
            return error_result(f"tool {tool!r} of server {name!r} is not allowed by the registry's tool filter")
        request = types.CallToolRequest(params=types.CallToolRequestParams(name=tool, arguments=arguments or {}))
        try:
            return await self.request(name, request, types.CallToolResult, peer=peer, progress=progress)
        except MCPError as exc:
            return error_result(f"downstream error from server {name!r} ({exc.code}): {REDACTOR.redact(exc.message)}")


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


MAX_RESULT_CHARS = 20_000


def result_text(result: types.CallToolResult) -> str:
    """A tool result as the model reads it: its text, with other content named, bounded in size."""
    parts = [block.text if isinstance(block, types.TextContent) else f"[{block.type} content]" for block in result.content]
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[… {len(text) - MAX_RESULT_CHARS} characters cut …]"
    return text


# -- server-to-client requests, routed to the upstream request in flight ----------------------


def _current_peer(server: Downstream) -> Peer | None:
    # The SDK does not say which of our requests a server request belongs to; the most
    # recent call in flight is the right one whenever calls to a server do not overlap.
    return server.peers[-1] if server.peers else None


def _delegate(server: Downstream, ask: Callable[[Peer, Any], Awaitable[Any]], what: str) -> Any:
    """A session callback that hands a server's request (sampling, elicitation) to the upstream peer."""

    async def delegate(context: ClientRequestContext, params: Any) -> Any:
        peer = _current_peer(server)
        if peer is None:
            return types.ErrorData(code=types.INVALID_REQUEST, message=f"{what} is only available during a call")
        try:
            return await ask(peer, params)
        except MCPError as exc:
            return types.ErrorData(code=exc.code, message=exc.message)

    return delegate


def _delegate_logging(server: Downstream) -> Any:
    downstream_logger = logging.getLogger(f"agentflux.downstream.{server.name}")

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        downstream_logger.debug("%s: %s", params.level, params.data)
        peer = _current_peer(server)
        if peer is not None:
            await peer.log(params)

    return log


# -- helpers -----------------------------------------------------------------------------------


async def _all_pages(method: Callable[..., Awaitable[Any]], attribute: str) -> list[Any]:
    items: list[Any] = []
    params: types.PaginatedRequestParams | None = None
    for _ in range(1000):  # a server that returns cursors forever must not hang the hub
        page = await method(params=params)
        items.extend(getattr(page, attribute))
        if not page.next_cursor:
            break
        params = types.PaginatedRequestParams(cursor=page.next_cursor)
    return items


def _tool_allowed(entry: ServerEntry, tool: str) -> bool:
    rules = entry.tools
    if rules.allow is not None and not any(fnmatch.fnmatchcase(tool, pattern) for pattern in rules.allow):
        return False
    return not any(fnmatch.fnmatchcase(tool, pattern) for pattern in rules.deny)


def _exit_reason(code: int, stderr_tail: deque[str]) -> str:
    last = next((line.strip() for line in reversed(stderr_tail) if line.strip()), "")
    what = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return f"{what}: {last[:300]}" if last else what


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


@asynccontextmanager
async def running_hub(hub: Hub) -> AsyncIterator[Hub]:
    """Run `hub` in the background for the duration of the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(hub.run)
        try:
            yield hub
        finally:
            tg.cancel_scope.cancel()
