"""Held-out accuracy of a toolset's adapters (or of the base model), step by step.

- selection accuracy: at every step of every test trajectory (and at its end, where the answer
  is `summarize`), the selector's choice among the toolset's tools equals the recorded one;
- argument exact match, BFCL-style: the generated arguments have exactly the recorded keys
  (none missing, none unexpected) and equal values after normalization (strings compared
  without spaces, case and `,./-_*^`; numbers by value);
- schema validity: generated arguments that parse and validate (the rest raised an error).

Arguments are scored as `do_task` would call the tool: after `repair.py` (time-zone names
put right), whose repairs are counted (`argument_repaired`); `argument_exact_unrepaired` is the
exact match of what the model wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from agentflux.proxy import protocol
from agentflux.proxy.backends import Backend, GenerationError
from agentflux.proxy.protocol import SUMMARIZE, Call, ChatFormat, Prompt, Toolset
from agentflux.proxy.repair import repair_arguments
from agentflux.trainer.collect import Trajectory
from agentflux.trainer.examples import history

_PUNCTUATION = re.compile(r"[\s,./\-_*^]")


def normalize(value: Any) -> Any:
    if isinstance(value, str):
        return _PUNCTUATION.sub("", value.lower()).replace("'", '"')
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        return {key: normalize(item) for key, item in value.items()}
    return value


def arguments_match(generated: Any, expected: dict[str, Any]) -> bool:
    return isinstance(generated, dict) and set(generated) == set(expected) and normalize(generated) == normalize(expected)


async def _choices(
    backend: Backend,
    tests: Sequence[Trajectory],
    prompt_of: Callable[[str, list[Call]], Prompt],
    expected_of: Callable[[Call], str],
    adapter: str | None,
) -> tuple[int, int]:
    """(right, asked) over every step of every trajectory and its end, where the answer is
    `summarize`: the step's prompt, and the choice the recorded call stands for."""
    asked = right = 0
    for trajectory in tests:
        calls_so_far = history(trajectory, backend.tokenizer)
        for index in range(len(calls_so_far) + 1):
            expected = expected_of(calls_so_far[index]) if index < len(calls_so_far) else SUMMARIZE
            prompt = prompt_of(trajectory.query, calls_so_far[:index])
            right += prompt.answer(await backend.choose(prompt.text, prompt.continuations(), adapter)) == expected
            asked += 1
    return right, asked


async def selection(
    backend: Backend, fmt: ChatFormat, toolset: Toolset, tests: Sequence[Trajectory], selector: str | None
) -> dict[str, float]:
    """How often the selector picks the recorded tool, or `summarize` after the last call."""
    right, steps = await _choices(
        backend, tests, lambda task, calls: protocol.select_prompt(fmt, task, calls, toolset), lambda call: call.tool, selector
    )
    return {"selection_accuracy": right / steps if steps else 0.0, "steps": steps}


async def routing(
    backend: Backend, fmt: ChatFormat, toolsets: Sequence[Toolset], tests: dict[str, Sequence[Trajectory]],
    router: str | None,
) -> dict[str, float]:
    """How often the router names the toolset that made each recorded call, or `summarize` after the last."""
    steps = right = 0
    for server, trajectories in tests.items():
        done, asked = await _choices(
            backend, trajectories, lambda task, calls: protocol.route_prompt(fmt, task, calls, toolsets),
            lambda call, server=server: server, router,
        )  # fmt: skip
        right, steps = right + done, steps + asked
    return {"routing_accuracy": right / steps if steps else 0.0, "steps": steps}


async def arguments(
    backend: Backend, fmt: ChatFormat, toolset: Toolset, tests: Sequence[Trajectory], adapters: dict[str, str]
) -> dict[str, float]:
    """For every recorded call, whether the arguments written for it match (and validate)."""
    calls = exact = unrepaired = valid = repaired = 0
    for trajectory in tests:
        calls_so_far = history(trajectory, backend.tokenizer)
        for index, call in enumerate(calls_so_far):
            tool = toolset.tool(call.tool)
            prompt = protocol.arguments_prompt(fmt, trajectory.query, calls_so_far[:index], tool)
            calls += 1
            try:
                generated = await backend.generate_json(prompt.text, tool.parameters, adapters.get(call.tool))
            except GenerationError:
                continue
            valid += 1
            unrepaired += arguments_match(generated, call.arguments)
            generated, repairs = repair_arguments(generated, tool.parameters)
            repaired += bool(repairs)
            exact += arguments_match(generated, call.arguments)
    return {
        "argument_exact_match": exact / calls if calls else 0.0,
        "argument_schema_valid": valid / calls if calls else 0.0,
        "argument_exact_unrepaired": unrepaired / calls if calls else 0.0,
        "argument_repaired": repaired / calls if calls else 0.0,
        "calls": calls,
    }
