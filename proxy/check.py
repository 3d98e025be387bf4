"""`agentflux registry check`: start every server once and report what it offers."""

from __future__ import annotations

import json
from dataclasses import asdict

from agentflux.proxy.hub import Health, Hub, running_hub
from agentflux.registry.loader import Registry


async def run_check(registry: Registry, as_json: bool, timeout: float | None) -> int:
    hub = Hub(registry)
    settings = registry.config.proxy
    wait = timeout or max([settings.start_timeout_s] + [e.start_timeout_s or 0 for e in registry.config.servers.values()])
    async with running_hub(hub):
        await hub.wait_settled(wait + 5)
        statuses = hub.statuses()
        tools = {name: [t.name for t in server.catalog.tools] for name, server in hub.servers.items()}
    failed = [s for s in statuses if s.health in (Health.FAILED, Health.STARTING)]
    if as_json:
        report = [asdict(s) | {"tool_names": tools[s.name]} for s in statuses]
        print(json.dumps({"file": str(registry.path), "servers": report}, indent=2, default=str))
    else:
        print(f"{registry.path}: valid")
        for status in statuses:
            print(f"  {status.line()}")
    return 1 if failed else 0
