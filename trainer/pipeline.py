"""The training pipeline for one registered server, end to end.

    discover tools -> synthesize requests -> execute them on a fresh fixture -> validate ->
    split -> build span-masked examples -> LoRA fine-tune -> evaluate on held-out data ->
    publish adapters and manifest to the store

`decoupled` trains one selector for the toolset and one argument adapter per tool;
`traditional` trains the single-adapter baseline on the same data; `both` does both, so that
evaluations compare them on identical data. With `model.router: adapter` (base models too small
to route zero-shot), the router is retrained afterwards over every toolset that has data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio

from agentflux.proxy import __version__
from agentflux.proxy.backends.factory import model_format, model_path, resolve_dtype
from agentflux.proxy.protocol import Tool, Toolset
from agentflux.registry.home import agentflux_home
from agentflux.registry.loader import Registry
from agentflux.registry.store import ROUTER, AdapterStore, Manifest, base_model_id, tool_fingerprint
from agentflux.trainer import data, examples
from agentflux.trainer.collect import FixtureServer, Trajectory, collect
from agentflux.trainer.ablations import evaluate_systems, write_results
from agentflux.trainer.finetune import LoraSettings, train_adapter
from agentflux.trainer.synth import synthesize

logger = logging.getLogger(__name__)

Mode = Literal["decoupled", "traditional", "both"]
# (stage, done, total): what a job runner shows while a long stage runs.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TeacherSettings:
    url: str
    model: str
    api_key: str | None = None


@dataclass(frozen=True)
class TrainOptions:
    mode: Mode = "decoupled"
    examples_per_tool: int = 40
    test_size: int = 50
    seed: int = 0
    teacher: TeacherSettings | None = None
    lora: LoraSettings = LoraSettings()
    # Decoupling lets each part have its own schedule: None trains the selector, or the
    # argument adapters, like the rest (router, traditional baseline).
    selector: LoraSettings | None = None
    arguments: LoraSettings | None = None
    evaluate: bool = True
    # Retrain the router afterwards (when the registry asks for a router adapter). Off for every
    # server but the last of several trained in a row: the router learns them all at once.
    router: bool = True
    progress: bool = True
    on_progress: Progress | None = None

    @classmethod
    def standard(cls, *, tiny: bool = False, **overrides: Any) -> TrainOptions:
        """The full recipe: bf16 autocast where the hardware has it, except for the tiny test model."""
        return replace(cls(lora=LoraSettings(bf16=not tiny)), **overrides)

    @classmethod
    def quick(cls, *, tiny: bool = False, **overrides: Any) -> TrainOptions:
        """Minutes on a CPU: fewer examples, a small test set, a short schedule."""
        if not tiny:
            # A pretrained base learns the format in tens of steps; the choice of tool takes
            # more. Measured on the filesystem server (13 tools, one epoch, LoRA on layers 9-17):
            # 25 steps of 16 rows at 3e-4 left the selector at the most frequent tool (train 0.38);
            # 80 steps of 8 rows at 2e-4 on twice the requests learnt it (train 0.82). LoRA on the
            # upper half of the layers: backpropagation stops there, and a step costs half.
            lora = LoraSettings(r=16, alpha=32, learning_rate=2e-4, epochs=1.0, min_steps=6, batch_size=8, bf16=True,
                                layers=(9, 18))
            # A small toolset's one epoch is too short for the choice: the clock's selector (96
            # examples, 12 steps) chose get_current_time for every request (held-out 0.63);
            # 48 steps learnt it (0.73).
            selector = replace(lora, min_steps=48)
            # A tool's arguments: a few dozen short examples, learnt to the copy in a few steps.
            arguments = replace(lora, learning_rate=5e-4, min_steps=6)
            quick = cls(examples_per_tool=16, test_size=20, lora=lora, selector=selector, arguments=arguments)
            return replace(quick, **overrides)
        # The tiny random model. rsLoRA scales updates by alpha/sqrt(r) = 8: at 5e-3 the router only learned the class prior
        # (train accuracy 0.44); at 1e-3 it learns the request (train 0.80, held-out 0.72). Argument
        # adapters, with a few dozen steps each, still need 5e-3 to write well-formed values.
        lora = LoraSettings(r=16, alpha=32, learning_rate=1e-3, epochs=5.0, min_steps=30, batch_size=4)
        quick = cls(examples_per_tool=20, test_size=20, lora=lora, arguments=replace(lora, learning_rate=5e-3))
        return replace(quick, **overrides)


@dataclass
class DatasetBuild:
    toolset: Toolset
    fingerprint: str
    splits: dict[str, list[Trajectory]]
    rejected: Counter[str]
    path: Path
    hash: str
    counts: dict[str, int] = field(default_factory=dict)


def toolset_of(name: str, description: str | None, tools: list[Any]) -> Toolset:
    return Toolset(name, description or "", tuple(Tool(t.name, t.description or "", t.input_schema) for t in tools))


def stored_toolset(name: str, description: str | None, meta: dict[str, Any]) -> Toolset:
    """The toolset a stored dataset was built from (its meta.json lists the tools)."""
    tools = tuple(Tool(t["name"], t.get("description") or "", t["input_schema"]) for t in meta["tools"])
    return Toolset(name, description or "", tools)


def datasets_dir() -> Path:
    return agentflux_home() / "datasets"


async def build_dataset(registry: Registry, server: str, options: TrainOptions) -> DatasetBuild:
    """Discover, synthesize, execute, validate and split; the dataset is stored atomically."""
    entry = registry.config.servers[server]
    fixture = FixtureServer(registry, server, options.seed)
    async with fixture.running() as tools:
        toolset = toolset_of(server, entry.description, tools)
        fingerprint = tool_fingerprint([t.model_dump() for t in tools])
        if options.teacher is not None:
            from agentflux.trainer.teacher import teacher_trajectories

            trajectories, teacher_rejections = await teacher_trajectories(fixture, toolset, options)
        else:
            plans = synthesize(toolset, fixture.env, options.examples_per_tool, options.seed, root=fixture.served_root)
            trajectories = await _execute(fixture, plans, f"{server}: executing requests", options)
            teacher_rejections = Counter()
    # The held-out set: phrasings (and, for a server granted a folder, a fixture world) that the
    # training data never uses, so its figures measure generalization, not recall.
    heldout_fixture = FixtureServer(registry, server, options.seed + 1, world="heldout")
    async with heldout_fixture.running():
        per_tool = max(1, -(-options.test_size // max(1, len(toolset.tools))))
        plans = synthesize(toolset, heldout_fixture.env, per_tool, options.seed + 1, root=heldout_fixture.served_root,
                           heldout=True)  # fmt: skip
        heldout = await _execute(heldout_fixture, plans, f"{server}: executing held-out requests", options)
    kept, rejected = data.validate(trajectories, toolset)
    rejected.update(teacher_rejections)
    splits = data.split(kept, options.seed, options.test_size, heldout=data.validate(heldout, toolset)[0])
    digest = data.dataset_hash(splits)
    source = "teacher" if options.teacher else "template"
    path = datasets_dir() / server / f"{fingerprint}-{source}-seed{options.seed}-n{options.examples_per_tool}"
    counts = {name: len(rows) for name, rows in splits.items()} | {"synthesized": len(trajectories), "rejected": sum(rejected.values())}
    counts["unexecuted"] = sum(1 for rows in splits.values() for t in rows if not t.executed)
    meta = {"server": server, "fingerprint": fingerprint, "source": source, "seed": options.seed, "hash": digest,
            "counts": counts, "rejected": dict(rejected), "tools": [t.model_dump(mode="json") for t in tools]}
    data.save(splits, path, meta)
    return DatasetBuild(toolset, fingerprint, splits, rejected, path, digest, counts)


async def _execute(fixture: FixtureServer, plans: list, stage: str, options: TrainOptions) -> list[Trajectory]:
    from tqdm.auto import tqdm

    with tqdm(total=len(plans), desc=stage, disable=not options.progress) as bar:

        def advance(done: int) -> None:
            bar.update(done)
            _report(options, stage, bar.n, len(plans))

        return await collect(fixture, plans, advance)


async def _discover(registry: Registry, server: str, seed: int) -> str:
    """The fingerprint of the tools the server lists now."""
    async with FixtureServer(registry, server, seed).running() as tools:
        return tool_fingerprint([t.model_dump() for t in tools])


def training_inputs(registry: Registry, server: str, fingerprint: str, options: TrainOptions) -> str:
    """A hash of everything a training run reads: equal hashes give equal adapters."""
    teacher = options.teacher and (options.teacher.url, options.teacher.model)
    others = sorted((name, meta["fingerprint"]) for name, (_, meta) in _datasets(registry, exclude=server).items())
    record = {
        "fingerprint": fingerprint, "description": registry.config.servers[server].description, "seed": options.seed,
        "examples_per_tool": options.examples_per_tool, "test_size": options.test_size, "teacher": teacher,
        "mode": options.mode, "lora": options.lora.as_dict(),
        "selector": options.selector and options.selector.as_dict(),
        "arguments": options.arguments and options.arguments.as_dict(),
        "chat_format": model_format(registry.config.model, model_path(registry.config.model, registry.base_dir)).name,
        "version": __version__, "foreign": others,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _folder(tool: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tool)


def train_server(registry: Registry, server: str, options: TrainOptions) -> Path:
    """Train the server's adapters unless they are up to date, then the router; returns their folder."""
    if server not in registry.config.servers:
        raise KeyError(f"no server {server!r} in {registry.path}; known: {', '.join(registry.config.servers)}")
    settings = registry.config.model
    base = model_path(settings, registry.base_dir)
    store = AdapterStore()
    base_id = base_model_id(base)
    fingerprint = anyio.run(_discover, registry, server, options.seed)
    inputs = training_inputs(registry, server, fingerprint, options)
    published = store.find(base_id, server, fingerprint)
    if published is not None and published.inputs == inputs:
        # Training is seeded: the same tools, description, data settings and hyperparameters give
        # the same adapters again (executed data differs only in timestamps).
        logger.info("%s: adapters are up to date (same tools, settings and data sources); nothing to train", server)
        _report(options, f"{server}: adapters up to date", 1, 1)
        final = store.directory(base_id, server, fingerprint)
    else:
        final = _train_adapters(registry, server, options, store, base, base_id, inputs)
    if settings.router == "adapter" and options.router:
        train_router(registry, options)
    return final


