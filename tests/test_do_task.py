"""do_task end to end: a real MCP client calls agentflux, which runs the tiny model with the
adapters the trainer built, over the real (sandboxed) filesystem and time servers."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
import yaml
from mcp import Client

from agentflux.proxy.agent import Step
from agentflux.proxy.hub import Health, Hub, running_hub
from agentflux.proxy.runtime import AgentRuntime
from agentflux.proxy.server import ProxyServer
from agentflux.registry.loader import load_registry
from agentflux.registry.store import AdapterStore
from agentflux.trainer import data
from agentflux.trainer.examples import combine

from conftest import PYTHON, ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(1800)]
TOOLBOX = {"command": PYTHON, "args": [str(ROOT / "tests/servers/toolbox_server.py")], "description": "Test tools."}


@asynccontextmanager
async def agentflux(trained: dict, tmp_path: Path, extra: dict[str, Any] | None = None, **client: Any) -> AsyncIterator[tuple[ProxyServer, Client]]:
    """agentflux in process with the trained registry (plus `extra` servers), and a client."""
    source = yaml.safe_load(trained["registry"][0].read_text())
    source["mcpServers"].update(extra or {})
    source["proxy"] = {"surfaces": ["do_task"], "restart_backoff_s": 0.2}
    path = trained["registry"][0].parent / f"registry-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(source))
    registry = load_registry(path)
    hub = Hub(registry)
    runtime = AgentRuntime(registry, hub, AdapterStore(trained["home"][0] / "adapters"))
    proxy = ProxyServer(hub, ["do_task"], True, runtime)
    async with running_hub(hub), anyio.create_task_group() as tg:
        await tg.start(runtime.run)
        await hub.wait_settled(60)
        await runtime.ready_agent(120)
        await runtime.refresh()
        async with Client(proxy.server, mode="legacy", **client) as connection:
            yield proxy, connection
        tg.cancel_scope.cancel()


def steps_of(result: types.CallToolResult) -> list[dict[str, Any]]:
    return result.structured_content["steps"]


def train_queries(trained: dict, kind: str) -> list[Any]:
    home = trained["home"][0]
    (path,) = [p for p in (home / "datasets/filesystem").iterdir() if not p.name.endswith(".partial")]
    return [t for t in data.load(path)["train"] if t.kind == kind]


@pytest.mark.parametrize("kind", ["list-then-read", "find-then-read"])
async def test_multi_step_filesystem_tasks_run_stage_by_stage_with_trained_adapters(trained, tmp_path: Path, kind: str) -> None:
    candidates = train_queries(trained, kind)[:3]
    assert candidates
    async with agentflux(trained, tmp_path) as (proxy, client):
        assert [t.name for t in (await client.list_tools()).tools] == ["do_task"]
        for trajectory in candidates:
            result = await client.call_tool("do_task", {"task": trajectory.query, "max_steps": 4})
            outcome = result.structured_content
            assert not result.is_error and outcome["summary"]
            assert outcome["stopped"] in ("summarize", "max_steps", "repeated_call")
            adapters = proxy.runtime.adapters
            for step in outcome["steps"]:
                # Every stage is recorded with the adapter that answered it: all trained here, and
                # each the one for the toolset the router chose (which the tiny router may get wrong).
                assert step["adapters"]["route"] == adapters.router_adapter()
                assert step["adapters"]["select"] == adapters.selector(step["toolset"])
                assert step["adapters"]["arguments"] == adapters.arguments(step["toolset"], step["tool"])
                assert step["adapters"]["route"] and step["adapters"]["select"] and step["adapters"]["arguments"]
                assert step["zero_shot"] == []
                # Arguments always fit the tool's schema (or the failure is the observation, and
                # no call is made).
                assert step["arguments"] is not None or step["is_error"]
                called = {"call"} if step["arguments"] is not None else set()
                assert set(step["timings_ms"]) >= {"route", "select", "arguments", "bookkeeping"} | called


async def test_tasks_over_two_toolsets_are_answered_by_the_router_and_that_toolsets_adapters(trained, tmp_path: Path) -> None:
    """Requests that join a filesystem request and a time request (either order): every step is
    routed by the trained router and answered by the chosen toolset's own selector. Whether the
    router hands over between toolsets is a claim about a real model (tests/test_real_model.py):
    the 2-layer random model does not learn it reliably in a CI-sized budget."""
    home = trained["home"][0]
    (time_path,) = [p for p in (home / "datasets/time").iterdir() if not p.name.endswith(".partial")]
    clocks = data.load(time_path)["train"][:3]
    files = train_queries(trained, "single")[:3]
    tasks = [combine(f, c).query for f, c in zip(files, clocks)] + [combine(c, f).query for f, c in zip(files, clocks)]
    async with agentflux(trained, tmp_path) as (proxy, client):
        router = proxy.runtime.adapters.router_adapter()
        assert router is not None and "_router@" in router
        for task in tasks:
            steps = steps_of(await client.call_tool("do_task", {"task": task, "max_steps": 4}))
            assert steps
            for step in steps:
                assert step["adapters"]["route"] == router and step["toolset"] in ("filesystem", "time")
                assert step["adapters"]["select"] == proxy.runtime.adapters.selector(step["toolset"])


async def test_untrained_toolsets_run_zero_shot_and_say_so(trained, tmp_path: Path) -> None:
    async with agentflux(trained, tmp_path, {"toolbox": TOOLBOX}) as (proxy, client):
        # The router was trained on filesystem and time only: with a third toolset it is not used.
        assert proxy.runtime.adapters.router_adapter() is None
        result = await client.call_tool("do_task", {"task": "echo hello", "max_steps": 3})
        steps = steps_of(result)
        assert steps and all("route" in step["zero_shot"] for step in steps)
        for step in steps:
            if step["toolset"] == "toolbox":
                assert step["zero_shot"] == ["route", "select", "arguments"]
                assert step["adapters"]["select"] is None and step["adapters"]["arguments"] is None
            else:
                assert "select" not in step["zero_shot"]


async def test_a_budget_stop_returns_the_partial_trajectory(trained, tmp_path: Path) -> None:
    async with agentflux(trained, tmp_path, {"toolbox": TOOLBOX}) as (proxy, client):
        force_call(proxy.runtime.agent, "echo", {"text": "one step only"}, steps=5)
        result = await client.call_tool("do_task", {"task": "echo five times", "max_steps": 2})
        outcome = result.structured_content
        assert not result.is_error
        assert outcome["stopped"] == "max_steps" and len(outcome["steps"]) == 2
        assert outcome["steps"][1]["observation"] == outcome["steps"][0]["observation"]
        assert outcome["summary"].startswith("[stopped after 2 steps without finishing]")


async def test_an_identical_call_repeated_beyond_the_limit_stops_the_loop(trained, tmp_path: Path) -> None:
    async with agentflux(trained, tmp_path, {"toolbox": TOOLBOX}) as (proxy, client):
        force_call(proxy.runtime.agent, "echo", {"text": "again"}, steps=10)
        outcome = (await client.call_tool("do_task", {"task": "echo forever", "max_steps": 10})).structured_content
        assert outcome["stopped"] == "repeated_call" and len(outcome["steps"]) == 3
        assert "echo was called with the same arguments 2 times already" in outcome["explanation"]


async def test_progress_notifications_report_every_stage(trained, tmp_path: Path) -> None:
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    async with agentflux(trained, tmp_path, {"toolbox": TOOLBOX}) as (proxy, client):
        agent = proxy.runtime.agent
        route_and_select = agent._route_and_select

        async def real_routing_then_echo(task, history, toolsets, number, report):
            if number > 1:
                return None
            await route_and_select(task, history, toolsets, number, report)  # reports its stages
            return Step(number, "toolbox", "echo"), toolsets["toolbox"], "echo"

        force_call(agent, "echo", {"text": "hi"})
        agent._route_and_select = real_routing_then_echo
        await client.call_tool("do_task", {"task": "echo hi", "max_steps": 2}, progress_callback=on_progress)
    await anyio.sleep(0.2)
    joined = "\n".join(messages)
    for stage in ("loading the model", "step 1: choosing a toolset", "step 1: choosing a tool of",
                  "step 1: writing arguments for toolbox.echo", "step 1: calling toolbox.echo", "writing the summary"):
        assert stage in joined, joined


def force_call(agent: Any, tool: str, arguments: dict[str, Any] | None = None, steps: int = 1) -> None:
    """Make the agent's first `steps` steps call toolbox.`tool`, whatever the untrained model would
    choose: these tests are about the loop's handling of calls, not about the model."""

    async def route_and_select(task, history, toolsets, number, report):
        if number > steps:
            return None
        return Step(number, "toolbox", tool, adapters={"route": None, "select": None}), toolsets["toolbox"], tool

    agent._route_and_select = route_and_select
    if arguments is not None:
        generate = agent.backend.generate_json

        async def generate_json(prompt, schema, adapter):
            return arguments if set(arguments) <= set(schema.get("properties", {})) else await generate(prompt, schema, adapter)

        agent.backend.generate_json = generate_json


