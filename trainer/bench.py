"""The task benchmark: do_task's own loop on generated multi-step tasks, scored deterministically.

The server runs on a fresh copy of the fixture workspace for every task (and the registry's
other servers beside it, so the router has a real choice). Each task runs in both styles
(explicit and fuzzed) under every system the trained adapters allow:

    base                    no adapters: the base model routes, selects and writes arguments
    traditional             one adapter per toolset writes whole calls
    decoupled               selector + per-tool argument adapters, routed (the product)
    decoupled, no routing   the same adapters; no router, the toolsets offered in order

and is scored on:

- execution success: at least one call, and no call failed or had unusable arguments;
- end state: the workspace afterwards equals the one expected (the task's writes, with no
  collateral change anywhere else);
- ToolFit (exact): round(10 x the share of required outputs found in successful tool outputs);
- success: ToolFit 10 and the end state as expected;
- steps per task; and with a judge configured, the judge's ToolFit (parse failures counted).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from agentflux.proxy.adapters import AdapterIndex
from agentflux.proxy.agent import Agent, Budget, Outcome
from agentflux.proxy.backends.factory import create_backend, model_format, model_path
from agentflux.proxy.hub import Health
from agentflux.proxy.protocol import Tool
from agentflux.registry.loader import Registry
from agentflux.registry.secrets import REDACTOR
from agentflux.registry.store import AdapterStore, base_model_id
from agentflux.trainer.chat import ChatClient
from agentflux.trainer.collect import FixtureServer
from agentflux.trainer.judge import Judge
from agentflux.trainer.teacher import fuzz_tasks
from agentflux.trainer.tasks import STYLES, Task, generate_tasks

logger = logging.getLogger(__name__)

# name -> (adapter mode, or None for none at all; whether the router stage runs)
SYSTEMS: dict[str, tuple[str | None, bool]] = {
    "base": (None, True),
    "traditional": ("traditional", True),
    "decoupled": ("decoupled", True),
    "decoupled, no routing": ("decoupled", False),
}
# Hosts' 60 s limit does not apply here; the summary is not scored (ToolFit ignores it).
BUDGET = Budget(max_steps=6, timeout_s=300.0, summary_tokens=8)
OUTPUT_CHARS = 600  # of each tool output kept in bench.json (scoring and the judge see it whole)


@dataclass
class TaskRun:
    task: str
    style: str
    system: str
    steps: int
    stopped: str
    execution_success: bool
    end_state: bool
    toolfit: int
    success: bool
    calls: list[dict[str, Any]] = field(default_factory=list)
    judge: int | None = None
    judge_error: str | None = None


def snapshot(root: Path) -> dict[str, str | None]:
    """Every file (path -> content hash) and folder (path -> None) under `root`."""
    found: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        found[relative] = None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def expected_state(before: dict[str, str | None], task: Task) -> dict[str, str | None]:
    expected = dict(before)
    for relative, text in task.writes.items():
        expected[relative] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return expected


def exact_toolfit(task: Task, outputs: Sequence[str]) -> int:
    """Required outputs found in `outputs` (those of the successful calls), on the paper's 0-10 scale (half rounds up)."""
    covered = sum(any(req.evidence in output for output in outputs) for req in task.requirements)
    return int(10 * covered / len(task.requirements) + 0.5)


def _calls(outcome: Outcome) -> list[dict[str, Any]]:
    return [
        {"toolset": step.toolset, "tool": step.tool, "arguments": json.loads(REDACTOR.redact(json.dumps(step.arguments or {}))),
         "is_error": step.is_error, "output": REDACTOR.redact(step.observation), "adapters": step.adapters}
        for step in outcome.steps
    ]  # fmt: skip


def score(task: Task, style: str, system: str, outcome: Outcome, before: dict, after: dict) -> TaskRun:
    calls = _calls(outcome)
    executed = bool(calls) and not any(call["is_error"] for call in calls)
    end_state = after == expected_state(before, task)
    fit = exact_toolfit(task, [call["output"] for call in calls if not call["is_error"]])
    return TaskRun(task.id, style, system, len(outcome.steps), outcome.stopped, executed, end_state, fit,
                   fit == 10 and end_state, calls)  # fmt: skip


def workspace_listing(root: Path) -> str:
    """The ground truth the judge sees: every file with its size."""
    return "\n".join(
        f"{path.relative_to(root).as_posix()} ({path.stat().st_size} bytes)"
        for path in sorted(root.rglob("*")) if path.is_file()
    )  # fmt: skip


async def _no_report(message: str) -> None:
    pass


