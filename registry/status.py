"""`agentflux registry status`: what a running agentflux reports about its servers and training.

Every running `agentflux serve` writes its status to `$AGENTFLUX_HOME/run/<pid>.json` (see
proxy/control.py); this module finds the ones serving a given registry file and renders
them. With none running, it shows what is on disk: the adapter sets trained per server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentflux.registry.home import agentflux_home
from agentflux.registry.loader import Registry
from agentflux.registry.store import AdapterStore
from agentflux.sandbox.limits import process_alive


def running_status(registry_path: Path) -> list[dict[str, Any]]:
    """Status documents of live agentflux processes serving `registry_path`."""
    found = []
    for path in sorted((agentflux_home() / "run").glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced right now, or left half-written by a crash
        if not process_alive(int(document.get("pid", 0))):
            path.unlink(missing_ok=True)  # left by an agentflux that was killed
            continue
        if Path(document.get("registry", "")) == registry_path.resolve():
            found.append(document)
    return found


def offline_status(registry: Registry, store: AdapterStore | None = None) -> dict[str, Any]:
    """No agentflux is running: the registry's servers and the adapters trained for them."""
    store = store or AdapterStore()
    servers = []
    for name in registry.config.servers:
        latest = next(iter(store.manifests(name)), None)
        adapters = {"state": "none", "detail": "no adapters trained yet", "serving": None, "job": None}
        if latest is not None:
            detail = f"trained {latest.created_at} for {latest.base_model_id}; used if the server's tools still match"
            adapters = {"state": "trained", "detail": detail, "serving": latest.fingerprint, "job": None}
        servers.append({"name": name, "health": "not running", "reason": None, "tools": None,
                        "fingerprint": None, "adapters": adapters, "log_path": None})  # fmt: skip
    return {"pid": None, "registry": str(registry.path), "registry_error": None, "model": None, "servers": servers}


def render_status(document: dict[str, Any]) -> str:
    lines = []
    who = f"agentflux (pid {document['pid']})" if document.get("pid") else "no agentflux is running"
    lines.append(f"{who}, registry {document['registry']}")
    if document.get("registry_error"):
        lines.append(f"  ! {document['registry_error']}")
    if document.get("needs_restart"):
        lines.append(f"  ! restart to apply: {', '.join(document['needs_restart'])}")
    model = document.get("model")
    if model:
        error = f": {model['error']}" if model.get("error") else ""
        lines.append(f"  model {model['base']} ({model['backend']}): {model['state']}{error}")
    for server in document["servers"]:
        tools = "" if server["tools"] is None else f", {server['tools']} tools"
        reason = f" ({server['reason']})" if server.get("reason") else ""
        lines.append(f"  {server['name']}: {server['health']}{reason}{tools}")
        if server.get("fingerprint"):
            lines.append(f"      tools fingerprint {server['fingerprint']}")
        adapters = server["adapters"]
        detail = f" - {adapters['detail']}" if adapters.get("detail") and adapters["detail"] != adapters["state"] else ""
        lines.append(f"      adapters: {adapters['state']}{detail}")
        job = adapters.get("job")
        if job:
            lines.append(f"      training log: {job['log_path']}")
            for tail in (job.get("log_tail") or [])[-5:] if job["state"] == "failed" else []:
                lines.append(f"        | {tail}")
    return "\n".join(lines)

