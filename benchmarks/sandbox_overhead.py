"""Start time and `read_file` round trip of the filesystem server under each sandbox kind.

    .venv/bin/python benchmarks/sandbox_overhead.py [--starts 5] [--calls 300]

Measured through agentflux's hub in one process, in one run: `none`, `bwrap`, and `docker`
(when an engine runs; the image is an empty one with the host's toolchain mounted
read-only, as in the tests). Start = spawn to `initialize` answered and tools listed.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

import anyio
import yaml

from agentflux.proxy.hub import Health, Hub, running_hub
from agentflux.registry.loader import load_registry

ROOT = Path(__file__).resolve().parent.parent
FILESYSTEM = ROOT / "node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
IMAGE = "agentflux-bench-base:latest"


def docker_image() -> str | None:
    try:
        import docker

        engine = docker.from_env(timeout=10)
        engine.ping()
    except Exception:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("tmp")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        archive.addfile(info)
    engine.api.import_image_from_data(buffer.getvalue(), repository=IMAGE.split(":")[0], tag="latest")
    return IMAGE


def sandbox(kind: str, workspace: Path, image: str | None) -> dict:
    block: dict = {"kind": kind, "mounts": [{"path": str(workspace), "mode": "rw"}]}
    if kind == "docker":
        toolchain = ["/usr", "/bin", "/lib", "/lib64", str(ROOT / "node_modules"), sys.prefix, sys.base_prefix]
        toolchain.append(sysconfig.get_paths()["purelib"])
        block["image"] = image
        block["mounts"] += [{"path": p, "mode": "ro"} for p in dict.fromkeys(toolchain) if Path(p).exists()]
    return block


async def measure(kind: str, work: Path, image: str | None, starts: int, calls: int) -> tuple[list[float], list[float]]:
    workspace = work / "workspace"
    entry = {"command": "node", "args": [str(FILESYSTEM), str(workspace)], "sandbox": sandbox(kind, workspace, image)}
    path = work / f"registry-{kind}.yaml"
    path.write_text(yaml.safe_dump({"mcpServers": {"fs": entry}}))
    registry = load_registry(path)
    start_times, round_trips = [], []
    for attempt in range(starts):
        hub = Hub(registry)
        began = time.perf_counter()
        async with running_hub(hub):
            await hub.wait_settled(60)
            start_times.append((time.perf_counter() - began) * 1000)
            assert hub.servers["fs"].health is Health.READY, hub.servers["fs"].reason
            if attempt == starts - 1:
                target = {"path": str(workspace / "notes/todo.txt")}
                for _ in range(30):
                    await hub.call_tool("fs", "read_file", target)
                for _ in range(calls):
                    began = time.perf_counter()
                    result = await hub.call_tool("fs", "read_file", target)
                    round_trips.append((time.perf_counter() - began) * 1000)
                    assert not result.is_error
    return start_times, round_trips


async def run(starts: int, calls: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="agentflux-sandbox-bench-"))
    os.environ["AGENTFLUX_HOME"] = str(work / "home")
    shutil.copytree(ROOT / "examples/workspace", work / "workspace")
    image = docker_image()
    kinds = ["none", "bwrap"] + (["docker"] if image else [])
    print("| kind | start p50 ms | start max ms | read_file p50 ms | read_file p95 ms |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        start_times, trips = await measure(kind, work, image, starts, calls)
        p95 = statistics.quantiles(trips, n=100, method="inclusive")[94]
        print(f"| {kind} | {statistics.median(start_times):.0f} | {max(start_times):.0f} | {statistics.median(trips):.2f} | {p95:.2f} |")
    if not image:
        print("(docker: no engine answered; not measured)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    anyio.run(run, args.starts, args.calls)