async def test_cancellation_stops_the_loop_and_the_downstream_call(trained, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled.txt"
    toolbox = TOOLBOX | {"sandbox": {"mounts": [{"path": str(tmp_path), "mode": "rw"}]}}
    async with agentflux(trained, tmp_path, {"toolbox": toolbox}) as (proxy, client):
        force_call(proxy.runtime.agent, "sleep", {"seconds": 30, "marker": str(marker)})
        with anyio.move_on_after(3) as scope:
            await client.call_tool("do_task", {"task": "sleep for a while", "max_steps": 3})
        assert scope.cancelled_caught
        with anyio.fail_after(10):
            while not marker.exists():
                await anyio.sleep(0.1)
        assert marker.read_text() == "cancelled"


async def test_a_downstream_crash_becomes_an_observation_and_the_proxy_stays_up(trained, tmp_path: Path) -> None:
    async with agentflux(trained, tmp_path, {"toolbox": TOOLBOX}) as (proxy, client):
        agent = proxy.runtime.agent
        original = agent._route_and_select
        force_call(agent, "crash")
        result = await client.call_tool("do_task", {"task": "crash the toolbox", "max_steps": 3})
        steps = steps_of(result)
        assert steps[0]["tool"] == "crash" and steps[0]["is_error"]
        assert "downstream error from server 'toolbox'" in steps[0]["observation"]
        agent._route_and_select = original
        server = proxy.hub.servers["toolbox"]
        with anyio.fail_after(30):
            while server.health is not Health.READY:
                await anyio.sleep(0.1)
        force_call(agent, "echo", {"text": "back again"})
        again = await client.call_tool("do_task", {"task": "echo back again", "max_steps": 2})
        assert steps_of(again)[0]["observation"] == '{\n  "echo": "back again"\n}'


async def test_trajectories_are_logged_without_secrets(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentflux.registry.secrets import REDACTOR

    REDACTOR.add("sk-secret-in-a-task-123")
    task = "read notes/todo.txt with key sk-secret-in-a-task-123"
    async with agentflux(trained, tmp_path) as (proxy, client):
        await client.call_tool("do_task", {"task": task, "max_steps": 1})
    logged = "".join(p.read_text() for p in (Path(os.environ["AGENTFLUX_HOME"]) / "trajectories").glob("*.jsonl"))
    assert "sk-secret-in-a-task-123" not in logged and "***" in logged
    assert json.loads(logged.splitlines()[-1])["task"].endswith("***")


async def test_concurrent_do_task_calls_over_http_each_get_their_own_trajectory(trained, tmp_path: Path) -> None:
    """Sub-agent use: several agents call one agentflux over streamable HTTP with a bearer token
    at once. Each call has its own context; the model calls are serialized safely."""
    import subprocess

    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from conftest import free_port
    from test_serve import wait_for_port

    source = yaml.safe_load(trained["registry"][0].read_text())
    source["proxy"] = {"surfaces": ["do_task"]}
    source["training"] = {"auto": False}
    path = trained["registry"][0].parent / f"registry-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(source))
    port, token = free_port(), "concurrent-test-token"
    env = dict(os.environ) | {"AGENTFLUX_HOME": str(trained["home"][0]), "AGENTFLUX_HTTP_TOKEN": token}
    command = [PYTHON, "-m", "agentflux.proxy", "serve", "--registry", str(path), "--transport", "http", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    tasks = [t.query for t in train_queries(trained, "list-then-read")[:2] + train_queries(trained, "find-then-read")[:2]]
    results: dict[str, Any] = {}
    try:
        wait_for_port(port, process, timeout=60)

        async def agent(task: str) -> None:
            messages: list[str] = []

            async def progress(value: float, total: float | None, message: str | None) -> None:
                messages.append(message or "")

            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=600)) as http:
                async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http), mode="legacy") as client:
                    result = await client.call_tool("do_task", {"task": task, "max_steps": 3, "timeout_s": 300},
                                                    progress_callback=progress)  # fmt: skip
            results[task] = (result, messages)

        with anyio.fail_after(900):
            async with anyio.create_task_group() as tg:
                for task in tasks:
                    tg.start_soon(agent, task)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert set(results) == set(tasks)
    for task, (result, messages) in results.items():
        assert not result.is_error, result.content
        outcome = result.structured_content
        # Each call ran its own loop: its own task, its own numbered steps, its own progress.
        # (Whether the tiny model solves a task is the evaluation's business, not this test's.)
        assert outcome["task"] == task and outcome["summary"] and outcome["stopped"]
        assert [s["number"] for s in outcome["steps"]] == list(range(1, len(outcome["steps"]) + 1))
        assert any(m.startswith("step 1: choosing a toolset") for m in messages)
