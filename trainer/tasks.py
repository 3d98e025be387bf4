"""A task benchmark for the filesystem toolset, in the style of MCP-Bench, generated from a seed.

Every task is a multi-step job on the fixture workspace (workspace.py), written twice, as the
paper's appendix C does:

- explicit: numbered steps that say what to do and where ("1. List the entries of `notes`.
  2. Read `notes/todo.txt`.");
- fuzzed: the same need as a user would put it, with no tool names and no steps.

Because agentflux wrote the task on a workspace it built, it knows what a complete run must
have retrieved (the *requirements*: text that must appear in some successful tool output,
e.g. a listed name, a file's whole text, its exact size) and what the workspace must look like
afterwards (the files a task writes). ToolFit is then computed exactly, without a judge.

Only tasks whose tools the server offers are generated, so a read-only allow-list gets
read-only tasks. With a teacher configured, the teacher rewrites the fuzzed requests
(teacher.fuzz_tasks, with FUZZ_RULES below); a rewrite that names a tool, loses a path or is
not one paragraph is rejected and counted, and the template's request stays.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from agentflux.trainer.workspace import FixtureEnv


@dataclass(frozen=True)
class Requirement:
    """One atomic output the task needs: `evidence` must appear in a successful tool output."""

    what: str
    tool: str  # the tool that produces it (another suitable tool counts as well)
    evidence: str


@dataclass(frozen=True)
class Task:
    id: str
    kind: str
    explicit: str
    fuzzed: str
    requirements: tuple[Requirement, ...]
    solution: tuple[tuple[str, dict[str, Any]], ...]  # calls that solve it: (tool, arguments)
    writes: dict[str, str] = field(default_factory=dict)  # relative path -> its text after the task

    def request(self, style: str) -> str:
        return self.explicit if style == "explicit" else self.fuzzed


STYLES = ("explicit", "fuzzed")


def _contents(text: str) -> str:
    """A read's evidence: the whole text (fixture files share lines; a partial read is not enough)."""
    return text.strip()


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _list_then_read(rng: random.Random, env: FixtureEnv, number: int) -> Task:
    path = rng.choice([p for p in env.text_files() if "/" in p])
    folder, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
    return Task(
        f"list-read-{number}",
        "list, then read",
        f"1. List the entries of the folder `{folder}`.\n2. Read the file `{path}`.",
        rng.choice([
            f"What's in my {folder} folder? I also want to see what {name} in there says.",
            f"Can you check what I keep under {folder} and show me the contents of {name} from it?",
        ]),
        (
            Requirement(f"{folder} is listed, with {name}", "list_directory", name),
            Requirement(f"the contents of {path}", "read_text_file", _contents(env.files[path])),
        ),
        (("list_directory", {"path": folder}), ("read_text_file", {"path": path})),
    )


def _search_then_info(rng: random.Random, env: FixtureEnv, number: int) -> Task:
    path = rng.choice([p for p in env.text_files() if "/" in p and "." in PurePosixPath(p).name])
    folder, suffix = str(PurePosixPath(path).parent), PurePosixPath(path).suffix
    return Task(
        f"search-info-{number}",
        "search, then get info",
        f"1. Search the folder `{folder}` for files matching `*{suffix}`.\n"
        f"2. Get the file information (size, modification time) of `{path}`.",
        rng.choice([
            f"Which {suffix} files are there in {folder}? And how big is {path}, and when was it last changed?",
            f"I'm looking for the {suffix} files somewhere in {folder}; also tell me the size and last change of {path}.",
        ]),
        (
            Requirement(f"the *{suffix} files of {folder}, with {path}", "search_files", path),
            Requirement(f"the size of {path}", "get_file_info", f"size: {_size(env.files[path])}"),
        ),
        (("search_files", {"path": folder, "pattern": f"*{suffix}"}), ("get_file_info", {"path": path})),
    )


