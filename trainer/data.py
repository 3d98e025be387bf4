"""Validation, splits and storage of trajectories as Hugging Face datasets.

Validation keeps a trajectory only if every call names a tool of the server, its arguments
validate against the tool's schema (required keys, types, and no key the schema does not
declare), every executed call succeeded, the request is not a duplicate, and it fits the
length limits; every rejection is counted by reason. The test split is balanced across tools
and drawn first; the rest is split 80/20 into train and validation, or all of it trains when
the test set comes from a held-out world (validation is then empty). Everything is a function
of the seed, and datasets are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jsonschema

from agentflux.proxy.protocol import Toolset
from agentflux.registry.secrets import REDACTOR
from agentflux.trainer.collect import StepRecord, Trajectory

MAX_QUERY_CHARS = 600
MAX_STEPS = 8


def validate(trajectories: list[Trajectory], toolset: Toolset) -> tuple[list[Trajectory], Counter[str]]:
    """The trajectories worth training on, and how many were rejected for what."""
    schemas = {tool.name: tool.parameters for tool in toolset.tools}
    kept: list[Trajectory] = []
    rejected: Counter[str] = Counter()
    seen: set[str] = set()
    for trajectory in trajectories:
        reason = trajectory.rejected or _problem(trajectory, schemas)
        if reason is None and trajectory.query.strip().lower() in seen:
            reason = "duplicate request"
        if reason is not None:
            rejected[reason.split(":")[0]] += 1
            continue
        seen.add(trajectory.query.strip().lower())
        kept.append(trajectory)
    return kept, rejected


def _problem(trajectory: Trajectory, schemas: dict[str, dict[str, Any]]) -> str | None:
    if not trajectory.query.strip():
        return "empty request"
    if len(trajectory.query) > MAX_QUERY_CHARS:
        return "request too long"
    if not trajectory.steps or len(trajectory.steps) > MAX_STEPS:
        return "too many or no steps"
    for step in trajectory.steps:
        if step.tool not in schemas:
            return f"unknown tool: {step.tool}"
        schema = schemas[step.tool]
        unexpected = set(step.arguments) - set(schema.get("properties") or {})
        if unexpected:
            return f"unexpected argument: {', '.join(sorted(unexpected))}"
        try:
            jsonschema.validate(step.arguments, schema)
        except jsonschema.ValidationError as exc:
            return f"arguments do not match the schema: {exc.message[:120]}"
        if not step.ok:
            return "execution failed"
    return None


def split(
    trajectories: list[Trajectory], seed: int, test_size: int, heldout: list[Trajectory] | None = None
) -> dict[str, list[Trajectory]]:
    """train/validation 80/20, plus a test set of up to `test_size` balanced across tools.

    With `heldout` (trajectories from phrasings and a world training never sees), the test set
    is drawn from those, every tool and every multi-step kind in turn, and all of
    `trajectories` is left for training. Without it, the test set takes single steps out of
    `trajectories` (at most a fifth of them)."""
    rng = random.Random(seed)
    pool = heldout if heldout is not None else trajectories
    by_group: dict[str, list[Trajectory]] = defaultdict(list)
    for trajectory in pool:
        if len(trajectory.steps) == 1:
            by_group[trajectory.steps[0].tool].append(trajectory)
        elif heldout is not None:
            by_group[trajectory.kind].append(trajectory)
    for group in by_group.values():
        rng.shuffle(group)
    test: list[Trajectory] = []
    # From the training data itself, a small dataset keeps most of its examples: a tool keeps at
    # least two, and the test set takes at most a fifth.
    keep = 0 if heldout is not None else 2
    test_size = test_size if heldout is not None else min(test_size, len(trajectories) // 5)
    # Round-robin so every tool is represented before any gets a second example.
    while len(test) < test_size and any(len(g) > keep for g in by_group.values()):
        for name in sorted(by_group):
            if len(test) < test_size and len(by_group[name]) > keep:
                test.append(by_group[name].pop())
    chosen = {id(t) for t in test}
    rest = [t for t in trajectories if id(t) not in chosen]
    rng.shuffle(rest)
    # With a held-out test set from another world, validation would only withhold examples
    # that a few-shot recipe needs: everything trains.
    cut = len(rest) if heldout is not None else int(round(len(rest) * 0.8))
    return {"train": rest[:cut], "validation": rest[cut:], "test": test}


def to_rows(trajectories: list[Trajectory]) -> list[dict[str, Any]]:
    # Steps are stored as one JSON string: Arrow would otherwise merge every tool's argument
    # keys into one struct and fill each row with nulls. A secret a server echoed back (its
    # token in an error, say) is masked before anything reaches the disk.
    return [
        {
            "query": REDACTOR.redact(t.query),
            "server": t.server,
            "steps": REDACTOR.redact(json.dumps([s.__dict__ for s in t.steps], ensure_ascii=False)),
            "kind": t.kind,
            "style": t.style,
            "source": t.source,
            "executed": t.executed,
        }
        for t in trajectories
    ]


def from_rows(rows: Any) -> list[Trajectory]:
    return [
        Trajectory(
            row["query"],
            row["server"],
            [StepRecord(**step) for step in json.loads(row["steps"])],
            row["kind"],
            row["style"],
            row["source"],
            row["executed"],
        )
        for row in rows
    ]


def dataset_hash(splits: dict[str, list[Trajectory]]) -> str:
    digest = hashlib.sha256()
    for name in sorted(splits):
        digest.update(name.encode())
        digest.update(json.dumps(to_rows(splits[name]), sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def save(splits: dict[str, list[Trajectory]], path: Path, meta: dict[str, Any]) -> Path:
    """Write the splits as a `datasets.DatasetDict` (plus meta.json), atomically."""
    from datasets import Dataset, DatasetDict, Features, Value

    # Explicit types, so that an empty split (a teacher whose output was all rejected) is still a valid dataset.
    features = Features({"query": Value("string"), "server": Value("string"), "steps": Value("string"),
                         "kind": Value("string"), "style": Value("string"), "source": Value("string"),
                         "executed": Value("bool")})  # fmt: skip
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    columns = {name: [] for name in features}
    dataset = DatasetDict({
        name: Dataset.from_list(to_rows(rows), features=features) if rows else Dataset.from_dict(columns, features=features)
        for name, rows in splits.items()
    })  # fmt: skip
    dataset.save_to_disk(str(partial), num_shards={name: 1 for name in splits})
    (partial / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)
    return path


def load(path: Path) -> dict[str, list[Trajectory]]:
    from datasets import load_from_disk

    loaded = load_from_disk(str(path))
    return {name: from_rows(loaded[name]) for name in loaded}
