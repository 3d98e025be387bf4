"""A deterministic fixture workspace, and running a server against a fresh copy of it.

Training data comes from really executing calls, so they need a world to act on. For servers
that are granted a folder (the filesystem server), the trainer builds this workspace from a
seed — nested folders, names with spaces, Unicode, upper case and dotfiles, many extensions,
files with real lines to read, search and edit — and swaps it in for the folder the registry
grants, on a fresh copy before every trajectory, so that writes never leak from one example to
the next (and never touch the user's real folder).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agentflux.registry.schema import ServerEntry
from agentflux.sandbox.spec import Mount

WORDS = (
    "budget invoice meeting roadmap draft summary report backup notes sketch recipe itinerary "
    "contract receipts agenda inventory playlist checklist proposal minutes timeline"
).split()
EXTENSIONS = ("txt", "md", "csv", "json", "log")
TEXT_LINES = [
    "Ship version 1.4 on 20 March.",
    "Call Dana about the quarterly report.",
    "Water the plants on Friday.",
    "Renew the library card before 12 May.",
    "Total: 4,210 EUR across 17 invoices.",
    "TODO: rotate the API keys of the staging server.",
    "Café meeting moved to 10:30 in Zürich.",
    "Backup finished without errors at 02:00.",
]


@dataclass
class FixtureEnv:
    """What the workspace holds, for grounding sampled arguments in real paths and lines."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text ("" for binary)
    dirs: list[str] = field(default_factory=list)  # relative, "." first

    def text_files(self) -> list[str]:
        return [path for path, text in self.files.items() if text]


# The held-out world: the same kinds of files under names the training world never uses, so
# held-out figures say whether the adapters copy what a request names or recall training folders.
HELDOUT_NAMES = {
    "notes": "journal", "reports": "finance", "archive": "old", "logs": "var-log", "projects": "work",
    "alpha": "orion", "beta": "vega", "misc": "stuff", "deep": "inner", "er": "most", "My Documents": "Shared Files",
    "Café": "Bäckerei", "UPPER": "CAPS", "photos": "pictures", "todo.txt": "tasks.txt", "Ideas.MD": "Plans.MD",
    "meeting 2026-03-02.md": "standup 2026-04-07.md", "shopping list.txt": "packing list.txt", "menü.txt": "preise.txt",
    "summary.json": "overview.json", "main.py": "app.py", "app.log": "server.log", "image1.png": "scan-02.png",
    "notes.md": "memo.md",
}
WORLDS = ("train", "heldout")


def build_workspace(root: Path, seed: int = 0, world: str = "train") -> FixtureEnv:
    """Create the fixture workspace under `root` (which must not exist); the same seed and world,
    the same tree. The `heldout` world names every folder and most files differently."""
    if world not in WORLDS:
        raise ValueError(f"unknown fixture world {world!r}; known: {', '.join(WORLDS)}")
    rng = random.Random(seed)
    env = FixtureEnv(root)
    fixed = {
        "notes/todo.txt": "\n".join(TEXT_LINES[:4]),
        "notes/meeting 2026-03-02.md": "# Planning meeting\n\nAttendees: Dana, Luis, Mei\n" + TEXT_LINES[0],
        "notes/Ideas.MD": "- a tool that reads my notes\n- a better backup plan",
        "reports/2024-Q3.csv": "month,revenue\nJuly,1200\nAugust,1350\nSeptember,1660",
        "reports/summary.json": '{"quarters": 4, "best": "2024-Q3", "currency": "EUR"}',
        "reports/archive/2023-Q4.csv": "month,revenue\nOctober,980\nNovember,1010\nDecember,1400",
        "logs/app.log": "\n".join(f"2026-03-0{1 + i % 9} 10:{i:02d}:00 INFO request {i} served" for i in range(40)),
        "logs/.debug.log": "DEBUG cache warmed\nDEBUG 3 workers started",
        ".env": "APP_MODE=development\nLOG_LEVEL=info",
        ".gitignore": "*.log\n.env",
        "My Documents/shopping list.txt": "apples\nrice\ncoffee\noat milk",
        "Café/menü.txt": "Espresso 2.40\nCroissant 1.90\nThé vert 2.10",
        "UPPER/README.TXT": "THIS FOLDER HOLDS UPPER-CASE NAMES.",
        "projects/alpha/main.py": 'def greet(name: str) -> str:\n    return f"Hello, {name}!"',
        "projects/alpha/config.json": '{"name": "alpha", "version": "1.4.0"}',
        "projects/beta/notes.md": "Beta is paused until " + rng.choice(["June", "July", "autumn"]) + ".",
        "photos/image1.png": "",
        "archive/old-site.tar.gz": "",
    }
    for index in range(6):  # seed-dependent extras, so two seeds give two worlds
        folder = rng.choice(["notes", "reports", "projects/alpha", "misc", "misc/deep/er"])
        name = f"{rng.choice(WORDS)}-{rng.randint(1, 99)}.{rng.choice(EXTENSIONS)}"
        fixed.setdefault(f"{folder}/{name}", "\n".join(rng.sample(TEXT_LINES, 3)))
    if world == "heldout":
        fixed = {"/".join(HELDOUT_NAMES.get(part, part) for part in path.split("/")): text for path, text in fixed.items()}
    for relative, text in sorted(fixed.items()):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if text:
            path.write_text(text + "\n", encoding="utf-8")
        else:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(64)))
        env.files[relative] = text + "\n" if text else ""
    env.dirs = ["."] + sorted({str(Path(p).parent) for p in env.files if Path(p).parent != Path(".")} | _ancestors(env.files))
    return env


