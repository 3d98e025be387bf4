"""The adapter store: trained adapters and their manifests, keyed by base model and tool schemas.

    $AGENTFLUX_HOME/adapters/<base model id>/<server>/<fingerprint>/
        manifest.json          what was trained, on what, how well
        selector/              the toolset's tool-selector adapter (PEFT directory)
        tools/<tool>/          one argument adapter per tool
        traditional/           the single-adapter baseline, when trained
    $AGENTFLUX_HOME/adapters/<base model id>/_router/<fingerprint>/   the router, for small base models

Adapters are only valid for the base model and the exact tool schemas they were trained on,
so both are in the key: a server whose tools change gets a new fingerprint and is retrained,
and the old adapters keep serving until the new ones are ready. Nothing here is ever deleted
implicitly. Every directory appears atomically (written beside, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentflux.registry.home import agentflux_home

ROUTER = "_router"
STAGING_MARKER = ".dataset-hash"


def tool_fingerprint(tools: list[dict[str, Any]]) -> str:
    """A stable hash of a server's tools: names, descriptions and input schemas, order-independent."""
    canonical = sorted(
        (
            {"name": t["name"], "description": t.get("description") or "", "input_schema": t.get("input_schema") or {}}
            for t in tools
        ),
        key=lambda t: t["name"],
    )
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def base_model_id(base: str) -> str:
    """A short id for a base model: its hub name, or for a directory a hash of its config and weights' headers."""
    path = Path(base).expanduser()
    if not path.is_dir():
        return base.replace("/", "--")
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        # The header names every tensor with its shape and offset; with the size and the first
        # megabyte of data this tells models apart without reading gigabytes.
        with weights.open("rb") as handle:
            digest.update(handle.read(1 << 20))
        digest.update(str(weights.stat().st_size).encode())
    return f"{path.name}-{digest.hexdigest()[:12]}"


class Manifest(BaseModel):
    """What an adapter set is: enough to reproduce it and to know when it no longer applies."""

    model_config = ConfigDict(extra="forbid")

    server: str
    fingerprint: str
    base_model: str
    base_model_id: str
    mode: str = Field(description="decoupled, traditional, or router")
    selector: str | None = Field(default=None, description="the selector adapter's folder, relative to the manifest")
    tools: dict[str, str] = Field(default_factory=dict, description="tool name -> argument adapter folder")
    traditional: str | None = None
    toolsets: list[str] = Field(default_factory=list, description="router only: the toolsets it routes between")
    dataset_hash: str
    inputs: str | None = Field(default=None, description="hash of everything training read; the same means up to date")
    counts: dict[str, int] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    agentflux_version: str = ""


class AdapterStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or agentflux_home() / "adapters"

    def directory(self, base_id: str, server: str, fingerprint: str) -> Path:
        return self.root / base_id / server / fingerprint

    def find(self, base_id: str, server: str, fingerprint: str) -> Manifest | None:
        path = self.directory(base_id, server, fingerprint) / "manifest.json"
        if not path.exists():
            return None
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))

    def manifests(self, server: str, base_id: str = "*") -> list[Manifest]:
        """Every published adapter set of `server` (for one base model, or all), newest first."""
        found = [Manifest.model_validate_json(path.read_text(encoding="utf-8"))
                 for path in self.root.glob(f"{base_id}/{server}/*/manifest.json")]  # fmt: skip
        return sorted(found, key=lambda manifest: manifest.created_at, reverse=True)

    def staging(self, base_id: str, server: str, fingerprint: str, dataset_hash: str) -> Path:
        """The folder to build an adapter set in; `publish` moves it into place.

        A run that was killed left its finished adapters here: when the dataset is the same,
        they are kept (each adapter folder appears atomically, so one that exists is complete)
        and training resumes with the next adapter. Any other dataset starts afresh.
        """
        final = self.directory(base_id, server, fingerprint)
        staging = final.with_name(final.name + ".staging")
        marker = staging / STAGING_MARKER
        if not (marker.exists() and marker.read_text(encoding="utf-8") == dataset_hash):
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            marker.write_text(dataset_hash, encoding="utf-8")
        return staging

    def publish(self, staging: Path, manifest: Manifest) -> Path:
        (staging / STAGING_MARKER).unlink(missing_ok=True)
        (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        final = staging.with_name(staging.name.removesuffix(".staging"))
        if final.exists():
            # Keep what was there: a retrain of the same fingerprint never destroys the old set.
            final.rename(final.with_name(f"{final.name}.replaced-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"))
        staging.rename(final)
        return final
