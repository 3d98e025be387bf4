"""Two serving paths of the transformers backend, side by side: every model call of held-out tasks.

    .venv/bin/python benchmarks/prefix_cache.py --adapters FOLDER [--compare cache|drafting] [--tasks 12] [--rounds 2]

`--compare cache` (the default): the prefix cache off and on. `--compare drafting`: arguments
decoded a token per forward, and with the grammar's forced text drafted (`constrained.py`),
the prefix cache on in both.

FOLDER is a toolset's published adapters (`$AGENTFLUX_HOME/adapters/<base>/<server>/<fingerprint>`,
trained on the embedded model). Each held-out trajectory of the dataset those adapters were
trained on is replayed step by step, as the agent runs it: the base model's route among the
toolset and `summarize` (zero-shot router), the selector's choice, and the chosen tool's
arguments, with the recorded calls as history. The same calls run on both paths, alternating per task
in one process so both see the same machine. Reported: per-stage latency p50/p95, a step's
latency by its position in the task, the share of prompt tokens prefilled, the cache's hit
rate, and whether both paths chose and wrote the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import anyio
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STAGES = ("route", "select", "arguments")
# --compare: the two paths, each as (prefix cache on, tokens drafted per forward).
PATHS = {"cache": {"off": (False, 16), "on": (True, 16)}, "drafting": {"stepwise": (True, 0), "drafted": (True, 16)}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def replay(backend, fmt, toolset, others, trajectory, adapters: dict[str, str]) -> tuple[list[dict], list]:
    """Per step: the milliseconds of each stage; and what the model answered."""
    from agentflux.proxy import protocol
    from agentflux.trainer.examples import history

    calls = history(trajectory, backend.tokenizer)
    steps, answers = [], []
    for index in range(len(calls) + 1):
        timings = {}
        started = time.perf_counter()
        route = protocol.route_prompt(fmt, trajectory.query, calls[:index], [toolset, others])
        answers.append(await backend.choose(route.text, route.continuations(), None))
        timings["route"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        select = protocol.select_prompt(fmt, trajectory.query, calls[:index], toolset)
        answers.append(await backend.choose(select.text, select.continuations(), adapters["selector"]))
        timings["select"] = (time.perf_counter() - started) * 1000
        if index < len(calls):
            tool = toolset.tool(calls[index].tool)
            started = time.perf_counter()
            prompt = protocol.arguments_prompt(fmt, trajectory.query, calls[:index], tool)
            try:
                answers.append(await backend.generate_json(prompt.text, tool.parameters, adapters[tool.name]))
            except Exception as exc:  # a malformed answer is an answer too: both paths must agree on it
                answers.append(type(exc).__name__)
            timings["arguments"] = (time.perf_counter() - started) * 1000
        steps.append(timings)
    return steps, answers


async def run(folder: Path, registry: Path, compare: str, tasks: int, rounds: int) -> dict:
    from agentflux.proxy import protocol
    from agentflux.proxy.backends.constrained import DecodeStats
    from agentflux.proxy.backends.factory import model_format, resolve_dtype
    from agentflux.proxy.backends.hf import TransformersBackend
    from agentflux.proxy.backends.prefix_cache import PrefixCache
    from agentflux.registry.schema import ModelSettings
    from agentflux.registry.store import Manifest
    from agentflux.trainer import data
    from agentflux.trainer.pipeline import _stored_datasets, stored_toolset

    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    stored, meta = next((p, m) for p, m in _stored_datasets(manifest.server) if m["hash"] == manifest.dataset_hash)
    tests = data.load(stored)["test"][:tasks]
    servers = yaml.safe_load(registry.read_text())["mcpServers"]
    toolset = stored_toolset(manifest.server, servers.get(manifest.server, {}).get("description"), meta)
    # The router also sees the registry's next server (tools are not in its prompt).
    other = next(name for name in servers if name != manifest.server)
    others = protocol.Toolset(other, servers[other].get("description") or "", ())
    backend = TransformersBackend(manifest.base_model, dtype=resolve_dtype("auto", manifest.base_model))
    names = {"selector": f"{manifest.server}/selector"} | {tool: f"{manifest.server}/{tool}" for tool in manifest.tools}
    await backend.load_adapter(names["selector"], folder / manifest.selector)
    for tool, path in manifest.tools.items():
        await backend.load_adapter(names[tool], folder / path)
    fmt = model_format(ModelSettings(), manifest.base_model)
    paths = PATHS[compare]
    steps: dict[str, list[tuple[int, dict]]] = {path: [] for path in paths}
    answers: dict[str, list] = {path: [] for path in paths}
    await replay(backend, fmt, toolset, others, tests[0], names)  # warm-up: lazy initialisation
    # Each path its own cache, so that neither finds the other's prompts: one that keeps
    # nothing where the path has no cache, else one that keeps its entries across tasks.
    caches = {path: PrefixCache() if cached else PrefixCache(max_bytes=0) for path, (cached, _) in paths.items()}
    decoding = {path: DecodeStats() for path in paths}
    for round_ in range(rounds):
        for number, trajectory in enumerate(tests):
            order = list(paths) if (number + round_) % 2 == 0 else list(reversed(paths))
            for path in order:
                backend.prefixes, backend.decoding = caches[path], decoding[path]
                backend.draft_tokens = paths[path][1]
                timings, said = await replay(backend, fmt, toolset, others, trajectory, names)
                steps[path] += list(enumerate(timings))
                answers[path] += said
    result: dict = {"tasks": len(tests), "rounds": rounds, "server": manifest.server, "model": manifest.base_model}
    for path, rows in steps.items():
        row: dict = {}
        for stage in STAGES:
            values = [timings[stage] for _, timings in rows if stage in timings]
            row[stage] = {"p50_ms": round(statistics.median(values)), "p95_ms": round(percentile(values, 0.95))}
        totals = [sum(t.values()) for _, t in rows if "arguments" in t]
        row["step"] = {"p50_ms": round(statistics.median(totals)), "p95_ms": round(percentile(totals, 0.95))}
        for position in (0, 1, 2):
            values = [sum(t.values()) for index, t in rows if index == position and "arguments" in t]
            if values:
                row[f"step_{position + 1}_p50_ms"] = round(statistics.median(values))
        row["prefilled_share"] = caches[path].stats.as_dict()["prefilled_share"]
        row["hit_rate"] = caches[path].stats.as_dict()["hit_rate"]
        row["decoding"] = decoding[path].as_dict()
        result[path] = row
    first, second = (answers[path] for path in paths)
    result["answers"] = len(second)
    result["same_answers"] = first == second
    result["answers_differing"] = sum(a != b for a, b in zip(first, second, strict=True))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=Path, required=True)
    parser.add_argument("--registry", type=Path, default=ROOT / "examples/registry.yaml",
                        help="where the toolset's description comes from")
    parser.add_argument("--compare", choices=PATHS, default="cache", help="which two paths")
    parser.add_argument("--tasks", type=int, default=12, help="held-out tasks replayed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = anyio.run(run, args.adapters, args.registry, args.compare, args.tasks, args.rounds)
    print(f"{result['tasks']} held-out {result['server']} tasks x {result['rounds']} rounds; p50 (p95) ms")
    print(f"| {args.compare} | route | select | arguments | step | step 1 | step 2 | step 3 | prefilled | hit rate | tokens per forward |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in PATHS[args.compare]:
        row = result[path]
        cells = [f"{row[s]['p50_ms']} ({row[s]['p95_ms']})" for s in (*STAGES, "step")]
        cells += [str(row.get(f"step_{n}_p50_ms", "-")) for n in (1, 2, 3)]
        cells += [f"{row['prefilled_share']:.1%}", f"{row['hit_rate']:.1%}", str(row["decoding"]["tokens_per_forward"])]
        print(f"| {path} | {' | '.join(cells)} |")
    print(f"same answers on both paths: {result['same_answers']} ({result['answers_differing']} of {result['answers']} differ)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
