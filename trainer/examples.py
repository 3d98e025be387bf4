"""Training examples from trajectories, rendered by the shared prompt protocol.

- selector (one per toolset): every step of every trajectory, then `summarize` after the last;
  the loss is on the chosen name only;
- arguments (one per tool): every call of that tool; the loss is on the arguments only;
- router (small base models only): at every step the toolset's name, then `summarize`, also for
  tasks that combine two toolsets;
- traditional baseline (one per toolset): every call whole, then the `summarize` call.

Observations are cut to the same token budget as when serving.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from agentflux.proxy import protocol
from agentflux.proxy.agent import Budget
from agentflux.proxy.protocol import SUMMARIZE, Call, ChatFormat, Example, Toolset
from agentflux.trainer.collect import Trajectory

OBSERVATION_TOKENS = Budget().observation_tokens  # what do_task shows the model: equal by construction


def history(trajectory: Trajectory, tokenizer: Any, budget: int = OBSERVATION_TOKENS) -> list[Call]:
    return [
        Call(step.tool, step.arguments, protocol.truncate_observation(step.observation, tokenizer, budget))
        for step in trajectory.steps
    ]


def combine(first: Trajectory, second: Trajectory) -> Trajectory:
    """A task that spans two toolsets: one request after the other, their calls in order."""
    query = first.query.rstrip(" .?!") + ", then " + second.query[:1].lower() + second.query[1:]
    return Trajectory(query, second.server, [*first.steps, *second.steps], "combined", second.style, second.source)


def selector_examples(
    fmt: ChatFormat,
    toolset: Toolset,
    trajectories: Sequence[Trajectory],
    tokenizer: Any,
    foreign: Sequence[Trajectory] = (),
) -> list[Example]:
    """Every step and the final summarize; with `foreign` trajectories (other toolsets), a third
    of the tasks also come after another toolset's calls, as in tasks that span toolsets.

    Stopping after the one call of a single-step task is the easiest decision there is, and its
    prompt, which holds a result, among the longest: every other such task keeps it (the multi-step
    tasks keep theirs all), which saves a fifth of the selector's training time."""
    examples = []
    for number, trajectory in enumerate(trajectories):
        stop = len(trajectory.steps) > 1 or number % 2 == 0
        prefix: list[Call] = []
        if foreign and number % 3 == 0:
            other = foreign[number // 3 % len(foreign)]
            trajectory = combine(other, trajectory)
            prefix = history(other, tokenizer)
        calls = history(trajectory, tokenizer)
        for index in range(len(prefix), len(calls) + stop):
            answer = calls[index].tool if index < len(calls) else SUMMARIZE
            examples.append(protocol.select_example(fmt, trajectory.query, calls[:index], toolset, answer))
    return examples


def argument_examples(
    fmt: ChatFormat, toolset: Toolset, trajectories: Sequence[Trajectory], tokenizer: Any
) -> dict[str, list[Example]]:
    examples: dict[str, list[Example]] = defaultdict(list)
    for trajectory in trajectories:
        calls = history(trajectory, tokenizer)
        for index, call in enumerate(calls):
            tool = toolset.tool(call.tool)
            examples[call.tool].append(protocol.arguments_example(fmt, trajectory.query, calls[:index], tool, call.arguments))
    return dict(examples)


def router_examples(
    fmt: ChatFormat, toolsets: Sequence[Toolset], trajectories: dict[str, Sequence[Trajectory]], tokenizer: Any
) -> list[Example]:
    examples = []
    tasks: list[tuple[Trajectory, list[str]]] = []
    for server, items in trajectories.items():
        tasks += [(trajectory, [server] * len(trajectory.steps)) for trajectory in items]
    # Tasks that span two toolsets, so that the router learns to hand over between them.
    servers = sorted(trajectories)
    for first in servers:
        for second in servers:
            if first == second:
                continue
            pairs = zip(trajectories[first][::2], trajectories[second][1::2], strict=False)
            for one, two in list(pairs)[: max(1, len(trajectories[second]) // 4)]:
                tasks.append((combine(one, two), [first] * len(one.steps) + [second] * len(two.steps)))
    for trajectory, owners in tasks:
        calls = history(trajectory, tokenizer)
        for index in range(len(calls) + 1):
            answer = owners[index] if index < len(calls) else SUMMARIZE
            examples.append(protocol.route_example(fmt, trajectory.query, calls[:index], toolsets, answer))
    return examples


def traditional_examples(fmt: ChatFormat, toolset: Toolset, trajectories: Sequence[Trajectory], tokenizer: Any) -> list[Example]:
    examples = []
    for trajectory in trajectories:
        calls = history(trajectory, tokenizer)
        for index in range(len(calls) + 1):
            name, arguments = (calls[index].tool, calls[index].arguments) if index < len(calls) else (SUMMARIZE, {})
            examples.append(protocol.call_example(fmt, trajectory.query, calls[:index], toolset, name, arguments))
    return examples


def tokenized(tokenizer: Any, examples: Sequence[Example]) -> list[tuple[list[int], list[int]]]:
    return [protocol.tokenize_example(tokenizer, example) for example in examples]
