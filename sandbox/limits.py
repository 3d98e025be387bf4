"""Memory, CPU and process limits for a server process, enforced by the kernel.

A server runs in its own cgroup (v2, or the v1 `memory`, `pids` and `cpu` controllers)
when agentflux may create one: the kernel then kills it when it runs out of memory,
refuses forks beyond the process limit (a fork bomb goes nowhere), and throttles its CPU.
The process joins the cgroup *before* it runs anything, through a one-line shell launcher,
so not even its first fork escapes. The cgroup also makes cleanup exact: every process
left in it is killed when the server stops, including daemons that left its process group.

Without a writable cgroup hierarchy (an unprivileged user on a systemd machine), rlimits
are the fallback: CPU time and processes, but not memory, which `notes` then says.

Cgroups are named `agentflux/<proxy pid>-<server>-<n>`, so that a proxy that was killed
leaves nothing a later one cannot find and remove (`sweep_orphans`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shlex
import signal
from dataclasses import dataclass, field
from pathlib import Path

from agentflux.sandbox.spec import Limits

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "agentflux"
_CPU_PERIOD_US = 100_000
_counter = itertools.count(1)


@dataclass
class Enforcement:
    """How a server's limits are enforced, and what to run before its command."""

    limits: Limits
    prefix: list[str] = field(default_factory=list)
    # Controller name ("memory", "pids", "cpu"; "unified" on cgroup v2) -> its cgroup directory.
    cgroups: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def exceeded(self) -> str | None:
        """Which limit the server hit, if any, from the cgroup's event counters (same keys in v1 and v2)."""
        unified = self.cgroups.get("unified")
        memory = self.cgroups.get("memory")
        if unified is not None and _counter_value(unified / "memory.events", "oom_kill"):
            return f"out of memory (limit {self.limits.memory_mb} MiB)"
        if memory is not None and _counter_value(memory / "memory.oom_control", "oom_kill"):
            return f"out of memory (limit {self.limits.memory_mb} MiB)"
        pids = self.cgroups.get("pids") or unified
        if pids is not None and _counter_value(pids / "pids.events", "max"):
            return f"hit the process limit ({self.limits.pids})"
        return None

    def release(self) -> None:
        """Kill whatever is still running in the server's cgroups, then remove them."""
        for path in self.cgroups.values():
            _kill_and_remove(path)


def enforce(limits: Limits, server: str) -> Enforcement:
    name = f"{os.getpid()}-{re.sub(r'[^A-Za-z0-9_-]', '_', server)}-{next(_counter)}"
    if _v2_available():
        return _enforce_v2(limits, name)
    if _v1_available():
        return _enforce_v1(limits, name)
    return _enforce_rlimits(limits)


def _v2_available() -> bool:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    return controllers.exists() and os.access(CGROUP_ROOT, os.W_OK) and "pids" in controllers.read_text()


def _v1_available() -> bool:
    return all(os.access(CGROUP_ROOT / c, os.W_OK) for c in ("memory", "pids", "cpu"))


def _enforce_v2(limits: Limits, name: str) -> Enforcement:
    parent = CGROUP_ROOT / PARENT
    try:
        parent.mkdir(exist_ok=True)
        for level in (CGROUP_ROOT, parent):
            (level / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        path = parent / name
        path.mkdir()
        (path / "memory.max").write_text(str(limits.memory_mb * 1024 * 1024))
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")
        (path / "pids.max").write_text(str(limits.pids))
        (path / "cpu.max").write_text(f"{int(limits.cpus * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
    except OSError as exc:
        logger.info("cannot create a cgroup (%s); falling back to rlimits", exc)
        return _enforce_rlimits(limits)
    return Enforcement(limits, _join([path]) + _cpu_time_prefix(limits), {"unified": path})


def _enforce_v1(limits: Limits, name: str) -> Enforcement:
    paths = {controller: CGROUP_ROOT / controller / PARENT / name for controller in ("memory", "pids", "cpu")}
    try:
        for path in paths.values():
            path.mkdir(parents=True)
        memory = paths["memory"]
        (memory / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 1024 * 1024))
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limits.memory_mb * 1024 * 1024))
        (paths["pids"] / "pids.max").write_text(str(limits.pids))
        (paths["cpu"] / "cpu.cfs_period_us").write_text(str(_CPU_PERIOD_US))
        (paths["cpu"] / "cpu.cfs_quota_us").write_text(str(int(limits.cpus * _CPU_PERIOD_US)))
    except OSError as exc:
        for path in paths.values():
            _kill_and_remove(path)
        logger.info("cannot create a cgroup (%s); falling back to rlimits", exc)
        return _enforce_rlimits(limits)
    return Enforcement(limits, _join(list(paths.values())) + _cpu_time_prefix(limits), paths)


def _enforce_rlimits(limits: Limits) -> Enforcement:
    notes = ["memory limit not enforced: no writable cgroup hierarchy"]
    if os.geteuid() == 0:
        notes.append("process limit not enforced: RLIMIT_NPROC does not apply to root without a cgroup")
    prefix = ["prlimit", f"--nproc={limits.pids}"]
    if limits.cpu_seconds:
        prefix.append(f"--cpu={limits.cpu_seconds}")
    return Enforcement(limits, prefix + ["--"], {}, notes)


def _join(cgroups: list[Path]) -> list[str]:
    """A launcher that moves itself into the cgroups, then becomes the server command."""
    moves = " && ".join(f"echo $$ > {shlex.quote(str(path / 'cgroup.procs'))}" for path in cgroups)
    return ["/bin/sh", "-c", f'{moves} && exec "$@"', "agentflux-launch"]


def _cpu_time_prefix(limits: Limits) -> list[str]:
    return ["prlimit", f"--cpu={limits.cpu_seconds}", "--"] if limits.cpu_seconds else []


def _counter_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _kill_and_remove(path: Path) -> None:
    for _ in range(20):
        try:
            pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            break
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        path.rmdir()
    except OSError:
        pass


def sweep_orphans() -> int:
    """Remove the cgroups (and kill the processes) of agentflux proxies that are gone."""
    removed = 0
    parents = [CGROUP_ROOT / PARENT] + [CGROUP_ROOT / c / PARENT for c in ("memory", "pids", "cpu")]
    for parent in parents:
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            owner = path.name.split("-", 1)[0]
            if path.is_dir() and owner.isdigit() and not process_alive(int(owner)):
                _kill_and_remove(path)
                removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (an agentflux that owns a cgroup, a container or a status file)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