def scan_workspace(root: Path) -> FixtureEnv:
    """A FixtureEnv for an existing folder (the demo writes tasks for examples/workspace)."""
    env = FixtureEnv(root)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            try:
                env.files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                env.files[path.relative_to(root).as_posix()] = ""
    env.dirs = ["."] + sorted(_ancestors(env.files))
    return env


def _ancestors(files: dict[str, str]) -> set[str]:
    found = set()
    for path in files:
        parents = Path(path).parents
        found |= {str(parent) for parent in parents if str(parent) != "."}
    return found


def reset(workspace: Path, pristine: Path) -> None:
    """Make `workspace` an exact copy of `pristine` again, keeping its path (a server may hold it)."""
    if workspace.exists():
        for child in workspace.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    else:
        workspace.mkdir(parents=True)
    shutil.copytree(pristine, workspace, dirs_exist_ok=True)


def granted_folders(entry: ServerEntry, base_dir: Path) -> list[Path]:
    """The host folders an entry grants read-write: what training swaps for the fixture."""
    folders = []
    for mount in entry.sandbox.mounts:
        if mount.mode == "rw":
            path = Path(mount.path).expanduser()
            folders.append((path if path.is_absolute() else base_dir / path).resolve())
    return folders


def fixture_entry(entry: ServerEntry, base_dir: Path, workspace: Path) -> ServerEntry:
    """The entry rewritten to act on `workspace` wherever it would act on a granted folder."""
    folders = granted_folders(entry, base_dir)
    if not folders:
        return entry
    cwd = (base_dir / entry.cwd).resolve() if entry.cwd else base_dir.resolve()

    def swap(text: str) -> str:
        candidate = (Path(text) if Path(text).is_absolute() else cwd / text).resolve()
        if candidate in folders:
            return str(workspace)
        if not candidate.exists():
            return text  # not a path: an option, a name, a value
        for folder in folders:
            if folder in candidate.parents:
                return str(workspace / candidate.relative_to(folder))
        # The server now starts in the copy: a relative path to anything else (its own code,
        # `../../node_modules/...`) must keep pointing where it pointed from the old folder.
        return str(candidate) if not Path(text).is_absolute() else text

    mounts = [m for m in entry.sandbox.mounts if m.mode != "rw"] + [Mount(path=str(workspace), mode="rw")]
    sandbox = entry.sandbox.model_copy(update={"mounts": mounts})
    return entry.model_copy(update={
        "command": swap(entry.command) if entry.command and os.sep in entry.command else entry.command,
        "args": [swap(arg) for arg in entry.args],
        "cwd": swap(str(cwd)),
        "sandbox": sandbox,
    })  # fmt: skip
