"""Model runtimes: one small interface, three implementations with identical greedy semantics.

- `choose(prompt, candidates, adapter)`: the candidate continuation with the highest total
  log-probability after the prompt (exact scoring, not sampling); ties go to the first.
- `generate_json(prompt, schema, adapter)`: greedy decoding constrained by a grammar of
  `protocol.JSON_LEAD` + JSON valid for the schema, in Qwen's separators; validated again
  with jsonschema. Raises `GenerationError` when the model does not finish in bounds.
- `generate_text(prompt, adapter, max_tokens)`: greedy free text, up to `max_tokens`.

`adapter=None` is the base model. Prompts are token ids of `protocol.encode`, so every
backend sees the same tokens that training saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


def best_candidate(candidates: list[str], scores: list[float]) -> str:
    """The highest-scoring candidate; the first of equals, so every backend breaks ties alike."""
    return candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))]


class GenerationError(Exception):
    """The model could not produce a valid answer within its bounds; the message says why."""


class Backend(Protocol):
    tokenizer: Any

    async def scores(self, prompt: str, candidates: list[str], adapter: str | None) -> list[float]: ...

    async def choose(self, prompt: str, candidates: list[str], adapter: str | None) -> str: ...

    async def generate_json(self, prompt: str, schema: dict[str, Any], adapter: str | None) -> Any: ...

    async def generate_text(self, prompt: str, adapter: str | None, max_tokens: int) -> str: ...

    async def load_adapter(self, name: str, path: Path) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    def adapters(self) -> set[str]: ...

    async def aclose(self) -> None: ...
