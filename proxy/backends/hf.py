"""transformers + peft: every adapter in one PeftModel, switched per call.

Runs anywhere torch does (CPU, Apple, CUDA). Calls are serialized on one worker thread: a
model holds one active adapter at a time, and a CPU has no spare cores to run two anyway.
Every call prefills only what follows the longest prompt prefix it has seen
(`prefix_cache.py`): a toolset's fixed prompt head once per adapter, and each step only the
call and result the previous step's prompt lacked.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import anyio

from agentflux.proxy.backends import GenerationError, best_candidate, constrained
from agentflux.proxy.backends.grammar import arguments_grammar, check_arguments
from agentflux.proxy.backends.prefix_cache import DEFAULT_BYTES, PrefixCache
from agentflux.proxy.protocol import encode, parse_arguments

logger = logging.getLogger(__name__)


class TransformersBackend:
    def __init__(
        self, model_path: str, *, dtype: str = "float32", device: str = "cpu", max_json_tokens: int = 512,
        prefix_cache_bytes: int = DEFAULT_BYTES, draft_tokens: int = constrained.MAX_DRAFT,
    ) -> None:  # fmt: skip
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto"
        self.base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(self.device).eval()
        self.model: Any = self.base  # becomes a PeftModel with the first adapter
        self.max_json_tokens = max_json_tokens
        self._adapters: dict[str, Path] = {}
        # One model call at a time, on a worker thread; a lock (not an anyio limiter) so the
        # backend can outlive one event loop.
        self._lock = threading.Lock()
        self._grammar_compiler: Any = None
        self.prefixes = PrefixCache(prefix_cache_bytes)
        # Arguments decode the grammar's forced text as drafts (`constrained.py`); 0 turns that off.
        self.draft_tokens = draft_tokens
        self.decoding = constrained.DecodeStats()
        self.eos_ids = _eos_ids(self.base, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]

    # -- adapters ---------------------------------------------------------------------------

    def _locked(self, function: Any, *args: Any) -> Any:
        with self._lock:
            return function(*args)

    def adapters(self) -> set[str]:
        return set(self._adapters)

    async def load_adapter(self, name: str, path: Path) -> None:
        await anyio.to_thread.run_sync(self._locked, self._load_adapter, name, path)

    def _load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        if name in self._adapters:
            self.model.delete_adapter(name)
        self.prefixes.forget(name)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=name).eval()
        self._adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        def unload() -> None:
            if self._adapters.pop(name, None) is not None:
                self.model.delete_adapter(name)
            self.prefixes.forget(name)

        await anyio.to_thread.run_sync(self._locked, unload)

    def _with_adapter(self, adapter: str | None) -> Any:
        """A context in which the model runs as `adapter` (None: the base model)."""
        from contextlib import nullcontext

        if adapter is None:
            return self.model.disable_adapter() if self._adapters else nullcontext()
        if adapter not in self._adapters:
            raise GenerationError(f"adapter {adapter!r} is not loaded")
        self.model.set_adapter(adapter)
        return nullcontext()

    # -- the interface ----------------------------------------------------------------------

    async def choose(self, prompt: str, candidates: list[str], adapter: str | None) -> str:
        return best_candidate(candidates, await self.scores(prompt, candidates, adapter))

    async def scores(self, prompt: str, candidates: list[str], adapter: str | None) -> list[float]:
        return await anyio.to_thread.run_sync(self._locked, self._scores, prompt, candidates, adapter)

    def _prefill(self, prompt_ids: list[int], adapter: str | None) -> tuple[Any, Any]:
        """The cache after the prompt, and the log-probabilities of the token that follows it.

        Only the tokens after the longest cached prefix run; the prompt's states are kept for
        the prompts that open the same way (the same toolset, the next step)."""
        torch = self._torch
        reused, cache = self.prefixes.lookup(adapter, prompt_ids)
        rest = torch.tensor([prompt_ids[reused:]], device=self.device)
        positions = torch.arange(reused, len(prompt_ids), device=self.device).unsqueeze(0)
        # The last position as an index tensor, not `logits_to_keep=1`: under peft, transformers'
        # slice of the hidden states sends the output layer down a path that copies its whole
        # weight (262k x 640 for Gemma, 0.75 s of a CPU call); an index makes a plain matmul.
        last = torch.tensor([len(prompt_ids) - reused - 1], device=self.device)
        output = self.model(
            input_ids=rest, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=last
        )
        self.prefixes.store(adapter, prompt_ids, cache)
        return cache, torch.log_softmax(output.logits[0, -1].float(), dim=-1)

    def _scores(self, prompt: str, candidates: list[str], adapter: str | None) -> list[float]:
        """Total log-probability of each candidate after the prompt.

        The prompt is prefilled once; its cache is repeated for every candidate, and all
        candidates (a few tokens each) go through in one batched forward.
        """
        torch = self._torch
        prompt_ids = encode(self.tokenizer, prompt)
        endings = [encode(self.tokenizer, candidate) for candidate in candidates]
        width = max(len(ending) for ending in endings)
        with torch.inference_mode(), self._with_adapter(adapter):
            cache, first = self._prefill(prompt_ids, adapter)
            cache.batch_repeat_interleave(len(endings))
            ids = torch.tensor([e + [self.pad_id] * (width - len(e)) for e in endings], device=self.device)
            mask = torch.tensor(
                [[1] * (len(prompt_ids) + len(e)) + [0] * (width - len(e)) for e in endings], device=self.device
            )
            positions = torch.arange(len(prompt_ids), len(prompt_ids) + width, device=self.device).expand(len(endings), -1)
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
            ).logits.float()
        following = torch.log_softmax(logits, dim=-1)
        scores = []
        for row, ending in enumerate(endings):
            # The prompt's last position predicts a candidate's first token; each candidate
            # position predicts the next one.
            total = first[ending[0]]
            for index, token in enumerate(ending[1:]):
                total = total + following[row, index, token]
            scores.append(float(total))
        return scores

    async def generate_json(self, prompt: str, schema: dict[str, Any], adapter: str | None) -> Any:
        text = await anyio.to_thread.run_sync(self._locked, self._generate_json, prompt, schema, adapter)
        value = parse_arguments(text)
        check_arguments(value, schema)
        return value

    def _generate_json(self, prompt: str, schema: dict[str, Any], adapter: str | None) -> str:
        import xgrammar as xgr

        torch = self._torch
        matcher = xgr.GrammarMatcher(self._compiler().compile_grammar(arguments_grammar(schema)))
        prompt_ids = encode(self.tokenizer, prompt)
        with torch.inference_mode(), self._with_adapter(adapter):
            cache, first = self._prefill(prompt_ids, adapter)

            def run(ids: list[int]) -> Any:
                start = cache.get_seq_length()
                output = self.model(
                    input_ids=torch.tensor([ids], device=self.device),
                    position_ids=torch.arange(start, start + len(ids), device=self.device).unsqueeze(0),
                    past_key_values=cache, use_cache=True, logits_to_keep=torch.arange(len(ids), device=self.device),
                )  # fmt: skip
                return output.logits[0]

            decoded = constrained.greedy(
                matcher, first, run, lambda n: cache.crop(cache.get_seq_length() - n),
                lambda text: encode(self.tokenizer, text), self.max_json_tokens,
                max_draft=self.draft_tokens, stats=self.decoding,
            )  # fmt: skip
        self.prefixes.store(adapter, prompt_ids + decoded.tokens, cache)
        if not decoded.finished:
            raise GenerationError(f"the model did not finish the arguments within {self.max_json_tokens} tokens")
        return self.tokenizer.decode(decoded.tokens)

    def _compiler(self) -> Any:
        import xgrammar as xgr

        if self._grammar_compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.base.config.vocab_size, stop_token_ids=self.eos_ids
            )
            self._grammar_compiler = xgr.GrammarCompiler(info)
        return self._grammar_compiler

    async def generate_text(self, prompt: str, adapter: str | None, max_tokens: int) -> str:
        tokens = await anyio.to_thread.run_sync(self._locked, self._generate, prompt, adapter, max_tokens)
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _generate(self, prompt: str, adapter: str | None, max_tokens: int) -> list[int]:
        """Greedy free text after the prompt, up to a stop token (excluded) or `max_tokens`."""
        torch = self._torch
        prompt_ids = encode(self.tokenizer, prompt)
        input_ids = torch.tensor([prompt_ids], device=self.device)
        with torch.inference_mode(), self._with_adapter(adapter):
            # All but the last prompt token go through `_prefill` (the cache, and its fast output
            # layer); `generate` then starts from one token.
            cache, _ = self._prefill(prompt_ids[:-1], adapter)
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=cache,
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
            )
        new = output[0, input_ids.shape[1] :].tolist()
        self.prefixes.store(adapter, prompt_ids + new, cache)
        return new[:-1] if new and new[-1] in self.eos_ids else new

    async def aclose(self) -> None:
        self.model = self.base = None


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured] if configured is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    return ids
