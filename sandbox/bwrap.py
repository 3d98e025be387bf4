"""The bubblewrap command line for one server.

Inside the sandbox a server sees:
- the system's runtime, read-only: `/usr` (and the `/bin`, `/lib`… links into it) and the
  few files of `/etc` that programs need to start (TLS roots, name resolution, time zone,
  users). Not the rest of `/etc`, not `/home`, `/root`, `/opt`, `/srv` or `/var`;
- its own code, read-only: the executable's installation (a virtualenv and the Python it was
  made from, or a Node toolchain outside `/usr`) and the files its arguments name (a whole
  `node_modules` tree when the file lies in one);
- the mounts its entry grants, read-only or read-write, at the same paths;
- a private `/tmp` (also its `$HOME`), `/proc` and `/dev`, and no network unless granted.

It runs with every namespace unshared, as an unprivileged user, without capabilities, in a
new session, and dies with agentflux.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentflux.sandbox.spec import SandboxSpec

SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ssl",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/os-release",
)
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = "65534"


def available() -> bool:
    return shutil.which("bwrap") is not None


def code_paths(executable: str, args: Iterable[str], cwd: Path) -> list[Path]:
    """What the server needs read-only to run: its executable's installation and its script files."""
    roots: list[Path] = []
    for program in _with_interpreter(Path(executable)):
        roots.extend(_installation(program))
    for arg in args:
        candidate = Path(arg) if os.path.isabs(arg) else cwd / arg
        if candidate.is_file():
            node_modules = next((p for p in candidate.resolve().parents if p.name == "node_modules"), None)
            roots.append(node_modules or candidate.resolve())
    return _outermost(root for root in roots if not _under(root, Path("/usr")))


def _with_interpreter(program: Path) -> list[Path]:
    """The program, and the interpreter of its `#!` line (console scripts of a virtualenv)."""
    programs = [program]
    try:
        with program.open("rb") as handle:
            first = handle.readline(256)
    except OSError:
        return programs
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words and not words[0].endswith("/env"):
            programs.append(Path(words[0]))
    return programs


def _installation(program: Path) -> list[Path]:
    """The directory tree a program runs from: a virtualenv (plus its base Python), or `prefix/bin/..`."""
    for path in (program, program.resolve()):
        venv = next((p for p in path.parents if (p / "pyvenv.cfg").is_file()), None)
        if venv is not None:
            return [venv, *_venv_base(venv)]
    real = program.resolve()
    if real.parent.name == "bin":
        return [real.parent.parent]
    return [real]


def _venv_base(venv: Path) -> list[Path]:
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            home = Path(value.strip()).resolve()
            return [home.parent if home.name == "bin" else home]
    return []


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _outermost(paths: Iterable[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    return kept


def bwrap_argv(
    spec: SandboxSpec,
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path,
    mounts: list[tuple[Path, Path, str]],
) -> list[str]:
    """The full command: `bwrap <isolation> -- <argv>`, with `mounts` as (host path, target, "ro"|"rw")."""
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    command += ["--uid", NOBODY, "--gid", NOBODY]
    if spec.network == "host":
        command.append("--share-net")
    command += ["--ro-bind", "/usr", "/usr"]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            command += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            command += ["--ro-bind", link, link]
    for path in SYSTEM_FILES:
        command += ["--ro-bind-try", path, path]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in code_paths(argv[0], argv[1:], cwd):
        command += ["--ro-bind", str(path), str(path)]
    # Granted mounts come last so that a read-write grant wins over a read-only code path.
    for host, target, mode in mounts:
        command += ["--bind" if mode == "rw" else "--ro-bind", str(host), str(target)]
    # The working directory exists inside the sandbox (empty unless something is mounted
    # there), so that relative arguments resolve against granted mounts below it.
    command += ["--dir", str(cwd), "--chdir", str(cwd)]
    command.append("--clearenv")
    for name, value in env.items():
        command += ["--setenv", name, value]
    return [*command, "--", *argv]


def sandbox_env(granted: Mapping[str, str], executable: str) -> dict[str, str]:
    """A fresh environment: a system PATH (plus the executable's own folder), a private HOME."""
    path = SANDBOX_PATH
    folder = str(Path(executable).parent)
    if folder not in path.split(":"):
        path = f"{folder}:{path}"
    return {"PATH": path, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", **granted}
