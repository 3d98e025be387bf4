"""Registering a server with a running agentflux trains its adapters and hot-loads them.

Real parts throughout: `agentflux serve` over stdio with a real MCP client, the tiny model,
`agentflux registry add` editing the file, the training job as a real `agentflux train`
process (--quick), and the sandboxed time and filesystem servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, StdioServerParameters

from agentflux.trainer import data

from conftest import PYTHON, TRAINED_FILESYSTEM, TRAINED_TIME, run_agentflux
from test_registry_live import server_of, status_of, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1800)]


def adapters_of(path: Path, name: str) -> dict[str, Any]:
    return (server_of(status_of(path), name) or {"adapters": {}})["adapters"]


async def test_a_server_added_while_running_is_trained_and_hot_loaded(
    trained: dict, tmp_path: Path, isolated_home: Path, subprocess_env: dict[str, str]
) -> None:
    # A proxy that already serves the filesystem toolset with trained adapters (copied from the
    # session's trained home: same base model, same tools, so the same store key).
    source = trained["home"][0]
    for part in ("adapters", "datasets"):
        for folder in (source / part).glob("**/filesystem"):
            shutil.copytree(folder, isolated_home / folder.relative_to(source))
    base = yaml.safe_load(trained["registry"][0].read_text())["model"]["base"]
    path = trained["registry"][0].parent / f"registry-live-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump({
        "proxy": {"surfaces": ["do_task"], "restart_backoff_s": 0.2},
        "model": {"base": base, "router": "adapter"},
        # Few requests per tool: this test is about the chain from registration to serving.
        "training": {"quick": True, "retries": 0, "examples_per_tool": 8},
        "mcpServers": {"filesystem": TRAINED_FILESYSTEM},
    }))  # fmt: skip
    params = StdioServerParameters(command=PYTHON, args=["-m", "agentflux.proxy", "serve", "--registry", str(path)],
                                   env=subprocess_env)
    async with Client(params, mode="legacy") as client:
        await wait_for(lambda: adapters_of(path, "filesystem").get("state") == "ready", "filesystem adapters", 120)
        assert adapters_of(path, "filesystem")["job"] is None  # nothing to train: the store had them

        # Register the time server while agentflux runs.
        registered = time.monotonic()
        added = run_agentflux("registry", "add", "time", "--registry", str(path), "--description",
                              TRAINED_TIME["description"], "--", *[TRAINED_TIME["command"], *TRAINED_TIME["args"]],
                              env=subprocess_env)
        assert added.returncode == 0, added.stderr
        seen: set[str] = set()

        def state() -> str | None:
            current = adapters_of(path, "time")
            seen.add(current.get("state") or "none")
            if current.get("state") == "training" and current["job"]["progress"]:
                seen.add("progress")
            return current.get("state") in ("ready", "failed") and current["state"]

        final = await wait_for(state, "time adapters", 1200)
        job = adapters_of(path, "time")["job"]
        assert final == "ready", job
        print(f"registration to ready: {time.monotonic() - registered:.0f}s")
        assert {"training", "progress"} <= seen
        assert Path(job["log_path"]).exists() and job["attempts"] == 1

        # The next do_task uses the new adapters: the router retrained over both toolsets,
        # and time's own selector and argument adapters.
        fingerprint = server_of(status_of(path), "time")["fingerprint"]
        home = Path(subprocess_env["AGENTFLUX_HOME"])
        (dataset,) = [p for p in (home / "datasets/time").iterdir() if not p.name.endswith(".partial")]
        tasks = [t.query for t in data.load(dataset)["train"]][:8]
        routed_to_time = []
        for task in tasks:
            result = await client.call_tool("do_task", {"task": task, "max_steps": 2})
            assert not result.is_error, result.content
            outcome = result.structured_content
            # Every task is routed by the new router, also when it ends the task at once (the tiny
            # router often does: docs/training.md); the steps it did take record the same one.
            assert outcome["router"].startswith("_router@")
            steps = outcome["steps"]
            assert all(step["adapters"]["route"] == outcome["router"] for step in steps)
            for step in steps:
                if step["toolset"] == "time":
                    assert step["adapters"]["select"] == f"time@{fingerprint}/selector"
                    assert step["adapters"]["arguments"] == f"time@{fingerprint}/tool:{step['tool']}"
                    routed_to_time.append(task)
        # Which toolset the tiny router picks is model quality, not hot-loading: it sent 1 to 3 of
        # these requests to time on some runs and none on others (docs/training.md). The adapters
        # serving time are the new ones either way:
        assert adapters_of(path, "time")["serving"] == fingerprint
        print(f"time requests routed to time: {len(routed_to_time)}/{len(tasks)}")

        # A changed tool set is retrained; killing that job marks it failed, and the proxy and
        # the previous adapters keep serving.
        edited = yaml.safe_load(path.read_text())
        edited["mcpServers"]["time"]["tools"] = {"allow": ["get_current_time"]}
        path.write_text(yaml.safe_dump(edited))
        running = await wait_for(lambda: (a := adapters_of(path, "time")).get("state") == "training"
                                 and a["job"]["pid"] and a["job"]["pid"] > 0 and a, "retraining", 120)
        assert running["job"]["fingerprint"] != fingerprint and running["serving"] == fingerprint
        os.kill(running["job"]["pid"], signal.SIGKILL)
        failed = await wait_for(lambda: (a := adapters_of(path, "time")).get("state") == "failed" and a, "failed", 60)
        assert "killed by signal SIGKILL" in failed["job"]["error"]
        assert "previous adapters" in failed["detail"]
        result = await client.call_tool("do_task", {"task": tasks[0], "max_steps": 1})
        assert not result.is_error
        # Hosts can see why: the status resource says the same.
        resource = json.loads((await client.read_resource("agentflux://status")).contents[0].text)
        assert server_of(resource, "time")["adapters"]["state"] == "failed"
