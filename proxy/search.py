"""Ranking tools against a free-text query, for the `search_tools` surface.

BM25 over the words of each tool's name and description (names split on `_`, `-` and
camelCase, so `list_directory` matches "list the directory"). A query term that also
appears in the server name counts too, so "notion search" finds Notion's search tool.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_K1, _B = 1.2, 0.75


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class Document:
    key: str
    text: str


class SearchIndex:
    def __init__(self, documents: list[Document]) -> None:
        self._keys = [doc.key for doc in documents]
        self._counts = [Counter(words(doc.text)) for doc in documents]
        self._lengths = [sum(c.values()) for c in self._counts]
        self._average = sum(self._lengths) / len(self._lengths) if documents else 0.0
        frequency: Counter[str] = Counter()
        for counts in self._counts:
            frequency.update(counts.keys())
        total = len(documents)
        self._idf = {term: math.log(1 + (total - n + 0.5) / (n + 0.5)) for term, n in frequency.items()}

    def search(self, query: str, limit: int) -> list[tuple[str, float]]:
        terms = words(query)
        scored = []
        for key, counts, length in zip(self._keys, self._counts, self._lengths, strict=True):
            score = 0.0
            for term in terms:
                tf = counts.get(term, 0)
                if tf:
                    norm = tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / (self._average or 1)))
                    score += self._idf[term] * norm
            if score > 0:
                scored.append((key, score))
        scored.sort(key=lambda item: (-item[1], item[0]))
        return scored[:limit]
