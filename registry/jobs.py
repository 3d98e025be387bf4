"""Training jobs: `agentflux train` runs in separate processes, queued, watched and retried.

A running agentflux asks for adapters whenever a server's tools have none (`request`). Each
job is one `agentflux train --server NAME` process with its own log file: its output goes to
the log (secrets masked), and the progress lines it prints (`--progress-json`) become the
job's progress. A job that exits non-zero, is killed, or cannot start is marked failed with
the tail of its log and retried per the registry's `training` settings; nothing a job does
can take the proxy down. Jobs are keyed by (server, tool fingerprint), so a server whose tools
change gets a new job while the old adapters keep serving.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

from agentflux.registry.home import logs_dir
from agentflux.registry.schema import TrainingSettings
from agentflux.registry.secrets import REDACTOR

logger = logging.getLogger(__name__)

# `agentflux train --progress-json` prints one such line per progress event, on stdout.
PROGRESS_PREFIX = "agentflux-progress "
LOG_TAIL_LINES = 20


class JobState(StrEnum):
    QUEUED = "queued"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Job:
    server: str
    fingerprint: str
    log_path: Path
    state: JobState = JobState.QUEUED
    attempts: int = 0
    pid: int | None = None
    stage: str = ""
    done: int = 0
    total: int = 0
    error: str = ""
    log_tail: list[str] = field(default_factory=list)
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    retry_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "fingerprint": self.fingerprint,
            "state": self.state.value,
            "attempts": self.attempts,
            "pid": self.pid,
            "progress": {"stage": self.stage, "done": self.done, "total": self.total} if self.stage else None,
            "error": self.error or None,
            "log_tail": self.log_tail or None,
            "log_path": str(self.log_path),
            "queued_at": self.queued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "retry_at": self.retry_at,
        }

    def begin(self) -> None:
        """A new attempt: training, with nothing left from the last one."""
        self.attempts += 1
        self.state, self.pid, self.started_at = JobState.TRAINING, None, time.time()
        self.finished_at = self.retry_at = None
        self.stage, self.done, self.total, self.error, self.log_tail = "", 0, 0, "", []

    def describe(self) -> str:
        if self.state is JobState.TRAINING and self.stage:
            return f"training: {self.stage} {self.done}/{self.total}"
        if self.state is JobState.FAILED:
            return f"failed after {self.attempts} attempts: {self.error}"
        return self.state.value


Finished = Callable[[Job], Awaitable[None]]


class JobQueue:
    """Runs training jobs for one registry file, `settings.concurrency` at a time."""

    def __init__(self, registry_path: Path, settings: TrainingSettings, on_finished: Finished | None = None) -> None:
        self.registry_path = registry_path
        self.settings = settings
        self.on_finished = on_finished
        self.jobs: dict[str, Job] = {}  # the latest job per server
        self._wake = anyio.Event()
        self._processes: dict[str, Process] = {}

    def request(self, server: str, fingerprint: str) -> Job:
        """Ask for adapters for `server`'s current tools; a job already asked for is not repeated."""
        current = self.jobs.get(server)
        if current is not None and current.fingerprint == fingerprint and current.state is not JobState.CANCELLED:
            return current
        if current is not None and current.state is JobState.TRAINING:
            # The tools changed under a running job: what it trains would never be used.
            self.cancel(server, "the server's tools changed; training for the new tools instead")
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in server)
        job = Job(server, fingerprint, logs_dir() / "jobs" / f"{safe}-{fingerprint}.log")
        self.jobs[server] = job
        logger.info("training job queued for %s (tools %s); log: %s", server, fingerprint, job.log_path)
        self._wake.set()
        return job

    def cancel(self, server: str, reason: str) -> None:
        job = self.jobs.get(server)
        if job is None or job.state not in (JobState.QUEUED, JobState.TRAINING):
            return
        job.state, job.error = JobState.CANCELLED, reason
        process = self._processes.get(server)
        if process is not None:
            _kill_group(process)
        logger.info("training job for %s cancelled: %s", server, reason)

    def mark_ready(self, server: str, fingerprint: str) -> None:
        """Adapters appeared for a queued job's tools (trained elsewhere): nothing left to do."""
        job = self.jobs.get(server)
        if job is not None and job.fingerprint == fingerprint and job.state is JobState.QUEUED:
            job.state = JobState.READY

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start queued jobs as slots free up, until cancelled (which kills running jobs)."""
        slots = anyio.Semaphore(self.settings.concurrency)
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                now = time.time()
                for job in list(self.jobs.values()):
                    due = job.retry_at is None or job.retry_at <= now
                    if job.state is JobState.QUEUED and due and slots.value > 0:
                        slots.acquire_nowait()
                        job.begin()  # marked training now, so that no later pass starts it twice
                        tg.start_soon(self._run_job, job, slots)
                self._wake = anyio.Event()
                with anyio.move_on_after(1.0):  # retries come due with time, not only with events
                    await self._wake.wait()

    async def _run_job(self, job: Job, slots: anyio.Semaphore) -> None:
        try:
            await self._attempt(job)
        finally:
            self._processes.pop(job.server, None)
            slots.release()
            self._wake.set()
        if job.state is JobState.FAILED and job.attempts <= self.settings.retries:
            job.state = JobState.QUEUED
            job.retry_at = time.time() + self.settings.retry_backoff_s
            logger.warning("training job for %s failed (%s); retrying in %gs", job.server, job.error, self.settings.retry_backoff_s)
        elif job.state is JobState.FAILED:
            logger.error("training job for %s failed for good: %s (log: %s)", job.server, job.error, job.log_path)
        if self.on_finished is not None and job.state in (JobState.READY, JobState.FAILED):
            try:
                await self.on_finished(job)
            except Exception:
                logger.exception("handling the end of the training job for %s failed", job.server)

    def command(self, server: str) -> list[str]:
        return [
            sys.executable, "-m", "agentflux.proxy", "train", "--server", server,
            "--registry", str(self.registry_path), "--progress-json", "--no-progress",
            *self.settings.train_arguments(),
        ]  # fmt: skip

    async def _attempt(self, job: Job) -> None:
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.command(job.server)
        with job.log_path.open("a", encoding="utf-8", buffering=1) as log:
            log.write(f"=== attempt {job.attempts}: {' '.join(command)}\n")
            try:
                process = await anyio.open_process(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                    env=os.environ | {"PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
            except OSError as exc:
                job.state, job.error = JobState.FAILED, f"could not start {command[0]}: {exc}"
                return
            self._processes[job.server] = process
            job.pid = process.pid
            if job.state is JobState.CANCELLED:  # cancelled while the process was starting
                _kill_group(process)
            logger.info("training %s (tools %s) in process %d", job.server, job.fingerprint, process.pid)
            try:
                async for line in _lines(process):
                    if line.startswith(PROGRESS_PREFIX):
                        _update_progress(job, line[len(PROGRESS_PREFIX) :])
                        continue
                    line = REDACTOR.redact(line)
                    tail.append(line)
                    log.write(line + "\n")
                code = await process.wait()
            except BaseException:
                _kill_group(process)  # the proxy is stopping: a job never outlives it
                with anyio.CancelScope(shield=True):
                    await process.wait()
                raise
            log.write(f"=== exit code {code}\n")
        job.finished_at = time.time()
        if job.state is JobState.CANCELLED:
            return
        if code == 0:
            job.state = JobState.READY
            return
        what = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        last = next((line for line in reversed(tail) if line.strip()), "")
        job.state, job.error, job.log_tail = JobState.FAILED, f"{what}: {last[:300]}" if last else what, list(tail)


async def _lines(process: Process):
    """The process's output, line by line (tqdm's carriage returns count as line ends)."""
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk.replace(b"\r", b"\n")
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


def _update_progress(job: Job, payload: str) -> None:
    try:
        event = json.loads(payload)
        job.stage, job.done, job.total = str(event["stage"]), int(event["done"]), int(event["total"])
    except (ValueError, KeyError, TypeError):
        logger.debug("unreadable progress line from the job for %s: %r", job.server, payload)


def _kill_group(process: Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def progress_line(stage: str, done: int, total: int) -> str:
    """What `agentflux train --progress-json` prints for one progress event."""
    return PROGRESS_PREFIX + json.dumps({"stage": stage, "done": done, "total": total})
