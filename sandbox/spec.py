"""What a registry entry may grant a downstream server: its `sandbox` block.

Everything is denied unless granted: no host directory but the system's read-only
runtime and the server's own code, no network, no variable of agentflux's environment,
and bounded memory, CPU and processes.

    sandbox:
      kind: bwrap                  # bwrap (default), docker, or none
      mounts:
        - {path: ~/notes, mode: rw}
      network: none                # or host
      env: [HTTPS_PROXY]           # names copied from agentflux's environment
      limits: {memory_mb: 1024, cpus: 1, pids: 128}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mount(_Strict):
    """A host path made visible inside the sandbox, at the same path unless `target` says otherwise."""

    path: str = Field(description="host path; relative paths are relative to the registry file")
    mode: Literal["ro", "rw"] = "ro"
    target: str | None = Field(default=None, description="path inside the sandbox (docker); default: same as path")

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("target must be an absolute path inside the sandbox")
        return value


class Limits(_Strict):
    """Resource limits; a server that exceeds one is killed and restarted with backoff."""

    memory_mb: int = Field(default=2048, ge=16, description="memory, in MiB (Docker's MCP gateway uses 2 GB)")
    cpus: float = Field(default=1.0, gt=0, description="CPU share, in cores")
    pids: int = Field(default=256, ge=8, description="number of processes and threads")
    cpu_seconds: int | None = Field(default=None, gt=0, description="total CPU time before the server is killed")


class SandboxSpec(_Strict):
    kind: Literal["bwrap", "docker", "none"] = Field(
        default="bwrap", description="bwrap (Linux, no daemon), docker (needs `image`), or none (no isolation)"
    )
    image: str | None = Field(default=None, description="the Docker image the server runs in")
    mounts: list[Mount] = Field(default_factory=list)
    network: Literal["none", "host"] = "none"
    env: list[str] = Field(default_factory=list, description="names of variables copied from agentflux's environment")
    limits: Limits = Field(default_factory=Limits)

    @field_validator("env")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a variable name; list names here, and give values in the server's 'env' mapping"
                )
        return value

    @model_validator(mode="after")
    def _image_for_docker(self) -> SandboxSpec:
        if self.kind == "docker" and not self.image:
            raise ValueError("kind 'docker' needs 'image': the image the server runs in")
        if self.kind != "docker" and self.image:
            raise ValueError(f"'image' applies to kind 'docker' only, not {self.kind!r}")
        return self
