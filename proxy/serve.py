"""Running agentflux: the hub in the background, the upstream server over stdio or HTTP."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from agentflux.proxy.control import Control
from agentflux.proxy.hub import Hub
from agentflux.proxy.runtime import AgentRuntime
from agentflux.proxy.server import ProxyServer
from agentflux.proxy.transport import stdio_streams
from agentflux.registry.loader import Registry
from agentflux.registry.schema import HttpSettings
from agentflux.registry.secrets import REDACTOR

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class ConfigurationError(Exception):
    """A setting that makes serving unsafe or impossible; the message says what to change."""


def build_proxy(registry: Registry, surfaces: list[str] | None = None) -> tuple[ProxyServer, Control]:
    settings = registry.config.proxy
    surfaces = surfaces or list(settings.surfaces)
    hub = Hub(registry)
    runtime = AgentRuntime(registry, hub) if "do_task" in surfaces else None
    proxy = ProxyServer(hub, surfaces, settings.namespacing, runtime)
    control = Control(registry, hub, runtime, proxy.on_hub_change)
    proxy.change_listeners.append(control.server_changed)
    proxy.status = control.status
    return proxy, control


async def run_background(proxy: ProxyServer, control: Control, tg: anyio.abc.TaskGroup) -> None:
    """The hub, the control loop (registry edits, training), and the model when do_task is
    served, all starting in the background."""
    await tg.start(proxy.hub.run)
    await tg.start(control.run)
    if proxy.runtime is not None:
        await tg.start(proxy.runtime.run)


async def serve_stdio(proxy: ProxyServer, control: Control) -> None:
    async with anyio.create_task_group() as tg:
        await run_background(proxy, control, tg)
        async with stdio_streams() as (read, write):
            await proxy.server.run(read, write, proxy.server.create_initialization_options())
        tg.cancel_scope.cancel()


def read_token(http: HttpSettings, token_file: Path | None = None) -> str | None:
    """The bearer token from a file or an environment variable; never from the command line."""
    path = token_file or (Path(http.token_file).expanduser() if http.token_file else None)
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigurationError(f"cannot read the bearer token from {path}: {exc}") from None
        if not token:
            raise ConfigurationError(f"the token file {path} is empty")
        return token
    if http.token_env and os.environ.get(http.token_env):
        return os.environ[http.token_env]
    return None


class StaticTokenVerifier:
    """Accepts exactly one bearer token (constant-time comparison)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        import hmac

        if hmac.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="agentflux-client", scopes=[])
        return None


def http_app(proxy: ProxyServer, http: HttpSettings, host: str, port: int, token: str | None) -> Starlette:
    if token is None and not _is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve on {host} without a bearer token: set {http.token_env or 'proxy.http.token_env'} "
            "or proxy.http.token_file, or bind to 127.0.0.1"
        )
    if token is not None:
        REDACTOR.add(token)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=LOOPBACK_HOSTS + list(http.allowed_hosts),
        allowed_origins=LOOPBACK_ORIGINS + list(http.allowed_origins),
    )
    base = f"http://{_url_host(host)}:{port}"
    auth = AuthSettings(issuer_url=base, resource_server_url=f"{base}{http.path}") if token else None
    return proxy.server.streamable_http_app(
        streamable_http_path=http.path,
        transport_security=security,
        host=host,
        auth=auth,
        token_verifier=StaticTokenVerifier(token) if token else None,
    )


async def serve_http(proxy: ProxyServer, control: Control, app: Starlette, host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", access_log=False)
    async with anyio.create_task_group() as tg:
        await run_background(proxy, control, tg)
        await uvicorn.Server(config).serve()
        tg.cancel_scope.cancel()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
