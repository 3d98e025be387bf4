"""Teacher mode: a large model (any OpenAI-compatible API) writes the requests and solves them.

Requests follow the paper's generation rules (appendix B) in our own words: one realistic
request per line, varied styles, relative paths only, concrete names and numbers, no tool
names. The teacher then orchestrates each request with native tool calling while the calls
run for real against the sandboxed fixture server. Whatever the teacher gets wrong — output
that is not a request, an unknown tool, arguments that are not JSON or do not fit the schema,
a call that fails — is rejected and counted, never trained on.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import replace
from typing import Any

import httpx2

from agentflux.proxy.hub import result_text
from agentflux.proxy.protocol import Toolset
from agentflux.trainer.chat import ChatClient
from agentflux.trainer.collect import FixtureServer, StepRecord, Trajectory
from agentflux.trainer.tasks import FUZZ_RULES, Task, fuzz_rejection

logger = logging.getLogger(__name__)

MAX_STEPS = 6
QUERY_RULES = """You write requests that a user would send to an AI assistant which can use the tool `{tool}` ({description}).
Write {count} different requests, one per line, and nothing else: no numbering, quotes, labels or blank lines.
Rules:
- Each request needs `{tool}` to be fulfilled. Never name the tool, its parameters or any schema.
- Vary the phrasing: imperative and questions, polite and terse, conditional, passive and active.
- Never use absolute paths; use relative paths such as reports/2024-Q3.csv, or say "in the workspace".
- Use varied names: extensions like csv, json, txt, md, log; hidden dotfiles; names with spaces, Unicode or UPPERCASE; nested folders.
- Include concrete numbers where they fit ("the first 10 lines", "image1.png", "10 MB").
- English only.
Other tools exist too: {others}."""


async def fuzz_tasks(teacher: ChatClient, tasks: list[Task], tool_names: set[str]) -> tuple[list[Task], Counter[str]]:
    """The benchmark's fuzzed requests rewritten by the teacher (the paper's appendix C); a
    rewrite that names a tool, drops a path or is not one paragraph keeps the template's, counted."""
    rewritten, rejected = [], Counter[str]()
    for task in tasks:
        try:
            reply = await teacher.chat([{"role": "user", "content": FUZZ_RULES.format(task=task.explicit)}])
            text = (reply.get("content") or "").strip().strip('"')
            reason = fuzz_rejection(task, text, tool_names)
        except (httpx2.HTTPError, KeyError, ValueError) as exc:
            text, reason = "", "teacher request failed"
            logger.warning("teacher failed to fuzz %s: %s", task.id, exc)
        if reason:
            rejected[reason] += 1
            rewritten.append(task)
        else:
            rewritten.append(replace(task, fuzzed=text))
    return rewritten, rejected


def _openai_tools(toolset: Toolset) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in toolset.tools
    ]


def _requests(text: str, count: int) -> tuple[list[str], int]:
    """Lines that look like requests, and how many lines did not."""
    lines = [line.strip().strip('"').strip() for line in (text or "").splitlines()]
    good = [line for line in lines if 8 <= len(line) <= 600 and not line.startswith(("-", "#", "```", "1."))]
    return good[:count], len([line for line in lines if line]) - len(good[:count])


async def teacher_trajectories(fixture: FixtureServer, toolset: Toolset, options: Any) -> tuple[list[Trajectory], Counter[str]]:
    teacher = ChatClient(options.teacher.url, options.teacher.model, options.teacher.api_key, seed=options.seed)
    rejected: Counter[str] = Counter()
    trajectories: list[Trajectory] = []
    try:
        for tool in toolset.tools:
            prompt = QUERY_RULES.format(
                tool=tool.name, description=tool.description[:300], count=options.examples_per_tool,
                others=", ".join(t.name for t in toolset.tools if t.name != tool.name) or "none",
            )
            try:
                reply = await teacher.chat([{"role": "user", "content": prompt}])
            except (httpx2.HTTPError, KeyError, ValueError) as exc:
                rejected["teacher request failed"] += 1
                logger.warning("teacher failed to write requests for %s: %s", tool.name, exc)
                continue
            requests, bad_lines = _requests(reply.get("content") or "", options.examples_per_tool)
            rejected["teacher output is not a request"] += bad_lines
            for request in requests:
                trajectory = await _solve(teacher, fixture, toolset, request)
                if trajectory.rejected:
                    rejected[trajectory.rejected.split(":")[0]] += 1
                else:
                    trajectories.append(trajectory)
    finally:
        await teacher.aclose()
    return trajectories, rejected


async def _solve(teacher: ChatClient, fixture: FixtureServer, toolset: Toolset, request: str) -> Trajectory:
    """Let the teacher call tools until it answers; any invalid step rejects the trajectory."""
    fixture.reset()
    names = {tool.name for tool in toolset.tools}
    messages: list[dict[str, Any]] = [{"role": "user", "content": request}]
    steps: list[StepRecord] = []

    def rejected(reason: str) -> Trajectory:
        return Trajectory(request, fixture.server, steps, "teacher", "teacher", "teacher", True, reason)

    for _ in range(MAX_STEPS):
        try:
            message = await teacher.chat(messages, _openai_tools(toolset))
        except (httpx2.HTTPError, KeyError, ValueError) as exc:
            return rejected(f"teacher request failed: {exc}")
        calls = message.get("tool_calls") or []
        if not calls:
            break
        call = calls[0]["function"]
        if call.get("name") not in names:
            return rejected(f"teacher called an unknown tool: {str(call.get('name'))[:60]}")
        try:
            arguments = json.loads(call.get("arguments") or "{}")
        except json.JSONDecodeError:
            return rejected("teacher arguments are not JSON")
        if not isinstance(arguments, dict):
            return rejected("teacher arguments are not an object")
        result = await fixture.hub.call_tool(fixture.server, call["name"], arguments)
        observation = result_text(result)
        steps.append(StepRecord(call["name"], arguments, observation, not result.is_error))
        if result.is_error:
            return rejected(f"execution failed: {observation[:120]}")
        messages.append({"role": "assistant", "content": None, "tool_calls": [calls[0]]})
        messages.append({"role": "tool", "tool_call_id": calls[0].get("id", "call"), "content": observation})
    if not steps:
        return rejected("teacher made no tool call")
    return Trajectory(request, fixture.server, steps, "teacher", "teacher", "teacher")
