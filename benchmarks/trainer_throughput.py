"""Data synthesis and training throughput on the tiny model, in one run.

    .venv/bin/python benchmarks/trainer_throughput.py [--per-tool 20] [--steps 40]

- synthesis: requests per second synthesized *and executed* against the sandboxed filesystem
  server (bubblewrap) on a fresh fixture copy each, then validated;
- training: examples per second through the LoRA trainer for a selector (prompts of ~700
  tokens) and an argument adapter (~400 tokens), with logits only where there is loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import yaml

ROOT = Path(__file__).resolve().parent.parent


def main(per_tool: int, steps: int) -> None:
    from transformers import AutoTokenizer

    from agentflux.proxy.protocol import Qwen25
    from agentflux.proxy.tiny_model import init_tiny
    from agentflux.proxy.vocab import fetch
    from agentflux.registry.loader import load_registry
    from agentflux.trainer import examples
    from agentflux.trainer.finetune import LoraSettings, train_adapter
    from agentflux.trainer.pipeline import TrainOptions, build_dataset

    work = Path(tempfile.mkdtemp(prefix="agentflux-trainer-bench-"))
    os.environ["AGENTFLUX_HOME"] = str(work / "home")
    model = init_tiny(ROOT / ".cache/tiny-model", 0, fetch(ROOT / ".cache/qwen2.5-vocab"))
    (work / "workspace").mkdir()
    entry = {
        "command": "node", "cwd": "workspace", "description": "Files.",
        "args": [str(ROOT / "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"), "."],
        "tools": {"allow": ["list_directory", "read_text_file", "search_files", "get_file_info"]},
        "sandbox": {"mounts": [{"path": "workspace", "mode": "rw"}]},
    }
    (work / "registry.yaml").write_text(yaml.safe_dump({"mcpServers": {"filesystem": entry}, "model": {"base": str(model)}}))
    registry = load_registry(work / "registry.yaml")

    began = time.perf_counter()
    build = anyio.run(build_dataset, registry, "filesystem", TrainOptions(examples_per_tool=per_tool, progress=False))
    seconds = time.perf_counter() - began
    synthesized = build.counts["synthesized"]

    tokenizer = AutoTokenizer.from_pretrained(model)
    fmt = Qwen25()
    train = build.splits["train"]
    selector = examples.tokenized(tokenizer, examples.selector_examples(fmt, build.toolset, train, tokenizer))
    by_tool = examples.argument_examples(fmt, build.toolset, train, tokenizer)
    arguments = examples.tokenized(tokenizer, by_tool["read_text_file"])
    settings = LoraSettings(r=16, alpha=32, max_steps=steps, batch_size=4)
    rows = []
    for name, items in (("selector", selector), ("arguments (read_text_file)", arguments)):
        length = sorted(len(ids) for ids, _ in items)[len(items) // 2]
        result = train_adapter(model, items, work / name.split()[0], settings, progress=False)
        rows.append((name, length, steps * settings.batch_size / result.seconds, result.seconds))

    print("| stage | figure |")
    print("|---|---|")
    print(f"| synthesis + sandboxed execution + validation | {synthesized / seconds:.1f} requests/s ({synthesized} in {seconds:.1f} s, {sum(build.rejected.values())} rejected) |")
    for name, length, rate, total in rows:
        print(f"| training {name}, {length} tokens p50 | {rate:.1f} examples/s ({steps} steps of 4 in {total:.1f} s, setup included) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-tool", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    sys.exit(main(args.per_tool, args.steps))
