"""Key/value states of recent prompts, reused by the next prompt that opens the same way.

Every prompt to a toolset opens with the same system text and tool list, and step n+1's
prompt is step n's with one more call and result: a model call that finds the longest cached
prefix of its tokens prefills only the tokens after it (what vLLM calls automatic prefix
caching). An entry keeps every layer's states whole, including the sliding-window layers that
a model's own cache crops to its window: a cropped layer cannot give back a shorter prefix,
while a whole one gives any prefix exactly, by slicing.

Entries are per adapter (an adapter changes the states of the layers it adapts) and bounded in
bytes, least recently used first out. An entry that a newer one extends is dropped, since the
newer one holds every prefix it held.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_BYTES = 512 * 2**20


@dataclass
class _Entry:
    adapter: str | None
    ids: Any  # 1-D LongTensor
    layers: list[tuple[Any, Any]]  # per layer (keys, values): [1, heads, tokens, head_dim]
    nbytes: int


@dataclass
class PrefixStats:
    lookups: int = 0
    hits: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "lookups": self.lookups,
            "hit_rate": round(self.hits / self.lookups, 4) if self.lookups else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "prefilled_tokens": self.prompt_tokens - self.reused_tokens,
            "prefilled_share": round(1 - self.reused_tokens / self.prompt_tokens, 4) if self.prompt_tokens else 0.0,
        }


@dataclass
class PrefixCache:
    max_bytes: int = DEFAULT_BYTES
    min_tokens: int = 8  # a shorter match saves less than the copy costs
    stats: PrefixStats = field(default_factory=PrefixStats)
    _entries: OrderedDict[int, _Entry] = field(default_factory=OrderedDict)
    _next_key: int = 0

    def lookup(self, adapter: str | None, ids: list[int]) -> tuple[int, Any]:
        """A fresh cache holding the longest cached prefix of `ids` (at most all but the last
        token, whose logits the caller needs), and that prefix's length."""
        import torch
        from transformers import DynamicCache

        query = torch.tensor(ids)
        best, best_key = 0, None
        for key, entry in self._entries.items():
            if entry.adapter != adapter:
                continue
            length = _common_prefix(entry.ids, query)
            if length > best:
                best, best_key = length, key
        best = min(best, len(ids) - 1)
        self.stats.lookups += 1
        self.stats.prompt_tokens += len(ids)
        # Built without the model's config: every layer then keeps all its states (see above).
        cache = DynamicCache()
        if best_key is None or best < self.min_tokens:
            return 0, cache
        entry = self._entries[best_key]
        self._entries.move_to_end(best_key)
        for index, (keys, values) in enumerate(entry.layers):
            cache.update(keys[:, :, :best], values[:, :, :best], index)
        self.stats.hits += 1
        self.stats.reused_tokens += best
        return best, cache

    def store(self, adapter: str | None, ids: list[int], cache: Any) -> None:
        """Keep the states of `cache`, which hold the first tokens of `ids`."""
        import torch

        layers = [(layer.keys, layer.values) for layer in cache.layers]
        length = layers[0][0].shape[2] if layers else 0
        if length < self.min_tokens or any(k.shape[0] != 1 or k.shape[2] != length for k, _ in layers):
            return  # a batched or cropped cache (not one this class built): nothing reusable
        stored = torch.tensor(ids[:length])
        for key in [k for k, e in self._entries.items() if e.adapter == adapter and _extends(stored, e.ids)]:
            del self._entries[key]
        nbytes = sum(k.nbytes + v.nbytes for k, v in layers)
        if nbytes > self.max_bytes:
            return
        self._entries[self._next_key] = _Entry(adapter, stored, layers, nbytes)
        self._next_key += 1
        while self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    def forget(self, adapter: str | None) -> None:
        """Drop the entries of `adapter` (it was reloaded or unloaded)."""
        for key in [k for k, e in self._entries.items() if e.adapter == adapter]:
            del self._entries[key]

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def _common_prefix(a: Any, b: Any) -> int:
    n = min(len(a), len(b))
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def _extends(longer: Any, shorter: Any) -> bool:
    return len(longer) >= len(shorter) and _common_prefix(longer, shorter) == len(shorter)
