"""Where a do_task step's time goes: route, select, arguments, tool call, bookkeeping.

    .venv/bin/python benchmarks/step_latency.py --registry REGISTRY [--tasks 6] [--backends transformers,vllm]

REGISTRY names the tiny model (`model.base`) and the servers, whose adapters must already be in
$AGENTFLUX_HOME's store (`agentflux train --server NAME --quick`; the test suite's `trained`
fixture leaves such a home and registry under pytest's temporary folder). The tasks are the
first requests of each server's stored training set, so every stage runs with its trained
adapter. Per backend, the agent runs in process over the real (sandboxed) servers, and each
step's own timings are collected: `bookkeeping` is everything in a step that is not a model
call or the tool call (prompt rendering, validation, observation truncation, trajectory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import anyio
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STAGES = ("route", "select", "arguments", "call", "bookkeeping")


def tasks_from_datasets(servers: list[str], per_server: int) -> list[str]:
    from agentflux.trainer import data
    from agentflux.trainer.pipeline import datasets_dir

    tasks = []
    for server in servers:
        stored = sorted(p for p in (datasets_dir() / server).glob("*") if (p / "meta.json").exists())
        if not stored:
            raise SystemExit(f"no dataset for {server} in {datasets_dir()}: run `agentflux train --server {server} --quick`")
        tasks += [t.query for t in data.load(stored[-1])["train"][:per_server]]
    return tasks


async def run_backend(registry_path: Path, backend: str, tasks: list[str]) -> list[dict]:
    from agentflux.proxy.agent import Budget
    from agentflux.proxy.hub import Hub, running_hub
    from agentflux.proxy.runtime import AgentRuntime
    from agentflux.registry.loader import load_registry

    source = yaml.safe_load(registry_path.read_text())
    source.setdefault("model", {})["backend"] = backend
    # The tiny router adapter tends to answer `summarize` at once (docs/training.md); the base
    # model routes here so that every task has steps to time. A router call costs the same.
    source["model"]["router"] = "base"
    copy = registry_path.with_name(f".bench-{backend}-{registry_path.name}")
    copy.write_text(yaml.safe_dump(source))
    registry = load_registry(copy)
    hub = Hub(registry)
    runtime = AgentRuntime(registry, hub)
    steps: list[dict] = []

    async def quiet(message: str) -> None:
        pass

    async with running_hub(hub), anyio.create_task_group() as tg:
        await tg.start(runtime.run)
        await hub.wait_settled(60)
        agent = await runtime.ready_agent(900)
        await runtime.refresh()
        # One warm-up task: first calls pay for lazy initialisation (grammar compilers, caches).
        await agent.run(tasks[0], Budget(max_steps=1, timeout_s=600), quiet)
        for task in tasks:
            outcome = await agent.run(task, Budget(max_steps=3, timeout_s=1800), quiet)
            steps += [step.timings_ms for step in outcome.steps]
        tg.cancel_scope.cancel()
    copy.unlink()
    return steps


def summarize(steps: list[dict]) -> dict:
    row: dict = {"steps": len(steps)}
    for stage in STAGES:
        values = [s.get(stage, 0.0) for s in steps]
        row[stage] = {"mean_ms": round(statistics.fmean(values), 1), "p50_ms": round(statistics.median(values), 1)}
    totals = [sum(s.get(stage, 0.0) for stage in STAGES) for s in steps]
    row["step_mean_ms"] = round(statistics.fmean(totals), 1)
    row["bookkeeping_share"] = round(sum(s.get("bookkeeping", 0.0) for s in steps) / sum(totals), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--tasks", type=int, default=3, help="requests per server")
    parser.add_argument("--backends", default="transformers,vllm")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    servers = list(yaml.safe_load(args.registry.read_text())["mcpServers"])
    tasks = tasks_from_datasets(servers, args.tasks)
    results = {}
    for backend in args.backends.split(","):
        steps = anyio.run(run_backend, args.registry.resolve(), backend, tasks)
        if not steps:
            print(f"{backend}: the model finished every task without a tool call; no step to measure")
            continue
        results[backend] = summarize(steps)
    print(f"{len(tasks)} tasks over {', '.join(servers)}; mean (p50) ms per step")
    print("| backend | steps | route | select | arguments | call | bookkeeping | step | bookkeeping share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, row in results.items():
        cells = [f"{row[s]['mean_ms']} ({row[s]['p50_ms']})" for s in STAGES]
        print(f"| {backend} | {row['steps']} | {' | '.join(cells)} | {row['step_mean_ms']} | {row['bookkeeping_share']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