def _read_two(rng: random.Random, env: FixtureEnv, number: int) -> Task:
    first, second = rng.sample(env.text_files(), 2)
    return Task(
        f"read-two-{number}",
        "read two files",
        f"1. Read the file `{first}`.\n2. Read the file `{second}`.",
        rng.choice([
            f"Show me what {first} and {second} say.",
            f"I need the contents of {first}, and of {second} too.",
        ]),
        (
            Requirement(f"the contents of {first}", "read_text_file", _contents(env.files[first])),
            Requirement(f"the contents of {second}", "read_text_file", _contents(env.files[second])),
        ),
        (("read_text_file", {"path": first}), ("read_text_file", {"path": second})),
    )


def _write_then_read(rng: random.Random, env: FixtureEnv, number: int) -> Task:
    folder = rng.choice([d for d in env.dirs if d != "."])
    path = f"{folder}/note-{rng.randint(100, 999)}.txt"
    text = rng.choice(["Buy stamps on Monday.", "Budget approved: 2,400 EUR.", "Meet Mei at 09:15."])
    return Task(
        f"write-read-{number}",
        "write, then read back",
        f"1. Write a new file `{path}` containing exactly: {text}\n2. Read `{path}` back to check it.",
        rng.choice([
            f"Please jot down \"{text}\" in a new file {path} and make sure it was saved.",
            f"Save the line \"{text}\" as {path}, then double-check what ended up in it.",
        ]),
        (
            Requirement(f"{path} is written", "write_file", "Successfully wrote"),
            Requirement(f"the contents of {path}", "read_text_file", text),
        ),
        (("write_file", {"path": path, "content": text}), ("read_text_file", {"path": path})),
        {path: text},
    )


# kind -> (the tools it needs, how to write one)
TEMPLATES: dict[str, tuple[tuple[str, ...], Callable[[random.Random, FixtureEnv, int], Task]]] = {
    "list-read": (("list_directory", "read_text_file"), _list_then_read),
    "search-info": (("search_files", "get_file_info"), _search_then_info),
    "read-two": (("read_text_file",), _read_two),
    "write-read": (("write_file", "read_text_file"), _write_then_read),
}


def generate_tasks(env: FixtureEnv, tools: set[str], count: int, seed: int) -> list[Task]:
    """`count` tasks over the kinds the tools allow, in turn; the same seed, the same tasks."""
    kinds = [kind for kind, (needs, _) in TEMPLATES.items() if set(needs) <= tools]
    if not kinds:
        raise ValueError(f"no benchmark task can be written with the tools {sorted(tools)}")
    rng = random.Random(seed)
    return [TEMPLATES[kinds[n % len(kinds)]][1](rng, env, n) for n in range(count)]


FUZZ_RULES = """Rewrite the task below as the message a real user would send to an AI assistant that can use file tools.
Rules:
- One paragraph in a natural, conversational tone: a need and its context, not a procedure.
- Keep every path, file name, pattern and number exactly as written.
- Never name a tool, never number or list the steps.
- Answer with the message only: no quotes, no preface.

Task:
{task}"""


def fuzz_rejection(task: Task, text: str, tool_names: set[str]) -> str | None:
    """Why a teacher's rewrite cannot stand in for the task's fuzzed request (None: it can)."""
    if not text or len(text) > 1200:
        return "fuzzed request empty or too long"
    if "\n" in text.strip():
        return "fuzzed request is not one paragraph"
    if any(name in text for name in tool_names):
        return "fuzzed request names a tool"
    kept = set()
    for _, arguments in task.solution:
        # Paths and written text exactly; a pattern by what it matches (".csv" for "*.csv").
        kept |= {str(arguments[key]) for key in ("path", "content") if arguments.get(key)}
        if arguments.get("pattern"):
            kept.add(str(arguments["pattern"]).lstrip("*"))
    if not all(value in text for value in kept):
        return "fuzzed request lost a path, pattern or text"
    return None
