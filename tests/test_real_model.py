"""The embedded real model end to end: Gemma 3 270M (from PyPI) trained with quick settings on
the time server, then serving `do_task` over stdio to a real MCP client.

Sized for CI: one server with two tools, a few requests per tool, decoupled adapters plus the
router, and the selector's 48 steps at four rows instead of the quick recipe's eight (the fixture
took 644 s on a two-core CPU without AVX-512, a third of it the selector). The accuracy claims of
docs/evaluation.md come from `make demo` and `agentflux eval`, on every filesystem tool; this
test holds the chain to them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, StdioServerParameters

from conftest import PYTHON, TRAINED_TIME

# A guard, not a budget: CI machines differ by nearly three times in speed (docs/benchmarks.md).
pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def gemma_time(gemma_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from agentflux.registry.loader import load_registry
    from agentflux.registry.store import Manifest
    from agentflux.trainer.pipeline import TrainOptions, train_server

    home = tmp_path_factory.mktemp("gemma-home")
    previous = os.environ.get("AGENTFLUX_HOME")
    os.environ["AGENTFLUX_HOME"] = str(home)
    path = tmp_path_factory.mktemp("gemma-registry") / "registry.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"base": str(gemma_model), "router": "adapter"},
        "training": {"auto": False},
        "mcpServers": {"time": TRAINED_TIME},
    }))  # fmt: skip
    try:
        quick = TrainOptions.quick(examples_per_tool=10, test_size=10, progress=False)
        # Half the selector's rows: 231 s instead of 485 s here, held-out selection 0.81 instead
        # of 0.73 on this test's 26 steps (0.66 against 0.72 on 100 others: docs/evaluation.md).
        options = replace(quick, selector=replace(quick.selector, batch_size=4))
        folder = train_server(load_registry(path), "time", options)
        manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
        yield {"registry": path, "home": home, "manifest": manifest}
    finally:
        if previous is None:
            os.environ.pop("AGENTFLUX_HOME", None)
        else:
            os.environ["AGENTFLUX_HOME"] = previous


def test_gemma_adapters_beat_the_base_model_on_held_out_requests(gemma_time: dict[str, Any]) -> None:
    """Held out: phrasings and cities the training data never used. Measured at this size (10
    requests per tool, 48 selector steps of four rows): selection 0.81 against the base model's
    0.27 (0.73 with the recipe's eight rows); arguments always valid, exact 0.13
    against 0.06 at eight rows (a city never seen in training is often not mapped to its IANA
    zone: the limit docs/evaluation.md reports)."""
    metrics = gemma_time["manifest"].metrics
    base, decoupled = metrics["base"], metrics["decoupled"]
    assert metrics["test_trajectories"] >= 8
    assert decoupled["selection_accuracy"] >= 0.7 and decoupled["selection_accuracy"] >= base["selection_accuracy"] + 0.4, metrics
    assert decoupled["argument_schema_valid"] >= base["argument_schema_valid"], metrics


@pytest.mark.anyio
async def test_do_task_runs_the_real_model_over_stdio_with_its_trained_adapters(gemma_time: dict[str, Any]) -> None:
    """Every stage is answered by a trained adapter of the real model, and the answer holds what the
    tools returned. Whether the calls are right is the held-out evaluation's business: at this
    size the time server's selector is right 0.77 of the time, its arguments not yet (see
    docs/evaluation.md), so this test prints the calls rather than asserting them."""
    env = dict(os.environ) | {"AGENTFLUX_HOME": str(gemma_time["home"])}
    server = StdioServerParameters(command=PYTHON, args=["-m", "agentflux.proxy", "serve", "--registry",
                                                         str(gemma_time["registry"])], env=env)  # fmt: skip
    async with Client(server, mode="legacy") as client:
        for task in ("What time is it in Tokyo right now?", "If it's 9:30 in New York, what time is it in London?"):
            result = await client.call_tool("do_task", {"task": task, "max_steps": 3, "timeout_s": 120})
            outcome = result.structured_content
            assert not result.is_error and outcome, result
            assert outcome["router"] and outcome["steps"], outcome
            for step in outcome["steps"]:
                print(task, "->", step["tool"], step["arguments"], "error" if step["is_error"] else "ok")
                assert step["toolset"] == "time" and step["zero_shot"] == [], step
                assert all(step["adapters"][stage] for stage in ("route", "select", "arguments")), step
                if not step["is_error"]:
                    assert step["observation"] in outcome["summary"]  # the answer keeps every output whole
