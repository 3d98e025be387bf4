"""`agentflux registry check`: start every server once and report what it offers."""

from __future__ import annotations

import json
from dataclasses import asdict

from agentflux.proxy.hub import Health, Hub, running_hub
from agentflux.registry.loader import Registry
from agentflux.sandbox.launch import unmounted_directories


def sandbox_warnings(hub: Hub) -> list[str]:
    """Arguments that name host directories a server's sandbox will not show it."""
    warnings = []
    for name, server in hub.servers.items():
        if server.entry.transport != "stdio" or not server.entry.enabled:
            continue
        for arg in unmounted_directories(server.entry.sandbox, hub.server_command(name)):
            warnings.append(
                f"{name}: argument {arg!r} names a host directory the sandbox does not mount; "
                "grant it under sandbox.mounts"
            )
    return warnings


async def run_check(registry: Registry, as_json: bool, timeout: float | None) -> int:
    hub = Hub(registry)
    warnings = sandbox_warnings(hub)
    settings = registry.config.proxy
    wait = timeout or max([settings.start_timeout_s] + [e.start_timeout_s or 0 for e in registry.config.servers.values()])
    async with running_hub(hub):
        await hub.wait_settled(wait + 5)
        statuses = hub.statuses()
        tools = {name: [t.name for t in server.catalog.tools] for name, server in hub.servers.items()}
    failed = [s for s in statuses if s.health in (Health.FAILED, Health.STARTING)]
    if as_json:
        report = [asdict(s) | {"tool_names": tools[s.name]} for s in statuses]
        print(json.dumps({"file": str(registry.path), "servers": report, "warnings": warnings}, indent=2, default=str))
    else:
        print(f"{registry.path}: valid")
        for status in statuses:
            print(f"  {status.line()}")
        for warning in warnings:
            print(f"  warning: {warning}")
    return 1 if failed else 0
