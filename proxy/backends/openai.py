"""A vLLM OpenAI-compatible server: one machine, or a cluster scaled by vLLM itself.

agentflux renders prompts itself and sends token ids to `/v1/completions`, so the server sees
exactly what the other backends see; adapters are loaded at run time through
`/v1/load_lora_adapter` (the server needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and
`--enable-lora`). Requests are concurrent: the server batches them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx2

from agentflux.proxy.backends import GenerationError, best_candidate
from agentflux.proxy.backends.grammar import arguments_grammar, check_arguments
from agentflux.proxy.protocol import encode, parse_arguments

logger = logging.getLogger(__name__)


class VLLMServerBackend:
    def __init__(
        self,
        url: str,
        tokenizer_path: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_json_tokens: int = 512,
        timeout_s: float = 300,
    ) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._model = model
        self.max_json_tokens = max_json_tokens
        self._adapters: dict[str, Path] = {}

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(path, json=body)
        except httpx2.TransportError as exc:
            raise GenerationError(f"the vLLM server at {self._http.base_url} is unreachable: {exc}") from None
        if response.status_code >= 400:
            raise GenerationError(f"the vLLM server refused {path} ({response.status_code}): {response.text[:300]}")
        return response.json() if response.content and response.headers.get("content-type", "").startswith("application/json") else None

    async def _base_model(self) -> str:
        if self._model is None:
            response = await self._http.get("/v1/models")
            response.raise_for_status()
            models = response.json()["data"]
            self._model = next(m["id"] for m in models if not m.get("parent"))
        return self._model

    def adapters(self) -> set[str]:
        return set(self._adapters)

    async def load_adapter(self, name: str, path: Path) -> None:
        # The server may hold this name from an earlier agentflux run: replace it.
        try:
            await self._post("/v1/unload_lora_adapter", {"lora_name": name})
        except GenerationError:
            pass
        await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        self._adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        if self._adapters.pop(name, None) is not None:
            await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    async def _model_for(self, adapter: str | None) -> str:
        if adapter is None:
            return await self._base_model()
        if adapter not in self._adapters:
            raise GenerationError(f"adapter {adapter!r} is not loaded")
        return adapter

    async def scores(self, prompt: str, candidates: list[str], adapter: str | None) -> list[float]:
        prompt_ids = encode(self.tokenizer, prompt)
        endings = [encode(self.tokenizer, candidate) for candidate in candidates]
        body = {
            "model": await self._model_for(adapter),
            "prompt": [prompt_ids + ending for ending in endings],
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,
        }
        result = await self._post("/v1/completions", body)
        choices = sorted(result["choices"], key=lambda choice: choice["index"])
        scores = []
        for choice, ending in zip(choices, endings, strict=True):
            entries = choice["prompt_logprobs"][len(choice["prompt_logprobs"]) - len(ending) :]
            scores.append(sum(entry[str(token)]["logprob"] for entry, token in zip(entries, ending, strict=True)))
        return scores

    async def choose(self, prompt: str, candidates: list[str], adapter: str | None) -> str:
        return best_candidate(candidates, await self.scores(prompt, candidates, adapter))

    async def _complete(self, prompt: str, adapter: str | None, max_tokens: int, **extra: Any) -> dict[str, Any]:
        body = {
            "model": await self._model_for(adapter),
            "prompt": encode(self.tokenizer, prompt),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            **extra,
        }
        return (await self._post("/v1/completions", body))["choices"][0]

    async def generate_json(self, prompt: str, schema: dict[str, Any], adapter: str | None) -> Any:
        choice = await self._complete(
            prompt, adapter, self.max_json_tokens, structured_outputs={"grammar": arguments_grammar(schema)}
        )
        if choice["finish_reason"] != "stop":
            raise GenerationError(f"the model did not finish the arguments within {self.max_json_tokens} tokens")
        value = parse_arguments(choice["text"])
        check_arguments(value, schema)
        return value

    async def generate_text(self, prompt: str, adapter: str | None, max_tokens: int) -> str:
        return (await self._complete(prompt, adapter, max_tokens))["text"]

    async def aclose(self) -> None:
        await self._http.aclose()
