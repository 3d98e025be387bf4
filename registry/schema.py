"""The registry file's schema.

A registry file is a Claude Desktop configuration with agentflux settings alongside:

    proxy:                         # optional, agentflux's own settings
      surfaces: [passthrough, search]
    mcpServers:                    # exactly Claude Desktop's block
      filesystem:
        command: node
        args: [server.js, workspace]
      notion:
        command: node
        args: [cli.mjs]
        env: {NOTION_TOKEN: "${NOTION_TOKEN}"}
        tools: {deny: ["API-delete-*"]}   # agentflux extension
      remote:
        url: https://example.com/mcp
        headers: {Authorization: "Bearer ${REMOTE_TOKEN}"}

Every model forbids unknown keys: a typo must fail loudly rather than silently change
what a server is allowed to do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentflux.registry.secrets import SECRET_KEY, malformed_reference
from agentflux.sandbox.spec import SandboxSpec

Surface = Literal["do_task", "passthrough", "search"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolFilter(_Strict):
    """Which of a server's tools agentflux exposes. Patterns are shell globs (`read_*`)."""

    allow: list[str] | None = Field(default=None, description="only these tools; all when absent")
    deny: list[str] = Field(default_factory=list, description="never these tools, even if allowed")


class ServerEntry(_Strict):
    """One downstream MCP server, in Claude Desktop's shape plus agentflux settings."""

    type: Literal["stdio", "http", "streamable-http"] | None = None
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    enabled: bool = True
    description: str | None = Field(default=None, description="what this toolset is for, in a sentence")
    tools: ToolFilter = Field(default_factory=ToolFilter)
    sandbox: SandboxSpec = Field(default_factory=SandboxSpec)
    start_timeout_s: float | None = Field(default=None, gt=0, description="overrides proxy.start_timeout_s")
    call_timeout_s: float | None = Field(default=None, gt=0, description="overrides proxy.call_timeout_s")

    @model_validator(mode="after")
    def _one_transport(self) -> ServerEntry:
        if self.command is not None and self.url is not None:
            raise ValueError("give either 'command' (a local stdio server) or 'url' (a remote HTTP server), not both")
        if self.command is None and self.url is None:
            raise ValueError("missing 'command' (a local stdio server) or 'url' (a remote HTTP server)")
        if self.type == "stdio" and self.command is None:
            raise ValueError("type 'stdio' needs 'command'")
        if self.type in ("http", "streamable-http") and self.url is None:
            raise ValueError(f"type {self.type!r} needs 'url'")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("'args', 'env' and 'cwd' apply to stdio servers only; an HTTP server takes 'url' and 'headers'")
        if self.command is not None and self.headers:
            raise ValueError("'headers' apply to HTTP servers only")
        if self.url is not None and "sandbox" in self.model_fields_set:
            raise ValueError("'sandbox' applies to local (stdio) servers only; a remote server runs elsewhere")
        return self

    @field_validator("command", "url", "cwd")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        if value is not None:
            _check_references(value)
        return value

    @field_validator("args")
    @classmethod
    def _check_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            _check_references(arg)
        return value

    @field_validator("env", "headers")
    @classmethod
    def _check_mapping(cls, value: dict[str, str]) -> dict[str, str]:
        for item in value.values():
            _check_references(item)
        return value

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"

    def secret_values(self) -> list[str]:
        """Literal values that look like credentials (a token pasted in instead of `${REF}`)."""
        values = list(self.headers.values())
        values += [v for k, v in self.env.items() if SECRET_KEY.search(k)]
        return values


def _check_references(text: str) -> None:
    problem = malformed_reference(text)
    if problem:
        raise ValueError(problem)


