"""The `do_task` loop: hierarchical, decoupled orchestration over the downstream toolsets.

Each step, in order, every stage visible in the trajectory:

    route      base model (or the router adapter), choice over the toolsets + summarize
    select     the toolset's selector adapter, choice over its tools + summarize
    arguments  the tool's argument adapter, decoding constrained by the tool's schema, then
               time-zone names the zone database spells otherwise put right (repair.py)
    call       the downstream tool, through the hub (sandboxed); its result is the observation

until the router or the selector says `summarize`, or a budget runs out. The answer is what
the successful calls returned, each whole under the call that produced it (`summary="results"`,
the default: a small base model's free text is worse than the results themselves), or a
bounded summary the base model writes from them (`summary="model"`). Arguments the model cannot produce,
and tool errors, become observations it can react to; the same call repeated beyond a limit
ends the loop with an explanation. A toolset without trained adapters runs zero-shot on the
base model, and its steps say so.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from agentflux.proxy import protocol
from agentflux.proxy.adapters import AdapterIndex
from agentflux.proxy.backends import Backend, GenerationError
from agentflux.proxy.hub import Health, Hub, result_text
from agentflux.proxy.protocol import SUMMARIZE, Call, ChatFormat, Tool, Toolset
from agentflux.proxy.repair import repair_arguments

logger = logging.getLogger(__name__)

Report = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Budget:
    """Defaults suit MCP hosts, which give up on a call after 60 seconds."""

    max_steps: int = 8
    timeout_s: float = 50.0
    max_tokens: int = 4096  # generated tokens: arguments and summary
    repeat_limit: int = 2  # the same call (tool and arguments) at most this many times
    # What the model sees of each result (the whole result stays in the trajectory). Training cuts
    # histories to the same budget; on a CPU every token of history costs in every later call.
    observation_tokens: int = 256
    summary_tokens: int = 256


@dataclass
class Step:
    number: int
    toolset: str
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    observation: str = ""
    is_error: bool = False
    adapters: dict[str, str | None] = field(default_factory=dict)  # stage -> adapter (None: base model)
    zero_shot: list[str] = field(default_factory=list)  # stages answered by the base model, untrained
    repaired: list[str] = field(default_factory=list)  # argument values put right before the call (repair.py)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    task: str
    summary: str
    stopped: str  # summarize, max_steps, timeout, token_budget, repeated_call, no_toolsets
    explanation: str
    steps: list[Step]
    toolsets: list[str]
    seconds: float
    router: str | None = None  # the router adapter when the task started (None: the base model routed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Agent:
    def __init__(
        self, backend: Backend, hub: Hub, adapters: AdapterIndex, fmt: ChatFormat, route: bool = True,
        summary: str = "results",
    ) -> None:  # fmt: skip
        self.backend = backend
        self.hub = hub
        self.adapters = adapters
        self.fmt = fmt
        self.summary = summary
        # False: the routing ablation. No router; the toolsets are offered in registry order, and
        # each selector decides whether its toolset has more to do.
        self.route = route

    def toolsets(self) -> dict[str, Toolset]:
        """The ready servers, as the model sees them."""
        found = {}
        for name, server in self.hub.servers.items():
            if server.health is Health.READY and server.catalog.tools:
                tools = tuple(Tool(t.name, t.description or "", t.input_schema) for t in server.catalog.tools)
                found[name] = Toolset(name, server.entry.description or "", tools)
        return found

    async def run(self, task: str, budget: Budget, report: Report) -> Outcome:
        started = time.monotonic()
        deadline = started + budget.timeout_s
        router = self.adapters.router_adapter()
        toolsets = self.toolsets()
        steps: list[Step] = []
        history: list[Call] = []
        repeats: Counter[str] = Counter()
        tokens = 0
        stopped, explanation = "max_steps", f"stopped after {budget.max_steps} steps without finishing"
        # Each step: route -> select -> arguments -> call; see _route_and_select for the first two.
        if not toolsets:
            stopped, explanation = "no_toolsets", "no downstream server is ready; see the server status"
        for number in range(1, budget.max_steps + 1 if toolsets else 1):
            if time.monotonic() > deadline:
                stopped, explanation = "timeout", f"stopped at the time budget of {budget.timeout_s:g}s"
                break
            step_started = time.monotonic()
            picked = await self._route_and_select(task, history, toolsets, number, report)
            if picked is None:
                stopped, explanation = "summarize", "the task is done: the router and selectors said summarize"
                break
            step, toolset, tool_name = picked
            choice, tool = toolset.name, toolset.tool(tool_name)
            # 3. arguments, constrained by the tool's schema
            await report(f"step {number}: writing arguments for {choice}.{tool_name}")
            writer = self.adapters.arguments(choice, tool_name)
            step.adapters["arguments"] = writer
            if writer is None:
                step.zero_shot.append("arguments")
            began = time.monotonic()
            try:
                arguments = await self.backend.generate_json(
                    protocol.arguments_prompt(self.fmt, task, history, tool).text, tool.parameters, writer
                )
            except GenerationError as exc:
                arguments = None
                step.observation, step.is_error = f"could not write valid arguments for {tool_name}: {exc}", True
            step.timings_ms["arguments"] = _ms(began)
            if arguments is not None:
                arguments, step.repaired = repair_arguments(arguments, tool.parameters)
                step.arguments = arguments
                tokens += len(protocol.encode(self.backend.tokenizer, json.dumps(arguments)))
                key = json.dumps([choice, tool_name, arguments], sort_keys=True)
                repeats[key] += 1
                if repeats[key] > budget.repeat_limit:
                    steps.append(step)
                    stopped = "repeated_call"
                    explanation = f"{tool_name} was called with the same arguments {budget.repeat_limit} times already"
                    break
                # 4. call the tool; its result (or its error) is what the model sees next
                await report(f"step {number}: calling {choice}.{tool_name}")
                began = time.monotonic()
                result = await self.hub.call_tool(choice, tool_name, arguments)
                step.timings_ms["call"] = _ms(began)
                step.is_error = bool(result.is_error)
                step.observation = result_text(result)
            observation = protocol.truncate_observation(step.observation, self.backend.tokenizer, budget.observation_tokens)
            history.append(Call(tool_name, step.arguments or {}, observation))
            steps.append(step)
            step.timings_ms["bookkeeping"] = max(0.0, _ms(step_started) - sum(step.timings_ms.values()))
            if tokens > budget.max_tokens:
                stopped, explanation = "token_budget", f"stopped at the budget of {budget.max_tokens} generated tokens"
                break
        if self.summary == "results":
            summary = _results(steps, "" if stopped == "summarize" else f"[{explanation}] ")
        else:
            summary = await self._summarize(task, history, budget, deadline, stopped, explanation, report)
        return Outcome(task, summary, stopped, explanation, steps, sorted(toolsets), time.monotonic() - started, router)

    async def _route_and_select(
        self, task: str, history: list[Call], toolsets: dict[str, Toolset], number: int, report: Report
    ) -> tuple[Step, Toolset, str] | None:
        """Route to a toolset and select its tool. A selector that answers `summarize` says its
        toolset has nothing more to do: the router is asked again without it (a task may span
        several toolsets), and the task is done when the router says so or none is left."""
        router = self.adapters.router_adapter()
        candidates = dict(toolsets)
        timings: dict[str, float] = {}
        while candidates:
            if self.route:
                await report(f"step {number}: choosing a toolset")
                route = protocol.route_prompt(self.fmt, task, history, list(candidates.values()))
                began = time.monotonic()
                choice = route.answer(await self.backend.choose(route.text, route.continuations(), router))
                timings["route"] = timings.get("route", 0.0) + _ms(began)
                if choice == SUMMARIZE:
                    return None
            else:
                choice = next(iter(candidates))
            await report(f"step {number}: choosing a tool of {choice}")
            select = protocol.select_prompt(self.fmt, task, history, candidates[choice])
            selector = self.adapters.selector(choice)
            began = time.monotonic()
            tool_name = select.answer(await self.backend.choose(select.text, select.continuations(), selector))
            timings["select"] = timings.get("select", 0.0) + _ms(began)
            if tool_name != SUMMARIZE:
                stages = {"route": router, "select": selector} if self.route else {"select": selector}
                step = Step(number, choice, tool_name, adapters=stages, timings_ms=timings)
                step.zero_shot = [stage for stage, adapter in stages.items() if adapter is None]
                return step, candidates[choice], tool_name
            del candidates[choice]
        return None

    async def _summarize(
        self, task: str, history: list[Call], budget: Budget, deadline: float, stopped: str, explanation: str, report: Report
    ) -> str:
        note = "" if stopped == "summarize" else f"[{explanation}] "
        if not history:
            return note + "No tool was called."
        if time.monotonic() > deadline:
            return note + "Last result: " + history[-1].observation[:500]
        await report("writing the summary")
        prompt = protocol.summary_prompt(self.fmt, task, history)
        with anyio.move_on_after(max(1.0, deadline - time.monotonic() + 10)):
            return note + (await self.backend.generate_text(prompt.text, None, budget.summary_tokens)).strip()
        return note + "Last result: " + history[-1].observation[:500]


def _results(steps: list[Step], note: str) -> str:
    """The answer as what the tools returned: every successful call's whole output under its call."""
    done = [step for step in steps if step.arguments is not None and not step.is_error]
    if not done:
        return note + "No tool call succeeded." if steps else note + "No tool was called."
    parts = [f"{step.toolset}.{step.tool}({json.dumps(step.arguments, ensure_ascii=False)}):\n{step.observation}" for step in done]
    return note + "\n\n".join(parts)


def _ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 2)
