"""One Docker container per server.

The container is created through the Docker SDK with everything denied that the entry
does not grant: no network (`none`), a read-only root filesystem with a private `/tmp`,
all capabilities dropped, `no-new-privileges`, memory, CPU and process limits, only the
granted bind mounts, and `--init` so that signals reach the server. agentflux attaches to
its stdio with `docker start --attach --interactive` (a plain process, reaped like any
other) and removes the container when the server stops.

Containers carry the labels `agentflux.server` and `agentflux.owner` (the proxy's pid), so
that a proxy that was killed leaves nothing a later one cannot find and remove.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import docker
import docker.errors
import docker.types

from agentflux.sandbox.errors import LaunchError, SandboxUnavailable
from agentflux.sandbox.limits import process_alive
from agentflux.sandbox.spec import SandboxSpec

logger = logging.getLogger(__name__)

OWNER_LABEL = "agentflux.owner"
SERVER_LABEL = "agentflux.server"


def client() -> Any:
    """A Docker client, or an exception that says why there is none."""
    try:
        engine = docker.from_env(timeout=30)
        engine.ping()
    except Exception as exc:
        raise SandboxUnavailable(
            f"sandbox kind 'docker' needs a running Docker engine, and none answered ({exc}); "
            "start it, or choose kind: bwrap"
        ) from None
    return engine


@dataclass
class Container:
    engine: Any
    id: str
    attach_argv: list[str]
    memory_mb: int

    def limit_exceeded(self) -> str | None:
        """Whether Docker killed the container for its memory limit (blocking: run it in a thread)."""
        try:
            state = self.engine.api.inspect_container(self.id)["State"]
        except docker.errors.DockerException:
            return None
        return f"out of memory (limit {self.memory_mb} MiB)" if state.get("OOMKilled") else None


@asynccontextmanager
async def container(
    spec: SandboxSpec,
    server: str,
    command: str,
    args: list[str],
    env: Mapping[str, str],
    cwd: Path,
    mounts: list[tuple[Path, Path, str]],
) -> AsyncIterator[Container]:
    """Create the server's container for the duration of the block, then remove it."""
    engine = await anyio.to_thread.run_sync(client)
    volumes = {str(host): {"bind": str(target), "mode": mode} for host, target, mode in mounts}
    limits = spec.limits
    options: dict[str, Any] = dict(
        command=[command, *args],
        stdin_open=True,
        tty=False,
        init=True,
        network_mode="host" if spec.network == "host" else "none",
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=256m,mode=1777"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit=f"{limits.memory_mb}m",
        memswap_limit=f"{limits.memory_mb}m",
        nano_cpus=int(limits.cpus * 1e9),
        pids_limit=limits.pids,
        volumes=volumes,
        environment=dict(env),
        labels={SERVER_LABEL: server, OWNER_LABEL: str(os.getpid())},
    )
    # The working directory only exists in the container when it lies in a granted mount.
    if any(cwd == target or target in cwd.parents for _, target, _ in mounts):
        options["working_dir"] = str(cwd)
    if limits.cpu_seconds:
        options["ulimits"] = [docker.types.Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds)]

    def create() -> str:
        try:
            return engine.containers.create(spec.image, **options).id
        except docker.errors.ImageNotFound:
            raise LaunchError(f"Docker image {spec.image!r} is not on this machine; pull or build it first") from None
        except docker.errors.APIError as exc:
            raise LaunchError(f"Docker refused to create the container: {exc.explanation or exc}") from None

    container_id = await anyio.to_thread.run_sync(create)
    attach = ["docker", "start", "--attach", "--interactive", container_id]
    try:
        yield Container(engine, container_id, attach, limits.memory_mb)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_remove, engine, container_id)


def _remove(engine: Any, container_id: str) -> None:
    try:
        engine.api.remove_container(container_id, force=True)
    except docker.errors.DockerException as exc:
        logger.warning("cannot remove container %s: %s", container_id[:12], exc)


def sweep_orphans() -> int:
    """Remove containers left by agentflux proxies that are gone. Does nothing without Docker."""
    try:
        engine = docker.from_env(timeout=10)
        found = engine.containers.list(all=True, filters={"label": OWNER_LABEL})
    except Exception:
        return 0
    removed = 0
    for item in found:
        owner = item.labels.get(OWNER_LABEL, "")
        if owner.isdigit() and not process_alive(int(owner)):
            try:
                item.remove(force=True)
                removed += 1
            except Exception as exc:
                logger.warning("cannot remove orphaned container %s: %s", item.short_id, exc)
    return removed

