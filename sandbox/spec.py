"""What a registry entry may grant a downstream server: the `sandbox` block."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class SandboxSpec(BaseModel):
    """Isolation settings for one downstream server.

    `kind: none` runs the server as a plain child process with only the environment its
    entry grants (never the proxy's own environment).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none"] = "none"
