"""The upstream MCP server that hosts talk to.

Built on the SDK's low-level `Server`, because a proxy serves tools it only knows as raw
JSON schemas. Three surfaces can be exposed, chosen in the registry (`proxy.surfaces`) or
on the command line:

- `do_task` (the default): one tool that runs the local agent over every toolset (agent.py).

- `passthrough`: every downstream tool, resource and prompt, namespaced per server
  (`filesystem__read_file`); results come back unchanged.
- `search`: two fixed tools, `search_tools(query)` and `call_tool(name, arguments)`, for
  hosts that cannot afford every schema in their context. This list never changes.

Downstream progress, logging, sampling and elicitation are relayed to the upstream
request that caused them; cancellation travels the other way by anyio cancellation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio

import mcp.types as types
from mcp import MCPError
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.message import ServerMessageMetadata

from agentflux.proxy import __version__
from agentflux.proxy.hub import Hub, error_result
from agentflux.proxy.naming import NameMap, Origin
from agentflux.proxy.agent import Budget, Outcome
from agentflux.proxy.runtime import AgentRuntime, ModelUnavailable
from agentflux.proxy.search import Document, SearchIndex
from agentflux.registry.home import agentflux_home
from agentflux.registry.secrets import REDACTOR

logger = logging.getLogger(__name__)

SEARCH_TOOLS = [
    types.Tool(
        name="search_tools",
        description=(
            "Find tools of the connected MCP servers by what they do. Returns the best matches with their "
            "input schemas; call one with call_tool."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "what you want to do, in a few words"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
            },
            "required": ["query"],
        },
    ),
    types.Tool(
        name="call_tool",
        description="Call a tool found with search_tools, by its exact name, with arguments matching its schema.",
        input_schema={
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "the tool name returned by search_tools"},
                "arguments": {"type": "object", "description": "the tool's arguments"},
            },
            "required": ["name"],
        },
    ),
]
_SEARCH_NAMES = {tool.name for tool in SEARCH_TOOLS}

DO_TASK = types.Tool(
    name="do_task",
    description=(
        "Do a task with the connected tools (files, time, and any other registered MCP server), using a local "
        "model, privately. Describe the task in plain language; the result summarizes what the tools returned, "
        "and the structured result lists every step."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "task": {"type": "string", "description": "what to do, in plain language"},
            "max_steps": {"type": "integer", "minimum": 1, "maximum": 50, "description": "default 8"},
            "timeout_s": {"type": "number", "minimum": 1, "maximum": 3600, "description": "default 50 (hosts time out at 60)"},
        },
        "required": ["task"],
    },
)
HEARTBEAT_S = 10.0
STATUS_RESOURCE = types.Resource(
    name="agentflux-status",
    uri="agentflux://status",
    description=(
        "agentflux's status as JSON: each server's health and tools, whether its adapters are trained, queued, "
        "training (with progress) or failed (with the log's tail), and why a toolset runs zero-shot."
    ),
    mime_type="application/json",
)

# The proxy can always announce list changes; hosts that ignore them still see a stable list.
_CHANGES = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)


class _Server(Server[Any]):
    """The SDK's HTTP session manager builds initialization options without arguments,
    which would advertise `listChanged: false`; this default fixes that for every transport."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> Any:
        return super().create_initialization_options(
            notification_options or _CHANGES, experimental_capabilities, extensions
        )


