"""A minimal client for any OpenAI-compatible chat API (the teacher and the judge use it)."""

from __future__ import annotations

from typing import Any

import httpx2

from agentflux.registry.secrets import REDACTOR


class ChatClient:
    def __init__(
        self, url: str, model: str, api_key: str | None, *, temperature: float = 0.7, max_tokens: int = 800,
        seed: int | None = 0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if api_key:
            REDACTOR.add(api_key)  # an error that echoes it must not reach a log or a results file
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        # Sampling is seeded per request (servers that honour `seed`, vLLM among them), so the
        # same prompts give the same data: `data synth` and a later `train` agree.
        self.seed = seed
        self.http = httpx2.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=300)

    async def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The assistant message of one completion; raises httpx2.HTTPError or ValueError."""
        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if tools:
            body["tools"] = tools
        response = await self.http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        try:
            message = response.json()["choices"][0]["message"]
        except (IndexError, KeyError, TypeError) as exc:
            raise ValueError(f"not a chat completion (no choices[0].message): {exc!r}") from None
        if not isinstance(message, dict):
            raise ValueError("not a chat completion: choices[0].message is not an object")
        return message

    async def aclose(self) -> None:
        await self.http.aclose()