async def run_benchmark(
    registry: Registry,
    server: str,
    count: int,
    seed: int = 0,
    judge: Judge | None = None,
    teacher: ChatClient | None = None,
    systems: Sequence[str] = tuple(SYSTEMS),
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Task], list[TaskRun], dict[str, Any]]:
    """Generate `count` tasks on the seed's workspace and run them; returns tasks, runs and provenance."""
    settings = registry.config.model
    base = model_path(settings, registry.base_dir)
    fixture = FixtureServer(registry, server, seed, others=True)
    if fixture.env is None or fixture.workspace is None:
        raise ValueError(f"server {server!r} is granted no folder: the task benchmark needs a workspace to act on")
    env, workspace = fixture.env, fixture.workspace
    async with fixture.running() as listed:
        tasks = generate_tasks(env, {tool.name for tool in listed}, count, seed)
        fuzz_rejected: Counter[str] = Counter()
        if teacher is not None:
            tasks, fuzz_rejected = await fuzz_tasks(teacher, tasks, {tool.name for tool in listed})
        backend = await anyio.to_thread.run_sync(create_backend, settings, registry.base_dir)
        try:
            trained = AdapterIndex(backend, AdapterStore(), base_model_id(base), "decoupled", settings.router == "adapter")
            await trained.sync({
                name: [tool.model_dump() for tool in running.catalog.tools]
                for name, running in fixture.hub.servers.items() if running.health is Health.READY
            })  # fmt: skip
            loaded = trained.sets.get(server)
            if loaded is None:
                logger.warning("no adapters for %s's current tools: only the base model is benchmarked", server)
            available = {
                "base": True,
                "traditional": loaded is not None and loaded.manifest.traditional is not None,
                "decoupled": loaded is not None and loaded.manifest.selector is not None,
            }
            tools = [Tool(t.name, t.description or "", t.input_schema) for t in listed]
            fmt = model_format(settings, base)
            plan = [name for name in systems if available[SYSTEMS[name][0] or "base"]]
            runs: list[TaskRun] = []
            total = len(plan) * len(tasks) * len(STYLES)
            for name in plan:
                mode, route = SYSTEMS[name]
                index = trained.with_mode(mode) if mode else AdapterIndex(backend, AdapterStore(), trained.base_id, use_router=False)
                agent = Agent(backend, fixture.hub, index, fmt, route=route)
                for task in tasks:
                    for style in STYLES:
                        fixture.reset()
                        before, listing = snapshot(workspace), workspace_listing(workspace)
                        outcome = await agent.run(task.request(style), BUDGET, _no_report)
                        run = score(task, style, name, outcome, before, snapshot(workspace))
                        if judge is not None:  # the true state: the workspace as the task found it
                            verdict = await judge.grade(task.request(style), listing, tools, run.calls)
                            run.judge, run.judge_error = verdict.score, verdict.error
                        runs.append(run)
                        if on_progress:
                            on_progress(len(runs), total)
            provenance = {
                "base_model": base, "base_model_id": trained.base_id, "seed": seed, "tasks": len(tasks),
                "adapters": str(loaded.folder) if loaded else None, "fingerprint": loaded.fingerprint if loaded else None,
                "dataset_hash": loaded.manifest.dataset_hash if loaded else None,
                "router": str(trained.router.folder) if trained.router else None,
                "budget": asdict(BUDGET), "judge": judge.client.model if judge else None,
                "fuzzed_by": teacher.model if teacher else "templates", "fuzz_rejected": dict(fuzz_rejected),
            }  # fmt: skip
        finally:
            await backend.aclose()
    return tasks, runs, provenance


METRICS = ("success", "execution_success", "end_state", "toolfit", "steps")


def summarize_runs(runs: Sequence[TaskRun]) -> dict[str, dict[str, Any]]:
    """Per system and style: the mean of each metric (ToolFit 0-10), plus judge figures when judged."""
    table: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys((run.system, run.style) for run in runs):
        group = [run for run in runs if (run.system, run.style) == key]
        row: dict[str, Any] = {metric: sum(float(getattr(run, metric)) for run in group) / len(group) for metric in METRICS}
        row["tasks"] = len(group)
        judged = [run.judge for run in group if run.judge is not None]
        failures = sum(1 for run in group if run.judge_error is not None)
        if judged or failures:
            row["judge_toolfit"] = sum(judged) / len(judged) if judged else None
            row["judge_failures"] = failures
        table[f"{key[0]} / {key[1]}"] = row
    return table


def markdown_table(server: str, summary: dict[str, dict[str, Any]]) -> str:
    judged = any("judge_failures" in row for row in summary.values())
    header = "| system / style | tasks | success | execution success | end state | ToolFit (0-10) | steps |"
    rule = "|---|---|---|---|---|---|---|"
    if judged:
        header, rule = header + " judge ToolFit | judge parse failures |", rule + "---|---|"
    lines = [f"Task benchmark on `{server}` (generated multi-step tasks, fixture workspace):", "", header, rule]
    for name, row in summary.items():
        cells = [str(row["tasks"]), *(f"{row[m]:.2f}" for m in ("success", "execution_success", "end_state")),
                 f"{row['toolfit']:.1f}", f"{row['steps']:.1f}"]  # fmt: skip
        if judged:
            value = row.get("judge_toolfit")
            cells += ["n/a" if value is None else f"{value:.1f}", str(row.get("judge_failures", 0))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(server: str, summary: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.barh(names, [summary[name]["toolfit"] for name in names], color="#4c72b0")
    axes.set_xlim(0, 10)
    axes.set_xlabel("ToolFit (exact, 0-10)")
    axes.set_title(f"{server}: task benchmark by system and request style")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _stored(run: TaskRun) -> dict[str, Any]:
    """A run as bench.json keeps it: tool outputs cut to OUTPUT_CHARS, and marked where cut."""
    stored = asdict(run)
    for call in stored["calls"]:
        if len(call["output"]) > OUTPUT_CHARS:
            call["output"] = call["output"][:OUTPUT_CHARS] + f"[... {len(call['output'])} characters in all]"
    return stored


def write_bench(out: Path, server: str, tasks: Sequence[Task], runs: Sequence[TaskRun], provenance: dict[str, Any]) -> str:
    """bench.json (tasks, every run, provenance), bench.md and toolfit.png in `out`; returns the table."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_runs(runs)
    document = provenance | {
        "server": server,
        "summary": summary,
        "tasks": [asdict(task) for task in tasks],
        "runs": [_stored(run) for run in runs],
    }
    (out / "bench.json").write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    table = markdown_table(server, summary)
    (out / "bench.md").write_text(table, encoding="utf-8")
    plot(server, summary, out / "toolfit.png")
    return table