class HttpSettings(_Strict):
    """The upstream streamable HTTP endpoint (`agentflux serve --transport http`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    path: str = "/mcp"
    token_env: str | None = Field(
        default="AGENTFLUX_HTTP_TOKEN", description="environment variable holding the bearer token clients must send"
    )
    token_file: str | None = Field(default=None, description="file holding the bearer token (first line)")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host headers accepted besides loopback (DNS-rebinding protection)"
    )
    allowed_origins: list[str] = Field(default_factory=list, description="Origin headers accepted besides loopback")


class ProxySettings(_Strict):
    """How agentflux itself behaves."""

    surfaces: list[Surface] = Field(
        default_factory=lambda: ["do_task"],
        description="do_task (the local agent), passthrough (every tool, namespaced), search (search_tools + call_tool)",
    )
    namespacing: bool = Field(
        default=True,
        description="prefix tool and prompt names with the server name; 'false' is valid with one enabled server only",
    )
    start_timeout_s: float = Field(default=60, gt=0)
    call_timeout_s: float = Field(default=300, gt=0)
    restart_backoff_s: float = Field(default=1, gt=0, description="first delay before restarting a crashed server")
    restart_backoff_max_s: float = Field(default=60, gt=0)
    health_interval_s: float = Field(default=30, gt=0, description="how often idle HTTP servers are pinged")
    http: HttpSettings = Field(default_factory=HttpSettings)

    @field_validator("surfaces")
    @classmethod
    def _surfaces(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one surface is needed: do_task, passthrough, search")
        return list(dict.fromkeys(value))


class ModelSettings(_Strict):
    """The local model that runs `do_task`, and how it is served."""

    base: str | None = Field(
        default=None,
        description="a model directory or Hugging Face name, e.g. Qwen/Qwen2.5-7B-Instruct; "
        "absent: the embedded Gemma 3 270M (`agentflux model fetch`)",
    )
    backend: Literal["transformers", "vllm", "vllm-server"] = "transformers"
    chat_format: Literal["auto", "qwen2.5", "gemma3"] = Field(
        default="auto", description="the prompt format; auto: the model family's, from its config.json"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field(default="auto", description="transformers only: cpu, cuda, cuda:1, mps or auto")
    server_url: str | None = Field(default=None, description="vllm-server: the server's base URL")
    server_model: str | None = Field(default=None, description="vllm-server: the served base model's name")
    api_key_env: str | None = Field(default=None, description="vllm-server: environment variable with its API key")
    max_loras: int = Field(default=8, ge=1, description="vllm: adapters resident at once")
    max_lora_rank: int = Field(default=32, ge=1)
    max_cpu_loras: int = Field(default=64, ge=1)
    max_model_len: int = Field(default=8192, ge=256)
    memory_fraction: float = Field(default=0.85, gt=0, le=1, description="vllm: share of GPU (or CPU) memory")
    max_json_tokens: int = Field(default=512, ge=16, description="bound on generated arguments")
    summary: Literal["results", "model"] = Field(
        default="results",
        description="do_task's answer: the successful calls' outputs, whole (results), or a summary the base model writes",
    )
    router: Literal["base", "adapter"] = Field(
        default="base",
        description="route between toolsets with the base model (real models), or a trained router adapter (tiny ones)",
    )

    @model_validator(mode="after")
    def _server_needs_url(self) -> ModelSettings:
        if self.backend == "vllm-server" and not self.server_url:
            raise ValueError("backend 'vllm-server' needs server_url, e.g. http://127.0.0.1:8000")
        return self


class TrainingSettings(_Strict):
    """How a running agentflux trains adapters for servers that have none (do_task surface only)."""

    auto: bool = Field(default=True, description="queue a training job when a server's tools have no adapters")
    quick: bool = Field(default=False, description="small data and a short schedule (minutes on a CPU)")
    mode: Literal["decoupled", "traditional", "both"] = "decoupled"
    examples_per_tool: int | None = Field(default=None, ge=1, description="default 40 (20 with quick)")
    concurrency: int = Field(default=1, ge=1, description="training jobs running at once")
    retries: int = Field(default=1, ge=0, description="further attempts after a job fails")
    retry_backoff_s: float = Field(default=30, ge=0, description="wait before a failed job is retried")
    teacher_url: str | None = Field(default=None, description="an OpenAI-compatible API that writes the requests")
    teacher_model: str | None = None
    teacher_key_env: str | None = Field(default=None, description="environment variable with the teacher's API key")

    @model_validator(mode="after")
    def _teacher_pair(self) -> TrainingSettings:
        if (self.teacher_url is None) != (self.teacher_model is None):
            raise ValueError("give both teacher_url and teacher_model, or neither")
        return self

    def train_arguments(self) -> list[str]:
        """The `agentflux train` options these settings stand for."""
        arguments = ["--mode", self.mode]
        if self.quick:
            arguments.append("--quick")
        if self.examples_per_tool:
            arguments += ["--examples-per-tool", str(self.examples_per_tool)]
        if self.teacher_url and self.teacher_model:
            arguments += ["--teacher-url", self.teacher_url, "--teacher-model", self.teacher_model]
            if self.teacher_key_env:
                arguments += ["--teacher-key-env", self.teacher_key_env]
        return arguments


class RegistryFile(_Strict):
    """The whole registry file."""

    proxy: ProxySettings = Field(default_factory=ProxySettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    servers: dict[str, ServerEntry] = Field(alias="mcpServers")

    @field_validator("servers")
    @classmethod
    def _names(cls, value: dict[str, ServerEntry]) -> dict[str, ServerEntry]:
        for name in value:
            if not name.strip():
                raise ValueError("server names must not be empty")
        return value
