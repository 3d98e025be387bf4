"""`agentflux train`, `agentflux eval` and `agentflux data synth`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from agentflux.registry.cli import add_registry_argument, command_group, load_or_report


def _options(args: argparse.Namespace, registry):  # type: ignore[no-untyped-def]
    from agentflux.proxy.backends.factory import model_path
    from agentflux.proxy.tiny_model import is_tiny
    from agentflux.trainer.pipeline import TeacherSettings, TrainOptions

    tiny = is_tiny(model_path(registry.config.model, registry.base_dir))
    options = TrainOptions.quick(tiny=tiny) if args.quick else TrainOptions.standard(tiny=tiny)
    # `data synth` shares these options but trains no router.
    overrides = {"mode": args.mode, "seed": args.seed, "progress": not args.no_progress,
                 "router": getattr(args, "router", True)}
    if args.progress_json:
        overrides["on_progress"] = _print_progress
    if args.examples_per_tool:
        overrides["examples_per_tool"] = args.examples_per_tool
    if args.teacher_url:
        if not args.teacher_model:
            raise SystemExit("--teacher-url needs --teacher-model")
        overrides["teacher"] = TeacherSettings(args.teacher_url, args.teacher_model, _api_key(args.teacher_key_env))
    return replace(options, **overrides)


def _quiet_libraries() -> None:
    """Our bars show each stage; the datasets library's own (saving a split, building labels
    for every adapter) would add a dozen short-lived bars between them."""
    import datasets

    datasets.disable_progress_bars()


def _print_progress(stage: str, done: int, total: int) -> None:
    from agentflux.registry.jobs import progress_line

    print(progress_line(stage, done, total), flush=True)


def _train(args: argparse.Namespace) -> int:
    from agentflux.trainer.pipeline import train_server

    registry = load_or_report(args.registry)
    if registry is None:
        return 2
    _quiet_libraries()
    try:
        folder = train_server(registry, args.server, _options(args, registry))
    except (KeyError, RuntimeError) as exc:
        print(f"agentflux train: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"adapters for {args.server} in {folder}")
    print(json.dumps({"counts": manifest["counts"], "metrics": manifest["metrics"]}, indent=2))
    return 0


def _load_with_server(args: argparse.Namespace, command: str):
    """The registry and 0, or None and the exit status: 2 for an invalid registry, 1 when it lacks --server."""
    registry = load_or_report(args.registry)
    if registry is None:
        return None, 2
    if args.server not in registry.config.servers:
        print(f"agentflux {command}: no server {args.server!r} in {registry.path}", file=sys.stderr)
        return None, 1
    return registry, 0


def _api_key(variable: str | None) -> str | None:
    return os.environ.get(variable) if variable else None


def _synth(args: argparse.Namespace) -> int:
    import anyio

    from agentflux.trainer.pipeline import build_dataset

    registry, status = _load_with_server(args, "data synth")
    if registry is None:
        return status
    _quiet_libraries()
    build = anyio.run(build_dataset, registry, args.server, _options(args, registry))
    print(f"dataset for {args.server} in {build.path}")
    print(json.dumps({"counts": build.counts, "rejected": dict(build.rejected)}, indent=2))
    for trajectory in build.splits["train"][: args.show]:
        calls = " -> ".join(f"{s.tool}({json.dumps(s.arguments, ensure_ascii=False)})" for s in trajectory.steps)
        print(f"  {trajectory.query}\n      {calls}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from agentflux.trainer.pipeline import evaluate_server, results_dir

    registry, status = _load_with_server(args, "eval")
    if registry is None:
        return status
    if args.judge_url and not args.judge_model:
        raise SystemExit("--judge-url needs --judge-model")
    if args.teacher_url and not args.teacher_model:
        raise SystemExit("--teacher-url needs --teacher-model")
    if not args.tasks and (args.judge_url or args.teacher_url or not args.held_out):
        raise SystemExit("--judge-url, --teacher-url and --no-held-out apply to the task benchmark: add --tasks N")
    out = args.out or results_dir(args.server)
    status = 0
    if args.held_out:
        try:
            evaluate_server(registry, args.server, out)
            print((out / "table.md").read_text(encoding="utf-8"))
        except RuntimeError as exc:
            print(f"agentflux eval: held-out set skipped: {exc}", file=sys.stderr)
            status = 1
    if args.tasks:
        try:
            print(_bench(args, registry, out))
        except (ValueError, RuntimeError) as exc:  # no folder to act on, no usable tools, a server that did not start
            print(f"agentflux eval: task benchmark skipped: {exc}", file=sys.stderr)
            status = 1
    print(f"results, provenance and charts in {out}")
    return status


def _bench(args: argparse.Namespace, registry, out: Path) -> str:
    import anyio
    from tqdm.auto import tqdm

    from agentflux.trainer.bench import run_benchmark, write_bench
    from agentflux.trainer.chat import ChatClient
    from agentflux.trainer.judge import Judge

    judge = teacher = None
    if args.judge_url:
        judge = Judge(args.judge_url, args.judge_model, _api_key(args.judge_key_env))
    if args.teacher_url:
        teacher = ChatClient(args.teacher_url, args.teacher_model, _api_key(args.teacher_key_env))
    with tqdm(desc=f"{args.server}: task benchmark", unit="run", disable=args.no_progress) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        async def main():
            try:
                return await run_benchmark(registry, args.server, args.tasks, args.seed, judge, teacher, on_progress=advance)
            finally:
                for client in (judge, teacher):
                    if client is not None:
                        await client.aclose()

        tasks, runs, provenance = anyio.run(main)
    return write_bench(out, args.server, tasks, runs, provenance)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="the registry entry to train")
    add_registry_argument(parser)
    parser.add_argument("--mode", choices=("decoupled", "traditional", "both"), default="decoupled")
    parser.add_argument("--examples-per-tool", type=int, help="requests synthesized per tool (default 40; with --quick 16, 20 on the tiny test model)")
    parser.add_argument("--teacher-url", help="an OpenAI-compatible API that writes requests and solves them")
    parser.add_argument("--teacher-model", help="the teacher's model name, e.g. gpt-5-mini")
    parser.add_argument("--teacher-key-env", default="OPENAI_API_KEY", help="environment variable with its API key")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small data and a short schedule (minutes on a CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--progress-json", action="store_true", help="progress as JSON lines on stdout (for job runners)")


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="synthesize data for a server and fine-tune its adapters")
    _common(train)
    train.add_argument("--no-router", dest="router", action="store_false",
                       help="leave the router for later (training several servers in a row: the router once, after the last)")
    train.set_defaults(handler=_train)
    evaluation = commands.add_parser(
        "eval", help="a server's adapters against the base and the ablations: held-out set and task benchmark"
    )
    evaluation.add_argument("--server", required=True, help="the registry entry to evaluate")
    add_registry_argument(evaluation)
    evaluation.add_argument("--out", type=Path, help="results folder (default: ~/.agentflux/results/<server>/<time>)")
    evaluation.add_argument("--no-held-out", dest="held_out", action="store_false", help="skip the held-out test set")
    evaluation.add_argument("--tasks", type=int, default=0,
                            help="also run this many generated multi-step tasks, explicit and fuzzed (servers granted a folder)")
    evaluation.add_argument("--seed", type=int, default=0, help="the task benchmark's workspace and tasks")
    evaluation.add_argument("--teacher-url", help="an OpenAI-compatible API that rewrites the fuzzed requests (appendix C)")
    evaluation.add_argument("--teacher-model", help="the teacher's model name")
    evaluation.add_argument("--teacher-key-env", default="OPENAI_API_KEY", help="environment variable with its API key")
    evaluation.add_argument("--judge-url", help="an OpenAI-compatible API that also scores ToolFit as an LLM judge")
    evaluation.add_argument("--judge-model", help="the judge's model name")
    evaluation.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable with its API key")
    evaluation.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluation.set_defaults(handler=_eval)
    group = command_group(commands, "data", "build and inspect training datasets")
    synth = group.add_parser("synth", help="synthesize and store a server's dataset without training")
    _common(synth)
    synth.add_argument("--show", type=int, default=5, help="print this many training examples")
    synth.set_defaults(handler=_synth)
