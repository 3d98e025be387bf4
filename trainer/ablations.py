"""Ablations on a toolset's held-out test set: what decoupled fine-tuning buys, measured.

The systems compared on identical data (the paper's Table 2 and Figure 2, per toolset):

    base                                   no adapter answers anything
    traditional                            one adapter writes the whole call
    decoupled                              the selector picks the tool, per-tool adapters write arguments
    decoupled selector + traditional args  which half of the decoupling helps
    traditional selector + decoupled args

A system is evaluated only when the adapter set has what it needs (`--mode both` trains both).
`agentflux eval` writes the results as JSON (with the models, adapters, seed and data hash
they came from), a markdown table and a PNG chart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentflux.proxy.backends import Backend
from agentflux.proxy.protocol import ChatFormat, Toolset
from agentflux.registry.store import Manifest
from agentflux.trainer.collect import Trajectory
from agentflux.trainer.evaluate import arguments, selection

# name -> (what selects: "selector" | "traditional" | None, what writes arguments: "tools" | "traditional" | None)
SYSTEMS: dict[str, tuple[str | None, str | None]] = {
    "base": (None, None),
    "traditional": ("traditional", "traditional"),
    "decoupled": ("selector", "tools"),
    "decoupled selector + traditional args": ("selector", "traditional"),
    "traditional selector + decoupled args": ("traditional", "tools"),
}
METRICS = ("selection_accuracy", "argument_exact_match", "argument_schema_valid")


async def evaluate_systems(
    backend: Backend, fmt: ChatFormat, toolset: Toolset, tests: Sequence[Trajectory], folder: Path, manifest: Manifest
) -> dict[str, dict[str, float]]:
    """Every system the adapter set allows, on the same test trajectories."""
    loaded = {"selector": bool(manifest.selector), "tools": bool(manifest.tools), "traditional": bool(manifest.traditional)}
    if manifest.selector:
        await backend.load_adapter("selector", folder / manifest.selector)
        for tool, path in manifest.tools.items():
            await backend.load_adapter(f"tool:{tool}", folder / path)
    if manifest.traditional:
        await backend.load_adapter("traditional", folder / manifest.traditional)
    # Each half is measured once per adapter: the mixed systems combine halves already measured.
    selections: dict[str | None, dict[str, float]] = {}
    writings: dict[str | None, dict[str, float]] = {}
    results = {}
    for name, (selects, writes) in SYSTEMS.items():
        if any(part is not None and not loaded[part] for part in (selects, writes)):
            continue
        if selects not in selections:
            selections[selects] = await selection(backend, fmt, toolset, tests, selects)
        if writes not in writings:
            tools = {t.name: "traditional" if writes == "traditional" else f"tool:{t.name}" for t in toolset.tools}
            writings[writes] = await arguments(backend, fmt, toolset, tests, tools if writes else {})
        results[name] = selections[selects] | writings[writes]
    return results


def markdown_table(server: str, results: dict[str, dict[str, float]], tests: int) -> str:
    lines = [
        f"Held-out test set of `{server}`: {tests} tasks; selection counts every step, `summarize` included.",
        "",
        "| system | selection accuracy | arguments exact (BFCL) | arguments schema-valid |",
        "|---|---|---|---|",
    ]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[m]:.2f}" for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def plot(server: str, results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(results)
    for offset, (name, metrics) in enumerate(results.items()):
        positions = [index + offset * width for index in range(len(METRICS))]
        axes.bar(positions, [metrics[m] for m in METRICS], width, label=name)
    axes.set_xticks([index + 0.4 - width / 2 for index in range(len(METRICS))], [m.replace("_", " ") for m in METRICS])
    axes.set_ylim(0, 1)
    axes.set_ylabel("held-out accuracy")
    axes.set_title(f"{server}: base vs traditional vs decoupled fine-tuning")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(out: Path, server: str, results: dict[str, dict[str, float]], record: dict[str, Any], tests: int) -> Path:
    """results.json (figures and provenance), table.md and accuracy.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    document = record | {"server": server, "test_trajectories": tests, "results": results,
                         "created_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    (out / "results.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    (out / "table.md").write_text(markdown_table(server, results, tests), encoding="utf-8")
    plot(server, results, out / "accuracy.png")
    return out
