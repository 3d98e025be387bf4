"""Greedy decoding under a grammar, with the text the grammar forces drafted ahead.

Most of a call's arguments is text the grammar forces: ` {"`, each key in the schema's order,
`": "`, `", "`, `"}`. Decoding it a token at a time costs one model forward per token, and on
a CPU a forward of one token costs about as much as a forward of a dozen (both read every
weight once). So after each token the model chooses, the text the grammar forces next
(xgrammar's jump-forward string) is tokenized and runs in the same forward as a draft. A
drafted token is kept only where the model's own grammar-masked greedy choice at its position
is that very token: the result is token-by-token greedy decoding exactly (speculative decoding,
with the grammar as the draft model). At the first mismatch the model's choice takes over and
the cache drops the rest of the draft.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Forced runs are keys and punctuation; longer ones are rare and their tail is drafted next time.
MAX_DRAFT = 16


@dataclass
class DecodeStats:
    tokens: int = 0  # tokens decoded, stop tokens included
    forwards: int = 0  # model forwards after the prompt's
    drafted: int = 0  # tokens that came from a draft the model confirmed

    def as_dict(self) -> dict[str, float]:
        return {"tokens": self.tokens, "forwards": self.forwards, "drafted": self.drafted,
                "tokens_per_forward": round(self.tokens / self.forwards, 3) if self.forwards else 0.0}  # fmt: skip


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # without the stop token
    finished: bool  # a stop token ended them (else `max_tokens` did)


def greedy(
    matcher: Any,
    first: Any,
    run: Callable[[list[int]], Any],
    drop: Callable[[int], None],
    tokenize: Callable[[str], list[int]],
    max_tokens: int,
    *,
    max_draft: int = MAX_DRAFT,
    stats: DecodeStats | None = None,
) -> Decoded:
    """Greedy tokens that `matcher` (an xgrammar GrammarMatcher) accepts.

    `first` holds the logits of the token after the prompt; `run(ids)` feeds tokens to the model
    (its cache grows by them) and returns the logits at each of their positions; `drop(n)` takes
    the last `n` tokens back out of the cache. `max_draft=0` decodes a token per forward."""
    import torch
    import xgrammar as xgr

    stats = stats if stats is not None else DecodeStats()
    bitmask = xgr.allocate_token_bitmask(1, first.shape[-1])

    def choose(logits: Any) -> int:
        matcher.fill_next_token_bitmask(bitmask)
        masked = logits.float().reshape(1, -1).clone()
        xgr.apply_token_bitmask_inplace(masked, bitmask)
        token = int(torch.argmax(masked[0]))
        if not matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token}, which its own mask allowed")
        stats.tokens += 1
        return token

    tokens: list[int] = []
    choice = choose(first)
    while True:
        # Here the cache holds the prompt and every token but `choice`.
        tokens.append(choice)
        if matcher.is_terminated():
            return Decoded(tokens[:-1], True)
        if len(tokens) >= max_tokens:
            return Decoded(tokens, False)
        room = min(max_draft, max_tokens - len(tokens) - 1)
        draft = tokenize(matcher.find_jump_forward_string())[:room] if room > 0 else []
        rows = run([choice, *draft])
        stats.forwards += 1
        for index, drafted in enumerate(draft):
            choice = choose(rows[index])
            if choice != drafted:
                drop(len(draft) - index)
                break
            tokens.append(choice)
            stats.drafted += 1
        else:
            choice = choose(rows[len(draft)])