class UpstreamPeer:
    """Relays a downstream server's requests to the upstream request that caused them."""

    def __init__(self, ctx: ServerRequestContext[Any]) -> None:
        self._ctx = ctx
        self._related = ServerMessageMetadata(related_request_id=ctx.request_id)

    async def sample(self, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        request = types.CreateMessageRequest(params=params)
        return await self._ctx.session.send_request(request, types.CreateMessageResult, metadata=self._related)

    async def elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult:
        request = types.ElicitRequest(params=params)
        return await self._ctx.session.send_request(request, types.ElicitResult, metadata=self._related)

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        try:
            await self._ctx.session.send_log_message(
                params.level, params.data, params.logger, related_request_id=self._ctx.request_id
            )
        except Exception:  # the upstream client may be gone; logging must never fail a call
            logger.debug("could not relay a log message upstream", exc_info=True)


class ProxyServer:
    """Maps the upstream MCP surface onto the hub's downstream sessions."""

    def __init__(self, hub: Hub, surfaces: list[str], namespacing: bool, runtime: AgentRuntime | None = None) -> None:
        self.hub = hub
        self.runtime = runtime
        self.surfaces = surfaces
        self.namespacing = namespacing
        self._bus = InMemorySubscriptionBus()
        # Legacy-era clients are told about changes through their sessions; the SDK creates
        # a session object per request, so keep one per connection, strongly referenced.
        self._sessions: dict[int, Any] = {}
        self._tool_names = NameMap([], namespacing)
        self._prompt_names = NameMap([], namespacing)
        self._resource_owner: dict[str, str] = {}
        self._index = SearchIndex([])
        self._surface_signature: tuple[Any, ...] = ()
        # Called after every hub change, e.g. by the control loop that queues training.
        self.change_listeners: list[Callable[[str], Awaitable[None]]] = []
        # The running agentflux's status document, served as a resource with do_task.
        self.status: Callable[[], dict[str, Any]] | None = None
        self.server = self._build()
        self.rebuild()
        hub.on_change = self.on_hub_change
        hub.on_resource_updated = self.on_resource_updated

    def _build(self) -> Server[Any]:
        server = _Server(
            "agentflux",
            version=__version__,
            instructions="agentflux fronts several MCP servers; tool names are <server>__<tool>.",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
            on_subscriptions_listen=ListenHandler(self._bus),
        )
        # Registered directly: the constructor argument for it is deprecated (SEP-2577), but
        # legacy-era hosts and servers still use it.
        server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        return server

    # -- catalog ------------------------------------------------------------------------------

    def rebuild(self) -> bool:
        """Recompute public names from the hub's catalogs; True when what hosts see changed."""
        servers = self.hub.servers.values()
        self._tool_names = NameMap(
            [Origin(s.name, t.name) for s in servers for t in s.catalog.tools], self.namespacing
        )
        self._prompt_names = NameMap(
            [Origin(s.name, p.name) for s in servers for p in s.catalog.prompts], self.namespacing
        )
        self._resource_owner = {}
        for s in servers:
            for resource in s.catalog.resources:
                self._resource_owner.setdefault(str(resource.uri), s.name)
        self._index = SearchIndex(
            [
                Document(self._tool_names.public(s.name, t.name), f"{s.name} {t.name} {t.title or ''} {t.description or ''}")
                for s in servers
                for t in s.catalog.tools
            ]
        )
        signature = tuple(
            (s.name, tuple(t.model_dump_json() for t in s.catalog.tools), len(s.catalog.prompts), len(s.catalog.resources))
            for s in servers
        )
        changed = signature != self._surface_signature
        self._surface_signature = signature
        return changed

    async def on_hub_change(self, server_name: str) -> None:
        if self.runtime is not None:
            await self.runtime.refresh()
        for listener in self.change_listeners:
            try:
                await listener(server_name)
            except Exception:
                logger.exception("change listener failed for server %s", server_name)
        if not self.rebuild():
            return
        if "passthrough" in self.surfaces:
            await self._broadcast(lambda s: s.send_tool_list_changed())
            await self._broadcast(lambda s: s.send_prompt_list_changed())
            await self._broadcast(lambda s: s.send_resource_list_changed())
            for event in (ToolsListChanged(), PromptsListChanged(), ResourcesListChanged()):
                await self._bus.publish(event)

    async def on_resource_updated(self, server_name: str, uri: str) -> None:
        await self._broadcast(lambda s: s.send_resource_updated(uri))
        await self._bus.publish(ResourceUpdated(uri=uri))

    async def _broadcast(self, send: Callable[[Any], Awaitable[None]]) -> None:
        for key, session in list(self._sessions.items()):
            try:
                await send(session)
            except Exception:
                logger.debug("upstream session is gone; forgetting it", exc_info=True)
                self._sessions.pop(key, None)

    def _remember(self, ctx: ServerRequestContext[Any]) -> None:
        connection = getattr(ctx.session, "_connection", ctx.session)
        self._sessions.setdefault(id(connection), ctx.session)

    # -- tools --------------------------------------------------------------------------------

    def visible_tools(self) -> list[types.Tool]:
        tools: list[types.Tool] = []
        if "do_task" in self.surfaces:
            tools.append(DO_TASK)
        if "search" in self.surfaces:
            tools.extend(SEARCH_TOOLS)
        if "passthrough" in self.surfaces:
            for server in self.hub.servers.values():
                for tool in server.catalog.tools:
                    public = self._tool_names.public(server.name, tool.name)
                    if public in _SEARCH_NAMES | {DO_TASK.name} and public in {t.name for t in tools}:
                        logger.warning("tool %s of %s is hidden by the search surface's own tool", tool.name, server.name)
                        continue
                    tools.append(tool if public == tool.name else tool.model_copy(update={"name": public}))
        return tools

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._remember(ctx)
        return types.ListToolsResult(tools=self.visible_tools())

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        self._remember(ctx)
        arguments = params.arguments or {}
        if "do_task" in self.surfaces and params.name == DO_TASK.name:
            return await self._do_task(ctx, arguments)
        if "search" in self.surfaces and params.name == "search_tools":
            return self._search(arguments)
        if "search" in self.surfaces and params.name == "call_tool":
            name = arguments.get("name")
            inner = arguments.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(inner, dict):
                return error_result("call_tool needs 'name' (a string) and 'arguments' (an object)")
            return await self._forward_tool(ctx, name, inner)
        if "passthrough" not in self.surfaces:
            offered = ", ".join(tool.name for tool in self.visible_tools())
            return error_result(f"unknown tool {params.name!r}; this server offers: {offered}")
        return await self._forward_tool(ctx, params.name, arguments)

    async def _forward_tool(
        self, ctx: ServerRequestContext[Any], public: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        origin = self._tool_names.origin(public)
        if origin is None:
            return error_result(f"unknown tool {public!r}; list the tools (or use search_tools) to see what exists")
        return await self.hub.call_tool(
            origin.server, origin.name, arguments, peer=UpstreamPeer(ctx), progress=_progress_relay(ctx)
        )

    async def _do_task(self, ctx: ServerRequestContext[Any], arguments: dict[str, Any]) -> types.CallToolResult:
        task = arguments.get("task")
        if not isinstance(task, str) or not task.strip():
            return error_result("do_task needs 'task': what to do, in plain language")
        try:
            budget = Budget(
                max_steps=int(arguments.get("max_steps", Budget.max_steps)),
                timeout_s=float(arguments.get("timeout_s", Budget.timeout_s)),
            )
        except (TypeError, ValueError):
            return error_result("'max_steps' must be an integer and 'timeout_s' a number")
        if self.runtime is None:
            return error_result("do_task is not available: this agentflux runs without a model")
        progress = _Progress(ctx)
        async with anyio.create_task_group() as tg:
            tg.start_soon(progress.heartbeat)
            try:
                await progress.report("loading the model")
                agent = await self.runtime.ready_agent(budget.timeout_s)
                outcome = await agent.run(task, budget, progress.report)
            except ModelUnavailable as exc:
                return error_result(str(exc))
            finally:
                tg.cancel_scope.cancel()
        log_trajectory(outcome)
        return types.CallToolResult(
            content=[types.TextContent(text=_render(outcome))], structured_content=outcome.as_dict()
        )

    def _search(self, arguments: dict[str, Any]) -> types.CallToolResult:
        query = arguments.get("query")
        limit = arguments.get("limit", 8)
        if not isinstance(query, str) or not query.strip():
            return error_result("search_tools needs a non-empty 'query' string")
        if not isinstance(limit, int) or not 1 <= limit <= 50:
            return error_result("'limit' must be an integer from 1 to 50")
        by_name = {tool.name: tool for tool in self._all_public_tools()}
        matches = []
        for name, score in self._index.search(query, limit):
            tool = by_name[name]
            origin = self._tool_names.origin(name)
            matches.append(
                {
                    "name": name,
                    "server": origin.server if origin else None,
                    "description": tool.description or "",
                    "input_schema": tool.input_schema,
                    "score": round(score, 3),
                }
            )
        structured = {"tools": matches}
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(structured, indent=1, ensure_ascii=False))],
            structured_content=structured,
        )

    def _all_public_tools(self) -> list[types.Tool]:
        return [
            tool.model_copy(update={"name": self._tool_names.public(s.name, tool.name)})
            for s in self.hub.servers.values()
            for tool in s.catalog.tools
        ]

    # -- resources ----------------------------------------------------------------------------

    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        self._remember(ctx)
        resources = [r for s in self.hub.servers.values() for r in s.catalog.resources]
        if self._serves_status():
            resources.insert(0, STATUS_RESOURCE)
        return types.ListResourcesResult(resources=resources)

    def _serves_status(self) -> bool:
        return self.status is not None and "do_task" in self.surfaces

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[t for s in self.hub.servers.values() for t in s.catalog.templates]
        )

    def _resource_server(self, uri: str) -> str:
        """Which server owns `uri`: a listed resource, else the server whose template prefix matches best."""
        owner = self._resource_owner.get(uri)
        if owner is not None:
            return owner
        best: tuple[int, str] | None = None
        for server in self.hub.servers.values():
            for template in server.catalog.templates:
                prefix = template.uri_template.split("{", 1)[0]
                if uri.startswith(prefix) and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), server.name)
        if best is not None:
            return best[1]
        with_resources = [s.name for s in self.hub.servers.values() if s.capabilities and s.capabilities.resources]
        if len(with_resources) == 1:
            return with_resources[0]
        raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri!r}; list the resources to see what exists")

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        if self.status is not None and self._serves_status() and params.uri == STATUS_RESOURCE.uri:
            text = json.dumps(self.status(), indent=1, ensure_ascii=False)
            contents = types.TextResourceContents(uri=params.uri, text=text, mime_type="application/json")
            return types.ReadResourceResult(contents=[contents])
        server = self._resource_server(params.uri)
        request = types.ReadResourceRequest(params=types.ReadResourceRequestParams(uri=params.uri))
        return await self.hub.request(
            server, request, types.ReadResourceResult, peer=UpstreamPeer(ctx), progress=_progress_relay(ctx)
        )

    async def _subscribe(self, ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
        self._remember(ctx)
        request = types.SubscribeRequest(params=types.SubscribeRequestParams(uri=params.uri))
        return await self.hub.request(self._resource_server(params.uri), request, types.EmptyResult)

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        request = types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=params.uri))
        return await self.hub.request(self._resource_server(params.uri), request, types.EmptyResult)

    # -- prompts and completion ---------------------------------------------------------------

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        self._remember(ctx)
        prompts = []
        for server in self.hub.servers.values():
            for prompt in server.catalog.prompts:
                public = self._prompt_names.public(server.name, prompt.name)
                prompts.append(prompt if public == prompt.name else prompt.model_copy(update={"name": public}))
        return types.ListPromptsResult(prompts=prompts)

    def _prompt_origin(self, public: str) -> Origin:
        origin = self._prompt_names.origin(public)
        if origin is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown prompt {public!r}; list the prompts to see what exists")
        return origin

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        origin = self._prompt_origin(params.name)
        request = types.GetPromptRequest(
            params=types.GetPromptRequestParams(name=origin.name, arguments=params.arguments)
        )
        return await self.hub.request(
            origin.server, request, types.GetPromptResult, peer=UpstreamPeer(ctx), progress=_progress_relay(ctx)
        )

    async def _complete(self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            origin = self._prompt_origin(ref.name)
            server, ref = origin.server, ref.model_copy(update={"name": origin.name})
        else:
            server = self._resource_server(ref.uri)
        request = types.CompleteRequest(params=params.model_copy(update={"ref": ref, "meta": None}))
        return await self.hub.request(server, request, types.CompleteResult)

    async def _set_level(self, ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> types.EmptyResult:
        request = types.SetLevelRequest(params=types.SetLevelRequestParams(level=params.level))
        for server in self.hub.servers.values():
            if server.session is not None and server.capabilities and server.capabilities.logging is not None:
                try:
                    await self.hub.request(server.name, request, types.EmptyResult)
                except MCPError as exc:
                    logger.warning("server %s rejected logging/setLevel: %s", server.name, exc.message)
        return types.EmptyResult()


def _progress_relay(ctx: ServerRequestContext[Any]) -> ProgressFnT | None:
    """A callback that forwards downstream progress, or None when the host asked for none."""
    if not ctx.meta or ctx.meta.get("progress_token") is None:
        return None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await ctx.session.report_progress(progress, total, message)

    return relay


class _Progress:
    """Progress notifications for a do_task call; they double as heartbeats, because hosts
    reset their 60-second timeout on progress only if they hear some."""

    def __init__(self, ctx: ServerRequestContext[Any]) -> None:
        self._ctx = ctx
        self._value = 0.0
        self._message = "starting"

    async def report(self, message: str) -> None:
        self._value, self._message = self._value + 1, message
        await self._send()

    async def heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_S)
            self._value += 0.01  # progress must increase with every notification
            await self._send(f"still working: {self._message}")

    async def _send(self, message: str | None = None) -> None:
        try:
            await self._ctx.session.report_progress(self._value, None, message or self._message)
        except Exception:  # a host that went away cannot stop the task from finishing cleanly
            logger.debug("could not send progress", exc_info=True)


def _render(outcome: Outcome) -> str:
    lines = [outcome.summary, "", f"({len(outcome.steps)} steps; stopped: {outcome.explanation})"]
    for step in outcome.steps:
        arguments = json.dumps(step.arguments, ensure_ascii=False) if step.arguments is not None else "-"
        zero = " [zero-shot: " + ", ".join(step.zero_shot) + "]" if step.zero_shot else ""
        zero += " [repaired: " + "; ".join(step.repaired) + "]" if step.repaired else ""
        lines.append(f"{step.number}. {step.toolset}.{step.tool}({arguments}){' -> error' if step.is_error else ''}{zero}")
    return "\n".join(lines)


def log_trajectory(outcome: Outcome) -> None:
    """Append the trajectory to $AGENTFLUX_HOME/trajectories/YYYY-MM-DD.jsonl, secrets masked."""
    folder = agentflux_home() / "trajectories"
    folder.mkdir(parents=True, exist_ok=True)
    line = REDACTOR.redact(json.dumps(outcome.as_dict(), ensure_ascii=False))
    with (folder / f"{datetime.now(UTC):%Y-%m-%d}.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