def _train_adapters(registry: Registry, server: str, options: TrainOptions, store: AdapterStore, base: str,
                    base_id: str, inputs: str) -> Path:
    """Build the dataset, train every adapter the mode needs, evaluate, publish; returns the folder."""
    from transformers import AutoTokenizer

    settings = registry.config.model
    build = anyio.run(build_dataset, registry, server, options)
    if not build.splits["train"]:
        raise RuntimeError(f"no usable training data for {server!r}; rejected: {dict(build.rejected)}")
    fmt = model_format(settings, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    staging = store.staging(base_id, server, build.fingerprint, build.hash)
    train = build.splits["train"]
    manifest = Manifest(
        server=server, fingerprint=build.fingerprint, base_model=base, base_model_id=base_id, mode=options.mode,
        dataset_hash=build.hash, inputs=inputs, counts=build.counts, agentflux_version=__version__,
        hyperparameters=options.lora.as_dict() | {"examples_per_tool": options.examples_per_tool, "seed": options.seed,
                                                  "selector": (options.selector or options.lora).as_dict(),
                                                  "arguments": (options.arguments or options.lora).as_dict()},
    )
    # (folder, description, examples, settings) for every adapter this mode needs, examples built lazily.
    jobs: list[tuple[str, str, Callable[[], list], LoraSettings]] = []
    arguments_lora = options.arguments or options.lora
    if options.mode in ("decoupled", "both"):
        foreign = [t for other, (path, _) in _datasets(registry, exclude=server).items() for t in data.load(path)["train"]]
        jobs.append(("selector", f"{server} selector",
                     lambda: examples.selector_examples(fmt, build.toolset, train, tokenizer, foreign),
                     options.selector or options.lora))
        manifest.selector = "selector"
        for tool, items in sorted(examples.argument_examples(fmt, build.toolset, train, tokenizer).items()):
            folder = f"tools/{_folder(tool)}"
            jobs.append((folder, f"{server}.{tool} arguments", lambda items=items: items, arguments_lora))
            manifest.tools[tool] = folder
    if options.mode in ("traditional", "both"):
        jobs.append(("traditional", f"{server} traditional",
                     lambda: examples.traditional_examples(fmt, build.toolset, train, tokenizer), options.lora))
        manifest.traditional = "traditional"
    for number, (folder, description, build_examples, lora) in enumerate(jobs, 1):
        target = staging / folder
        if target.exists():
            logger.info("%s: kept from an interrupted run on the same data", description)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = f"adapter {number}/{len(jobs)}: {description}"
        train_adapter(base, examples.tokenized(tokenizer, build_examples()), target, lora, description=description,
                      progress=options.progress, on_step=lambda done, total: _report(options, stage, done, total))
    if options.evaluate and build.splits["test"]:
        _report(options, f"{server}: evaluating on {len(build.splits['test'])} held-out tasks", 0, 1)
        metrics = anyio.run(_evaluate_all, registry, staging, manifest, build.toolset, build.splits["test"])
        manifest.metrics = {"test_trajectories": len(build.splits["test"])} | metrics
    return store.publish(staging, manifest)


async def _evaluate_all(registry: Registry, folder: Path, manifest: Manifest, toolset: Toolset,
                        tests: list[Trajectory]) -> dict[str, Any]:
    """Every system the adapter set allows (ablations.py), on the held-out test set."""
    settings = registry.config.model
    base = model_path(settings, registry.base_dir)
    backend = _evaluation_backend(base)
    try:
        return await evaluate_systems(backend, model_format(settings, base), toolset, tests, folder, manifest)
    finally:
        await backend.aclose()


def evaluate_server(registry: Registry, server: str, out: Path | None = None) -> Path:
    """`agentflux eval`: the newest adapters of `server` against the base and the ablations, on
    the held-out test set of the dataset they were trained on; returns the results folder."""
    base = model_path(registry.config.model, registry.base_dir)
    base_id = base_model_id(base)
    store = AdapterStore()
    manifests = store.manifests(server, base_id)
    if not manifests:
        raise RuntimeError(f"no adapters for {server!r} on {base}: run `agentflux train --server {server}` first")
    manifest = manifests[0]
    folder = store.directory(base_id, server, manifest.fingerprint)
    found = [(p, meta) for p, meta in _stored_datasets(server) if meta["hash"] == manifest.dataset_hash]
    if not found:
        raise RuntimeError(f"the dataset {manifest.dataset_hash} that {folder} was trained on is gone; retrain to evaluate")
    path, meta = found[0]
    tests = data.load(path)["test"]
    if not tests:
        raise RuntimeError(f"the dataset {path} has no test split to evaluate on")
    entry = registry.config.servers.get(server)
    toolset = stored_toolset(server, entry.description if entry else None, meta)
    results = anyio.run(_evaluate_all, registry, folder, manifest, toolset, tests)
    record = {"base_model": base, "base_model_id": base_id, "adapters": str(folder), "fingerprint": manifest.fingerprint,
              "mode": manifest.mode, "dataset": str(path), "dataset_hash": manifest.dataset_hash, "seed": meta["seed"],
              "hyperparameters": manifest.hyperparameters, "agentflux_version": __version__}  # fmt: skip
    return write_results(out or results_dir(server), server, results, record, len(tests))


def results_dir(server: str) -> Path:
    """Where `agentflux eval` writes by default: one folder per run."""
    from datetime import UTC, datetime

    return agentflux_home() / "results" / server / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def train_router(registry: Registry, options: TrainOptions) -> Path | None:
    """Retrain the router over every registered toolset that has a dataset (small base models only)."""
    from transformers import AutoTokenizer

    settings = registry.config.model
    base = model_path(settings, registry.base_dir)
    toolsets, trajectories, keys = [], {}, []
    for server, (path, meta) in _datasets(registry).items():
        toolsets.append(stored_toolset(server, registry.config.servers[server].description, meta))
        trajectories[server] = data.load(path)["train"]
        description = registry.config.servers[server].description or ""
        keys.append(f"{server}:{meta['fingerprint']}:{hashlib.sha256(description.encode()).hexdigest()[:8]}")
    if not toolsets:
        return None
    store = AdapterStore()
    base_id = base_model_id(base)
    fingerprint = hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()[:16]
    published = store.find(base_id, ROUTER, fingerprint)
    if published and published.hyperparameters == options.lora.as_dict():
        logger.info("router: up to date for %s", ", ".join(sorted(keys)))
        return store.directory(base_id, ROUTER, fingerprint)
    fmt = model_format(settings, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    routed = examples.tokenized(tokenizer, examples.router_examples(fmt, toolsets, trajectories, tokenizer))
    staging = store.staging(base_id, ROUTER, fingerprint, fingerprint)
    train_adapter(base, routed, staging / "router", options.lora, description="router", progress=options.progress,
                  on_step=lambda done, total: _report(options, "router", done, total))
    manifest = Manifest(
        server=ROUTER, fingerprint=fingerprint, base_model=base, base_model_id=base_id, mode="router", selector="router",
        toolsets=[t.name for t in toolsets], dataset_hash=fingerprint, counts={"examples": len(routed)},
        hyperparameters=options.lora.as_dict(), agentflux_version=__version__,
    )
    if options.evaluate:
        # The measurement behind `model.router`: the base model zero-shot against the adapter.
        _report(options, "router: evaluating on the held-out tasks", 0, 1)
        tests = {server: data.load(path)["test"] for server, (path, _) in _datasets(registry).items()}
        manifest.metrics = anyio.run(_evaluate_router, base, fmt, toolsets, tests, staging / "router")
    return store.publish(staging, manifest)


def _evaluation_backend(base: str) -> Any:
    """The base model as serving loads it (its dtype), for held-out measurements."""
    from agentflux.proxy.backends.hf import TransformersBackend

    return TransformersBackend(base, dtype=resolve_dtype("auto", base), max_json_tokens=96)


async def _evaluate_router(base: str, fmt: Any, toolsets: list[Toolset], tests: dict[str, list[Trajectory]],
                           folder: Path) -> dict[str, Any]:
    from agentflux.trainer.evaluate import routing

    backend = _evaluation_backend(base)
    try:
        await backend.load_adapter("router", folder)
        return {"base": await routing(backend, fmt, toolsets, tests, None),
                "adapter": await routing(backend, fmt, toolsets, tests, "router"),
                "test_trajectories": sum(len(t) for t in tests.values())}  # fmt: skip
    finally:
        await backend.aclose()


def _report(options: TrainOptions, stage: str, done: int, total: int) -> None:
    if options.on_progress is not None:
        options.on_progress(stage, done, total)


def _datasets(registry: Registry, exclude: str | None = None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The latest dataset of each registered server that has one (but `exclude`)."""
    found = {}
    for server in registry.config.servers:
        if server != exclude and (latest := _latest_dataset(server)) is not None:
            found[server] = latest
    return found


def _stored_datasets(server: str) -> list[tuple[Path, dict[str, Any]]]:
    """The server's complete datasets, newest first."""
    found = [p for p in (datasets_dir() / server).glob("*") if (p / "meta.json").exists() and not p.name.endswith(".partial")]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [(p, json.loads((p / "meta.json").read_text(encoding="utf-8"))) for p in found]


def _latest_dataset(server: str) -> tuple[Path, dict[str, Any]] | None:
    stored = _stored_datasets(server)
    return stored[0] if stored else None
