"""Requests as people write them, for the intents of common servers (files, clocks).

A tool whose name says what it does (`read_text_file`, `list_directory`, `convert_time`) gets
plans from an intent here: many surface forms per intent (questions, imperatives, polite,
terse, with context), paths written the ways people write them (bare, quoted, `./x`, absolute
under the served folder, "todo.txt in notes"), quantities and constraints ("the first 5
lines", "only .md files", "biggest first"), places by city or country, "here" for the zone a
clock server calls local, a greeting or sign-off and a typo now and then, and multi-step tasks
whose later calls use what the earlier ones returned. A tool with no intent here gets the
generic template of `synth.describe`.

Every template list is split in two by position: the held-out split (`heldout=True`) uses only
phrasings, and zone-database cities, that training never sees, so the held-out figures measure
how far the adapters generalize rather than how well they recall a template.

The gold arguments are what a careful person would pass: a path as written (without its
quotes), or composed from a folder and a name; an absolute path when the request or an earlier
result gives one; times in 24-hour HH:MM; IANA zone names.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any, TypeVar

from agentflux.trainer.workspace import FixtureEnv

Call = tuple[str, dict[str, Any]]
T = TypeVar("T")
HELDOUT_EVERY = 4  # every 4th phrasing (and city) is held out


@dataclass(frozen=True)
class Phrased:
    request: str
    calls: tuple[Call, ...]
    kind: str
    style: str


def part(items: Sequence[T], heldout: bool) -> list[T]:
    """The training phrasings, or the held-out ones, of a list."""
    return [item for index, item in enumerate(items) if (index % HELDOUT_EVERY == HELDOUT_EVERY - 1) == heldout]


class Speaker:
    """Writes paths, times and typos the way people do, for one world and one split.

    `local_zone` is the zone a clock server assumes when a request names none (its schema says)."""

    def __init__(
        self, rng: random.Random, env: FixtureEnv | None, root: str | None, heldout: bool, local_zone: str | None = None
    ) -> None:  # fmt: skip
        self.rng, self.env, self.root, self.heldout, self.local_zone = rng, env, root, heldout, local_zone

    def pick(self, templates: Sequence[str]) -> str:
        return self.rng.choice(part(templates, self.heldout))

    def frame(self, template: str) -> str:
        """Now and then, the greeting or sign-off people wrap a request in."""
        if self.rng.random() < 0.15:
            template = self.pick(OPENERS) + template
        if self.rng.random() < 0.15:
            template = template + self.pick(CLOSERS)
        return template

    def file(self, path: str) -> tuple[str, str]:
        """A file path as a person writes it, and the argument that stands for it."""
        rng, r = self.rng, self.rng.random()
        if r < 0.4:
            return path, path
        if r < 0.65:
            return rng.choice(['"{}"', "'{}'", "`{}`"]).format(path), path
        if r < 0.75:
            return "./" + path, "./" + path
        if r < 0.87 and "/" in path:
            folder, name = path.rsplit("/", 1)
            return rng.choice(["{n} in {f}", "{n} in the {f} folder", "{n} from {f}", "the {n} file under {f}"]).format(
                n=name, f=folder
            ), path
        if self.root:
            absolute = f"{self.root}/{path}"
            return absolute, absolute
        return path, path

    def folder(self, path: str) -> tuple[str, str]:
        if path == ".":
            return self.rng.choice(["the workspace", "the top-level folder", "the root folder", "my files", "."]), "."
        written, argument = self.file(path)
        if written.startswith(path.rsplit("/", 1)[-1] + " "):  # "x in y" reads oddly for a folder
            return path, path
        return written, argument

    def typo(self, text: str) -> str:
        """One swapped letter pair in a long plain word, for one request in twenty."""
        if self.rng.random() > 0.05:
            return text
        words = text.split(" ")
        plain = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
        if not plain:
            return text
        index = self.rng.choice(plain)
        word = words[index]
        cut = self.rng.randrange(1, len(word) - 2)
        words[index] = word[:cut] + word[cut + 1] + word[cut] + word[cut + 2 :]
        return " ".join(words)


def _style(template: str) -> str:
    if template.endswith("?"):
        return "question"
    lowered = template.lower()
    if "please" in lowered or "could you" in lowered or "thanks" in lowered:
        return "polite"
    if " — " in template or lowered.startswith(("i'm ", "i am ", "for ", "before ")):
        return "context"
    return "terse" if len(template.split()) <= 4 else "imperative"


def _say(speaker: Speaker, templates: Sequence[str], kind: str, calls: Sequence[Call], **slots: str) -> Phrased:
    template = speaker.pick(templates)
    framed = speaker.frame(template)
    request = speaker.typo(framed).format(**slots)
    if framed[:1].isalpha():  # never capitalize a path or a name that opens the request
        request = request[:1].upper() + request[1:]
    return Phrased(request, tuple(calls), kind, _style(template))


OPENERS = [
    "hey, ", "hi! ", "quick question: ", "ok so ", "hello — ", "one more thing: ", "sorry to bother you, ",
    "when you get a sec, ", "hi there, ", "so, ", "um, ", "right, ",
]
CLOSERS = [
    " thanks!", " thx", ", thank you", " please", " :)", " — cheers", " asap", ", if you can", " ty", " (thanks)",
    "!", " when you can",
]


# -- files ---------------------------------------------------------------------------------------

READ = [
    "what does {p} say?", "show me {p}", "open {p}", "can you read {p} for me?", "print the contents of {p}",
    "I need to see what's in {p}", "cat {p}", "read {p}", "give me the text of {p}", "what's written in {p}?",
    "please show me the file {p}", "could you pull up {p}?", "display {p}", "let me see {p}, please",
    "I'm checking something — read {p}", "what's inside {p}?",
]
READ_HEAD = [
    "show me the first {n} lines of {p}", "just the top {n} lines of {p}, please", "head -n {n} {p}",
    "what are the first {n} lines in {p}?", "read only the beginning of {p} ({n} lines)", "first {n} lines of {p}",
    "peek at the first {n} lines of {p}", "give me {p}'s opening {n} lines",
]
READ_TAIL = [
    "show me the last {n} lines of {p}", "tail {p}, {n} lines", "what are the final {n} lines of {p}?",
    "the last {n} lines of {p}, please", "read the end of {p} (last {n} lines)", "last {n} lines in {p}",
    "I only care about the last {n} lines of {p}", "give me the bottom {n} lines of {p}",
]
READ_MANY = [
    "read {p} and {q}", "show me both {p} and {q}", "what do {p} and {q} say?", "open {p} and {q} together",
    "I need the contents of {p} and of {q}", "compare {p} with {q}", "print {p} and {q}, please",
    "let me see {p} as well as {q}", "could you read {p} and {q} at once?",
]
READ_MEDIA = [
    "show me the image {p}", "open the picture {p}", "load {p} as media", "can you fetch the image at {p}?",
    "display the photo {p}", "get me {p} as an image", "I want to look at {p}",
]
WRITE = [
    "create a file {p} containing: {c}", "save \"{c}\" to {p}", "write \"{c}\" into a new file {p}",
    "make a note in {p} that says: {c}", "put the text \"{c}\" in {p}", "new file {p} with \"{c}\"",
    "please write {p} with the line: {c}", "could you save a file {p} that reads \"{c}\"?",
    "jot down \"{c}\" in {p}", "store \"{c}\" as {p}",
]
EDIT = [
    "in {p}, replace \"{o}\" with \"{n}\"", "change \"{o}\" to \"{n}\" in {p}", "edit {p}: \"{o}\" should read \"{n}\"",
    "fix {p} so that \"{o}\" becomes \"{n}\"", "please update {p}, swapping \"{o}\" for \"{n}\"",
    "could you replace the line \"{o}\" in {p} with \"{n}\"?", "in the file {p} turn \"{o}\" into \"{n}\"",
    "rewrite \"{o}\" as \"{n}\" in {p}",
]
EDIT_DRY = [
    "preview replacing \"{o}\" with \"{n}\" in {p}, without saving", "dry run: change \"{o}\" to \"{n}\" in {p}",
    "what would {p} look like with \"{o}\" changed to \"{n}\"? don't save it",
    "show me the diff if \"{o}\" became \"{n}\" in {p} (just a preview)",
]
MKDIR = [
    "make a folder {d}", "create the directory {d}", "mkdir {d}", "I need a new folder called {d}",
    "please set up a directory {d}", "could you create {d} as a folder?", "add a folder {d}", "new directory {d}",
]
LIST = [
    "what's in {d}?", "list {d}", "show me the contents of {d}", "which files are in {d}?", "ls {d}",
    "what do I have under {d}?", "list the files and folders in {d}", "what's inside {d}?",
    "please list everything in {d}", "could you show me what {d} contains?", "browse {d}", "what's there in {d}?",
]
LIST_SIZES = [
    "list {d} with file sizes", "how big are the files in {d}?", "show the sizes of everything in {d}",
    "ls -l {d}", "list {d} including sizes", "which files in {d} take up space?", "what's in {d}, and how large is each?",
    "sizes of the entries in {d}, please",
]
LIST_BY_SIZE = [
    "what are the biggest files in {d}?", "list {d} sorted by size", "show {d}, largest first",
    "which files in {d} are the largest?", "order the contents of {d} by size", "ls {d} by size",
    "rank the files in {d} by size, please", "list {d} biggest first",
]
TREE = [
    "show the tree of {d}", "give me the full folder structure under {d}", "recursive listing of {d}",
    "tree {d}", "what does the whole {d} hierarchy look like?", "map out every folder and file in {d}",
    "please show {d} as a tree", "the complete directory tree of {d}",
]
TREE_EXCLUDE = [
    "show the tree of {d} but skip {x}", "folder structure of {d}, leaving out {x}", "tree {d} without {x}",
    "recursive listing of {d}, ignoring {x}", "the whole {d} hierarchy except {x}", "tree of {d}, excluding {x}",
]
MOVE = [
    "rename {s} to {t}", "move {s} to {t}", "mv {s} {t}", "please move {s} over to {t}",
    "could you rename {s} as {t}?", "relocate {s} to {t}", "{s} should be called {t} now",
    "change the name of {s} to {t}",
]
SEARCH_EXT = [
    "find all {label} files in {d}", "which {label} files are there in {d}?", "search {d} for {label} files",
    "list every {label} file under {d}", "where are the {label} files in {d}?", "look for {label} files in {d}",
    "any {label} files in {d}?", "please find the {label} files in {d}",
]
SEARCH_NAME = [
    "where is {n}?", "find {n}", "search for a file called {n}", "locate {n} for me", "which folder holds {n}?",
    "is there a file named {n} somewhere?", "look up where {n} lives", "find the path of {n}",
]
INFO = [
    "how big is {p}?", "when was {p} last modified?", "get the metadata of {p}", "file info for {p}",
    "what are the permissions on {p}?", "is {p} a file or a folder?", "stat {p}", "details of {p}, please",
    "when was {p} created?", "could you tell me the size of {p}?",
]
ALLOWED = [
    "which folders can you access?", "what directories are you allowed to use?", "where can you read files?",
    "list the allowed directories", "what's your root folder?", "which paths do you have access to?",
    "show me the directories you can work in", "what folders are you permitted to touch?",
]
# Multi-step tasks: (first part, second part) joined by a connective.
LIST_THEN_READ = [
    "what's in {d}? then show me {n} from there", "list {d} and read {n} in it", "look inside {d}, then open {n}",
    "check what I keep under {d} and show me {n}", "list {d}; after that, print {n} from it",
    "browse {d} and then read the file {n} there", "what files are in {d}? I also want to see {n} in there",
    "show me the folder {d}, then the contents of its {n}",
    "1) list {d}\n2) read {n} in it", "Step 1: look at the entries of {d}. Step 2: open {n} from that folder.",
    "1. Show what {d} holds.\n2. Print {n} from there.", "- list {d}\n- then read {n} inside it",
]
FIND_THEN_READ = [
    "read {n}", "show me {n}", "what does {n} say?", "open {n}", "find {n} and show me what it says",
    "I can't remember where {n} is — read it for me", "locate {n}, then print it", "where's {n}? open it",
    "1) find {n}\n2) show its contents", "Step 1: search the workspace for {n}. Step 2: read it.",
    "1. Locate the file {n}.\n2. Open it.", "- find {n}\n- print it",
]
INFO_THEN_READ = [
    "how big is {p}, and what does it say?", "check the size of {p}, then read it", "get info on {p} and show me its contents",
    "when was {p} last changed? also show me the text", "stat {p}, then cat it", "give me {p}'s details and then read it",
    "what are the details of {p}? and its contents too", "look up {p}'s metadata, then open it",
    "1) stat {p}\n2) read it", "Step 1: get the size and dates of {p}. Step 2: print its text.",
    "1. Look up the metadata of {p}.\n2. Show its contents.", "- file info for {p}\n- then its contents",
]
WRITE_THEN_READ = [
    "save \"{c}\" to {p} and read it back", "write \"{c}\" in a new file {p}, then show me it",
    "create {p} with \"{c}\" and check what ended up in it", "jot \"{c}\" down in {p} and make sure it was saved",
    "put \"{c}\" into {p}, then print the file", "store \"{c}\" as {p} and confirm by reading it",
    "1) create {p} with the text: {c}\n2) read it back", "Step 1: save \"{c}\" to {p}. Step 2: open {p} to verify.",
    "1. Make a new file {p} that says: {c}\n2. Print it.", "- write \"{c}\" into {p}\n- show me the file afterwards",
]
MKDIR_THEN_WRITE = [
    "make a folder {d} and put a file {n} in it saying \"{c}\"", "create the directory {d}, then write \"{c}\" to {d}/{n}",
    "set up {d} and save \"{c}\" as {n} inside it", "mkdir {d}, then create {d}/{n} containing \"{c}\"",
    "new folder {d} with a file {n} that reads \"{c}\"", "I need a folder {d} holding {n} with the text \"{c}\"",
    "1) mkdir {d}\n2) save \"{c}\" as {d}/{n}", "Step 1: create the folder {d}. Step 2: write {d}/{n} containing \"{c}\".",
    "1. Make the directory {d}.\n2. In it, create {n} with: {c}", "- new folder {d}\n- file {n} inside it saying \"{c}\"",
]
READ_THEN_READ = [
    "first read {p}, then {q}", "open {p}; after that, open {q}", "read {p}. Then read {q} too",
    "show me {p} and afterwards {q}", "start with {p}, then show me {q}", "read {p}, and once done, read {q}",
    "1) read {p}\n2) read {q}", "Step 1: open {p}. Step 2: open {q}.", "1. Print {p}.\n2. Print {q}.",
    "- show {p}\n- show {q}",
]
SEARCH_THEN_INFO = [
    "find the {label} files in {d}, then tell me how big {p} is", "which {label} files does {d} have? and when was {p} changed?",
    "search {d} for {label} files and give me the details of {p}", "list the {label} files under {d}; also stat {p}",
    "look for {label} files in {d}, then get the metadata of {p}", "any {label} files in {d}? I also need the size of {p}",
    "1) search {d} for {label} files\n2) file info of {p}", "Step 1: find {label} files in {d}. Step 2: get the size and dates of {p}.",
    "1. Look for {label} files under {d}.\n2. Show the details of {p}.", "- {label} files in {d}\n- metadata of {p}",
]
CONTENTS = [
    "Buy stamps on Monday.", "Budget approved: 2,400 EUR.", "Meet Mei at 09:15.", "remember the backup",
    "Ünïcode note ✓", "ship it on Friday", "call Dana at 10:30", "Invoice 17 is paid.", "TODO: renew the domain",
    "Lunch with Luis, Thursday", "v2 goes live next week", "Keys are in the top drawer.",
]
NEW_NAMES = ["draft", "plan", "ideas", "summary", "Notes 2026", "todo-next", "résumé", "log-book", "inbox", "minutes"]
NEW_FOLDERS = ["archive-2026", "drafts", "new stuff", "Projects/gamma", "tmp", "exports", "inbox", "q4"]
EXTENSIONS = {"md": ["markdown", ".md", "*.md"], "txt": ["text", ".txt", "*.txt"], "csv": ["CSV", ".csv", "*.csv"],
              "json": ["JSON", ".json", "*.json"], "log": ["log", ".log", "*.log"], "py": ["Python", ".py", "*.py"]}


def _folder_of(path: str) -> str:
    parent = str(PurePosixPath(path).parent)
    return "." if parent in ("", ".") else parent


def _new_file(s: Speaker, env: FixtureEnv) -> str:
    folder = s.rng.choice(env.dirs)
    name = s.rng.choice(NEW_NAMES) + s.rng.choice([".md", ".txt", ".json", ""])
    path = name if folder == "." else f"{folder}/{name}"
    return path if path not in env.files else path + "-2"


def _served(s: Speaker, path: str) -> str:
    """The absolute path the server reports for a workspace path (what a search returns)."""
    return f"{s.root}/{path}" if s.root else path


def file_read(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    path = s.rng.choice(env.text_files())
    written, argument = s.file(path)
    r = s.rng.random()
    if r < 0.15:
        n = s.rng.choice([1, 2, 3, 5, 10])
        return _say(s, READ_HEAD, "single", [(tool, {"path": argument, "head": n})], p=written, n=str(n))
    if r < 0.3:
        n = s.rng.choice([1, 2, 3, 5, 10])
        return _say(s, READ_TAIL, "single", [(tool, {"path": argument, "tail": n})], p=written, n=str(n))
    return _say(s, READ, "single", [(tool, {"path": argument})], p=written)


def file_read_many(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    first, second = s.rng.sample(env.text_files(), 2)
    (p, a), (q, b) = s.file(first), s.file(second)
    return _say(s, READ_MANY, "single", [(tool, {"paths": [a, b]})], p=p, q=q)


def file_read_media(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    media = [p for p, text in env.files.items() if not text and p.endswith((".png", ".jpg", ".gif", ".mp3", ".wav"))]
    written, argument = s.file(s.rng.choice(media or list(env.files)))
    return _say(s, READ_MEDIA, "single", [(tool, {"path": argument})], p=written)


def file_write(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    written, argument = s.file(_new_file(s, env))
    content = s.rng.choice(CONTENTS)
    return _say(s, WRITE, "single", [(tool, {"path": argument, "content": content})], p=written, c=content)


def file_edit(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    lines = {p: [line for line in env.files[p].splitlines() if line.strip() and '"' not in line] for p in env.text_files()}
    path = s.rng.choice(sorted(p for p, found in lines.items() if found))
    old = s.rng.choice(lines[path])
    new = s.rng.choice(CONTENTS)
    written, argument = s.file(path)
    arguments: dict[str, Any] = {"path": argument, "edits": [{"oldText": old, "newText": new}]}
    if s.rng.random() < 0.2:
        return _say(s, EDIT_DRY, "single", [(tool, arguments | {"dryRun": True})], p=written, o=old, n=new)
    return _say(s, EDIT, "single", [(tool, arguments)], p=written, o=old, n=new)


def file_mkdir(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    base = s.rng.choice(NEW_FOLDERS)
    parent = s.rng.choice([".", *[d for d in env.dirs if d.count("/") == 0 and d != "."]])
    path = base if parent == "." else f"{parent}/{base}"
    written, argument = s.file(path)
    return _say(s, MKDIR, "single", [(tool, {"path": argument})], d=written)


def file_list(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    written, argument = s.folder(s.rng.choice(env.dirs))
    return _say(s, LIST, "single", [(tool, {"path": argument})], d=written)


def file_list_sizes(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    written, argument = s.folder(s.rng.choice(env.dirs))
    if s.rng.random() < 0.4:
        return _say(s, LIST_BY_SIZE, "single", [(tool, {"path": argument, "sortBy": "size"})], d=written)
    return _say(s, LIST_SIZES, "single", [(tool, {"path": argument})], d=written)


def file_tree(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    written, argument = s.folder(s.rng.choice([d for d in env.dirs if d.count("/") <= 1]))
    if s.rng.random() < 0.3:
        pattern = s.rng.choice(["*.log", "*.csv", "archive", "*.json", ".env"])
        label = s.rng.choice([pattern, f"`{pattern}`"])
        return _say(s, TREE_EXCLUDE, "single", [(tool, {"path": argument, "excludePatterns": [pattern]})], d=written, x=label)
    return _say(s, TREE, "single", [(tool, {"path": argument})], d=written)


def file_move(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    source = s.rng.choice(list(env.files))
    folder = _folder_of(source)
    if s.rng.random() < 0.5:  # a rename in place
        stem = s.rng.choice(NEW_NAMES) + PurePosixPath(source).suffix
        target = stem if folder == "." else f"{folder}/{stem}"
    else:  # into another folder, same name
        other = s.rng.choice([d for d in env.dirs if d != folder])
        name = PurePosixPath(source).name
        target = name if other == "." else f"{other}/{name}"
    if target in env.files:
        target = target + "-moved"
    (ws, a), (wt, b) = s.file(source), s.file(target)
    return _say(s, MOVE, "single", [(tool, {"source": a, "destination": b})], s=ws, t=wt)


def file_search(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    if s.rng.random() < 0.6:
        extension = s.rng.choice([e for e in EXTENSIONS if any(p.endswith("." + e) for p in env.files)])
        label, pattern = _glob(s, extension)
        written, argument = s.folder(s.rng.choice(env.dirs))
        return _say(s, SEARCH_EXT, "single", [(tool, {"path": argument, "pattern": pattern})], label=label, d=written)
    name = PurePosixPath(s.rng.choice(list(env.files))).name
    return _say(s, SEARCH_NAME, "single", [(tool, {"path": ".", "pattern": f"**/{name}"})], n=name)


def _glob(s: Speaker, extension: str) -> tuple[str, str]:
    """How a person names a kind of file, and the pattern that finds it: a glob they write is
    copied as written; a kind they name ("markdown", ".md") is searched for at every depth."""
    label = s.rng.choice(EXTENSIONS[extension])
    return (f"`{label}`" if s.rng.random() < 0.5 else label, label) if "*" in label else (label, f"**/*.{extension}")


def file_info(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    path = s.rng.choice(list(env.files) + [d for d in env.dirs if d != "."])
    written, argument = s.file(path)
    return _say(s, INFO, "single", [(tool, {"path": argument})], p=written)


def file_allowed(s: Speaker, env: FixtureEnv, tool: str) -> Phrased:
    return _say(s, ALLOWED, "single", [(tool, {})])


# Chains: (the tools they need by intent, how to write one).
def chain_list_then_read(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    path = s.rng.choice([p for p in env.text_files() if "/" in p])
    folder, name = _folder_of(path), PurePosixPath(path).name
    written, argument = s.folder(folder)
    read_path = path if not argument.startswith(("/", "./")) else argument.rstrip("/") + "/" + name
    calls = [(tools["list"], {"path": argument}), (tools["read"], {"path": read_path})]
    return _say(s, LIST_THEN_READ, "list-then-read", calls, d=written, n=name)


def chain_find_then_read(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    # A name alone, and only one file has it: search for it, then read where the search found it.
    names: dict[str, list[str]] = {}
    for path in env.text_files():
        names.setdefault(PurePosixPath(path).name, []).append(path)
    name, paths = s.rng.choice(sorted((n, p) for n, p in names.items() if len(p) == 1 and "/" in p[0]))
    calls = [(tools["search"], {"path": ".", "pattern": f"**/{name}"}), (tools["read"], {"path": _served(s, paths[0])})]
    return _say(s, FIND_THEN_READ, "find-then-read", calls, n=name)


def chain_search_then_info(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    path = s.rng.choice([p for p in env.text_files() if "/" in p and "." in PurePosixPath(p).name])
    extension = PurePosixPath(path).suffix.lstrip(".").lower()
    if extension not in EXTENSIONS:
        extension = "txt"
    label, pattern = _glob(s, extension)
    (written, argument), (p, info) = s.folder(_folder_of(path)), s.file(path)
    calls = [(tools["search"], {"path": argument, "pattern": pattern}), (tools["info"], {"path": info})]
    return _say(s, SEARCH_THEN_INFO, "search-then-info", calls, label=label, d=written, p=p)


def chain_info_then_read(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    written, argument = s.file(s.rng.choice(env.text_files()))
    calls = [(tools["info"], {"path": argument}), (tools["read"], {"path": argument})]
    return _say(s, INFO_THEN_READ, "info-then-read", calls, p=written)


def chain_write_then_read(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    written, argument = s.file(_new_file(s, env))
    content = s.rng.choice(CONTENTS)
    calls = [(tools["write"], {"path": argument, "content": content}), (tools["read"], {"path": argument})]
    return _say(s, WRITE_THEN_READ, "write-then-read", calls, p=written, c=content)


def chain_mkdir_then_write(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    folder = s.rng.choice(NEW_FOLDERS)
    name = s.rng.choice(NEW_NAMES) + ".txt"
    content = s.rng.choice(CONTENTS)
    calls = [(tools["mkdir"], {"path": folder}), (tools["write"], {"path": f"{folder}/{name}", "content": content})]
    return _say(s, MKDIR_THEN_WRITE, "mkdir-then-write", calls, d=folder, n=name, c=content)


def chain_read_then_read(s: Speaker, env: FixtureEnv, tools: dict[str, str]) -> Phrased:
    first, second = s.rng.sample(env.text_files(), 2)
    (p, a), (q, b) = s.file(first), s.file(second)
    return _say(s, READ_THEN_READ, "read-then-read", [(tools["read"], {"path": a}), (tools["read"], {"path": b})], p=p, q=q)


# -- clocks --------------------------------------------------------------------------------------

# Places people name, with the IANA zone each lies in: big cities, cities whose zone is named for
# another one (Mumbai is Asia/Kolkata), and countries with one zone. They all train: they are what
# people ask about, and no model infers Kolkata from Mumbai. The zone database adds its own cities
# (`zone_cities`), a quarter of which are held out; from those, a model learns to write any zone.
CITIES = [
    ("Tokyo", "Asia/Tokyo"), ("New York", "America/New_York"), ("London", "Europe/London"), ("Paris", "Europe/Paris"),
    ("Berlin", "Europe/Berlin"), ("Sydney", "Australia/Sydney"), ("Los Angeles", "America/Los_Angeles"),
    ("Singapore", "Asia/Singapore"), ("São Paulo", "America/Sao_Paulo"), ("Nairobi", "Africa/Nairobi"),
    ("Mumbai", "Asia/Kolkata"), ("Chicago", "America/Chicago"), ("Dubai", "Asia/Dubai"), ("Toronto", "America/Toronto"),
    ("Madrid", "Europe/Madrid"), ("Seoul", "Asia/Seoul"), ("Moscow", "Europe/Moscow"), ("Mexico City", "America/Mexico_City"),
    ("Rome", "Europe/Rome"), ("Hong Kong", "Asia/Hong_Kong"), ("Cairo", "Africa/Cairo"), ("Denver", "America/Denver"),
    ("Amsterdam", "Europe/Amsterdam"), ("Shanghai", "Asia/Shanghai"), ("Johannesburg", "Africa/Johannesburg"),
    ("Auckland", "Pacific/Auckland"), ("Stockholm", "Europe/Stockholm"), ("Bangkok", "Asia/Bangkok"),
    ("Lisbon", "Europe/Lisbon"), ("Vancouver", "America/Vancouver"), ("Istanbul", "Europe/Istanbul"),
    ("Jakarta", "Asia/Jakarta"), ("Buenos Aires", "America/Argentina/Buenos_Aires"), ("Zurich", "Europe/Zurich"),
    ("Honolulu", "Pacific/Honolulu"), ("Lagos", "Africa/Lagos"),
    ("San Francisco", "America/Los_Angeles"), ("Seattle", "America/Los_Angeles"), ("San Diego", "America/Los_Angeles"),
    ("Las Vegas", "America/Los_Angeles"), ("Boston", "America/New_York"), ("Washington", "America/New_York"),
    ("Miami", "America/New_York"), ("Atlanta", "America/New_York"), ("Philadelphia", "America/New_York"),
    ("Houston", "America/Chicago"), ("Dallas", "America/Chicago"), ("Austin", "America/Chicago"),
    ("Montreal", "America/Toronto"), ("Ottawa", "America/Toronto"), ("Rio de Janeiro", "America/Sao_Paulo"),
    ("Beijing", "Asia/Shanghai"), ("Delhi", "Asia/Kolkata"), ("New Delhi", "Asia/Kolkata"), ("Bangalore", "Asia/Kolkata"),
    ("Osaka", "Asia/Tokyo"), ("Barcelona", "Europe/Madrid"), ("Munich", "Europe/Berlin"), ("Frankfurt", "Europe/Berlin"),
    ("Milan", "Europe/Rome"), ("Manchester", "Europe/London"), ("Edinburgh", "Europe/London"), ("Geneva", "Europe/Zurich"),
    ("Tel Aviv", "Asia/Jerusalem"), ("Cape Town", "Africa/Johannesburg"), ("Saint Petersburg", "Europe/Moscow"),
    ("Abu Dhabi", "Asia/Dubai"), ("Japan", "Asia/Tokyo"), ("India", "Asia/Kolkata"), ("the UK", "Europe/London"),
    ("France", "Europe/Paris"), ("Germany", "Europe/Berlin"), ("China", "Asia/Shanghai"), ("Kenya", "Africa/Nairobi"),
    ("Egypt", "Africa/Cairo"), ("Spain", "Europe/Madrid"), ("Italy", "Europe/Rome"), ("South Korea", "Asia/Seoul"),
    ("Thailand", "Asia/Bangkok"), ("Turkey", "Europe/Istanbul"), ("Nigeria", "Africa/Lagos"),
    ("the Netherlands", "Europe/Amsterdam"), ("Sweden", "Europe/Stockholm"), ("Portugal", "Europe/Lisbon"),
    ("Switzerland", "Europe/Zurich"), ("Argentina", "America/Argentina/Buenos_Aires"), ("Israel", "Asia/Jerusalem"),
    ("New Zealand", "Pacific/Auckland"), ("Hawaii", "Pacific/Honolulu"), ("Ireland", "Europe/Dublin"),
    ("Poland", "Europe/Warsaw"), ("Greece", "Europe/Athens"), ("Vietnam", "Asia/Ho_Chi_Minh"),
    ("the Philippines", "Asia/Manila"), ("Pakistan", "Asia/Karachi"), ("Bangladesh", "Asia/Dhaka"),
    ("Norway", "Europe/Oslo"), ("Finland", "Europe/Helsinki"), ("Denmark", "Europe/Copenhagen"),
    ("Austria", "Europe/Vienna"), ("Belgium", "Europe/Brussels"), ("Czechia", "Europe/Prague"),
    ("Hungary", "Europe/Budapest"), ("Colombia", "America/Bogota"), ("Peru", "America/Lima"),
    ("Saudi Arabia", "Asia/Riyadh"), ("Qatar", "Asia/Qatar"), ("Malaysia", "Asia/Kuala_Lumpur"),
    ("Taiwan", "Asia/Taipei"), ("Nepal", "Asia/Kathmandu"), ("Iran", "Asia/Tehran"), ("Morocco", "Africa/Casablanca"),
    ("Ghana", "Africa/Accra"), ("Ethiopia", "Africa/Addis_Ababa"), ("Iceland", "Atlantic/Reykjavik"),
]
REGIONS = ("Africa", "America", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific")


@lru_cache(maxsize=1)
def zone_cities() -> tuple[tuple[str, str], ...]:
    """The zone database's cities as people write them (Europe/Paris: Paris; Asia/Ho_Chi_Minh:
    Ho Chi Minh), from the `tzdata` package rather than the system's copy, so that machines with
    the same package version draw the same ones; names `CITIES` places in another zone are left out."""
    from importlib.resources import files

    named = {city for city, _ in CITIES}
    found = []
    for zone in files("tzdata").joinpath("zones").read_text(encoding="utf-8").split():
        region, _, city = zone.partition("/")
        name = city.replace("_", " ")
        # Not abbreviations (Australia/ACT): nobody says them for a place.
        if region in REGIONS and name.replace(" ", "").isalpha() and not city.isupper() and name not in named:
            found.append((name, zone))
    return tuple(sorted(found))


NOW = [
    "what time is it in {c}?", "current time in {c}", "what's the time in {c} right now?", "time in {c} please",
    "what time is it over in {c}?", "is it late in {c}? what's the time there", "tell me the time in {c}",
    "could you check the local time in {c}?", "I'm calling someone in {c} — what time is it there?", "{c} time now?",
    "what's the current time in the {z} time zone?", "now in {z}?",
]
CONVERT = [
    "{t} in {a} is what time in {b}?", "convert {t} {a} time to {b}", "if it's {t} in {a}, what time is it in {b}?",
    "{t} {a} in {b} time", "what is {t} {a} time in {b}?", "I have a meeting at {t} in {a} — when is that in {b}?",
    "please convert {t} from {a} to {b}", "when it's {t} in {a}, what's the time in {b}?", "{t} {a} → {b}",
    "translate {t} {a} time into {b} time", "could you convert {t} ({z}) to {y}?", "{t} in {z} is when in {y}?",
]


def _clock(s: Speaker) -> tuple[str, str]:
    """A time as written (9:30, 9:30 am, 21:15, 3pm, noon), and as HH:MM."""
    hour, minute = s.rng.randrange(24), s.rng.choice([0, 0, 15, 30, 45, 5, 50])
    gold = f"{hour:02d}:{minute:02d}"
    r = s.rng.random()
    if r < 0.4:
        return gold if s.rng.random() < 0.5 else f"{hour}:{minute:02d}", gold
    if hour == 12 and minute == 0 and r < 0.5:
        return "noon", gold
    twelve, meridiem = hour % 12 or 12, "am" if hour < 12 else "pm"
    suffix = s.rng.choice([meridiem, " " + meridiem, " " + meridiem.upper()])
    return (f"{twelve}{suffix}" if minute == 0 and s.rng.random() < 0.6 else f"{twelve}:{minute:02d}{suffix}"), gold


def _city(s: Speaker) -> tuple[str, str]:
    """A place and its zone: in training, half the time one people name most (`CITIES`)."""
    if not s.heldout and s.rng.random() < 0.5:
        return s.rng.choice(CITIES)
    return s.rng.choice(part(zone_cities(), s.heldout))


NOW_HERE = [
    "what time is it?", "what's the time right now?", "time check, please", "what time is it here?",
    "do you have the time?", "current local time?", "tell me the time", "what's the time now?",
    "could you check what time it is?", "what time do you have?", "is it late already? what's the time",
    "my local time, please",
]
CONVERT_FROM_HERE = [
    "what's {t} my time in {b}?", "when it's {t} here, what time is it in {b}?", "convert {t} local time to {b}",
    "if I call at {t} my time, what time is it for them in {b}?", "{t} here is what time in {b}?",
    "I'm free at {t} — what time would that be in {b}?", "translate {t} from my time zone to {b}",
    "{t} local → {b}",
]
CONVERT_TO_HERE = [
    "{t} in {a} is what time here?", "what is {t} {a} time in my time zone?", "convert {t} from {a} to local time",
    "a webinar starts at {t} {a} time — when is that for me?", "when is {t} {a} time where I am?",
    "{t} {a} in local time, please", "the call is at {t} in {a}; what's that my time?", "{t} {a} → my time",
]
NOW_THEN_NOW = [
    "what time is it in {a} and in {b}?", "current time in {a} and {b}, please", "tell me the time in {a}, then in {b}",
    "what's the time in {a}? and in {b}?", "I have friends in {a} and {b} — what time is it for each?",
    "time in {a} vs {b}?", "check the clocks in {a} and {b}", "is it morning in {a}? and in {b}? what time is it in both",
    "1) time in {a}\n2) time in {b}", "- current time in {a}\n- current time in {b}",
    "Step 1: the time in {a}. Step 2: the time in {b}.", "what time is it right now in {a}, and what about {b}?",
]
NOW_THEN_CONVERT = [
    "what time is it in {a} right now? also, what is {t} there in {b}?",
    "check the time in {a}, then convert {t} {a} time to {b}", "current time in {a}, and {t} {a} in {b} time",
    "tell me the time in {a}; and if it's {t} there, what time is it in {b}?",
    "1) time now in {a}\n2) {t} {a} time in {b}", "- what time is it in {a}\n- convert {t} from {a} to {b}",
    "what's the time in {a}? I also need {t} {a} converted to {b}",
    "Step 1: the current time in {a}. Step 2: {t} in {a} expressed in {b} time.",
]

CONVERT_THEN_CONVERT = [
    "{t} in {a} — what time is that in {b} and in {c}?", "convert {t} {a} time to {b} and to {c}",
    "if it's {t} in {a}, what time is it in {b}? and in {c}?", "{t} {a} time in {b}, then in {c}",
    "1) {t} {a} in {b} time\n2) {t} {a} in {c} time", "- convert {t} from {a} to {b}\n- and from {a} to {c}",
    "we meet at {t} {a} time: when is that for the people in {b} and {c}?",
    "Step 1: {t} in {a} as {b} time. Step 2: the same for {c}.",
]
CONVERT_THEN_NOW = [
    "what is {t} {a} time in {b}, and what time is it in {b} now?",
    "convert {t} from {a} to {b}, then tell me the current time in {b}",
    "if it's {t} in {a}, what time is it in {b}? also, what's the time there right now?",
    "1) {t} {a} in {b} time\n2) the time in {b} now", "- {t} {a} → {b}\n- current time in {b}",
    "my flight lands at {t} {a} time — what's that in {b}, and what time is it in {b} at the moment?",
    "Step 1: convert {t} in {a} to {b}. Step 2: the current time in {b}.",
    "{t} in {a} is when in {b}? and how late is it there already?",
]


def clock_now(s: Speaker, env: FixtureEnv | None, tool: str) -> Phrased:
    if s.local_zone and s.rng.random() < 0.2:
        return _say(s, NOW_HERE, "single", [(tool, {"timezone": s.local_zone})])
    city, zone = _city(s)
    return _say(s, NOW, "single", [(tool, {"timezone": zone})], c=city, z=zone)


def clock_convert(s: Speaker, env: FixtureEnv | None, tool: str) -> Phrased:
    (a, za), (b, zb) = _two_cities(s)
    written, gold = _clock(s)
    r = s.rng.random()
    if s.local_zone and r < 0.2:
        arguments = {"source_timezone": s.local_zone, "time": gold, "target_timezone": zb}
        return _say(s, CONVERT_FROM_HERE, "single", [(tool, arguments)], t=written, b=b)
    if s.local_zone and r < 0.35:
        arguments = {"source_timezone": za, "time": gold, "target_timezone": s.local_zone}
        return _say(s, CONVERT_TO_HERE, "single", [(tool, arguments)], t=written, a=a)
    calls = [(tool, {"source_timezone": za, "time": gold, "target_timezone": zb})]
    return _say(s, CONVERT, "single", calls, t=written, a=a, b=b, z=za, y=zb)


def _two_cities(s: Speaker) -> tuple[tuple[str, str], tuple[str, str]]:
    first, second = _city(s), _city(s)
    while second[1] == first[1]:
        second = _city(s)
    return first, second


def chain_now_then_now(s: Speaker, env: FixtureEnv | None, tools: dict[str, str]) -> Phrased:
    (a, za), (b, zb) = _two_cities(s)
    calls = [(tools["now"], {"timezone": za}), (tools["now"], {"timezone": zb})]
    return _say(s, NOW_THEN_NOW, "now-then-now", calls, a=a, b=b)


def chain_now_then_convert(s: Speaker, env: FixtureEnv | None, tools: dict[str, str]) -> Phrased:
    (a, za), (b, zb) = _two_cities(s)
    written, gold = _clock(s)
    calls = [(tools["now"], {"timezone": za}),
             (tools["convert"], {"source_timezone": za, "time": gold, "target_timezone": zb})]  # fmt: skip
    return _say(s, NOW_THEN_CONVERT, "now-then-convert", calls, a=a, b=b, t=written)


def chain_convert_then_convert(s: Speaker, env: FixtureEnv | None, tools: dict[str, str]) -> Phrased:
    (a, za), (b, zb) = _two_cities(s)
    c, zc = _city(s)
    while zc in (za, zb):
        c, zc = _city(s)
    written, gold = _clock(s)
    calls = [(tools["convert"], {"source_timezone": za, "time": gold, "target_timezone": zb}),
             (tools["convert"], {"source_timezone": za, "time": gold, "target_timezone": zc})]  # fmt: skip
    return _say(s, CONVERT_THEN_CONVERT, "convert-then-convert", calls, a=a, b=b, c=c, t=written)


def chain_convert_then_now(s: Speaker, env: FixtureEnv | None, tools: dict[str, str]) -> Phrased:
    (a, za), (b, zb) = _two_cities(s)
    written, gold = _clock(s)
    calls = [(tools["convert"], {"source_timezone": za, "time": gold, "target_timezone": zb}),
             (tools["now"], {"timezone": zb})]  # fmt: skip
    return _say(s, CONVERT_THEN_NOW, "convert-then-now", calls, a=a, b=b, t=written)


_LOCAL_ZONE = re.compile(r"""['"]([A-Za-z][\w+-]*(?:/[\w+-]+)*)['"] as (?:the )?local time ?zone""", re.IGNORECASE)


def local_zone(tools: Sequence[Any]) -> str | None:
    """The zone a clock server takes for "here", where its schema names one (mcp-server-time's
    arguments say "Use 'UTC' as local timezone if no timezone provided by the user")."""
    for tool in tools:
        if found := _LOCAL_ZONE.search(json.dumps(tool.parameters)):
            return found.group(1)
    return None


# -- which intent a tool has ---------------------------------------------------------------------

Single = Callable[[Speaker, Any, str], Phrased]
Chain = Callable[[Speaker, Any, dict[str, str]], Phrased]

# intent -> (the words its tool's name holds, the words it must not hold, the plan writer)
INTENTS: dict[str, tuple[set[str], set[str], Single]] = {
    "read": ({"read", "file"}, {"multiple", "media", "image"}, file_read),
    "read_many": ({"read", "multiple"}, set(), file_read_many),
    "read_media": ({"read", "media"}, set(), file_read_media),
    "write": ({"write", "file"}, set(), file_write),
    "edit": ({"edit", "file"}, set(), file_edit),
    "mkdir": ({"create", "directory"}, set(), file_mkdir),
    "list": ({"list", "directory"}, {"sizes", "allowed"}, file_list),
    "list_sizes": ({"list", "directory", "sizes"}, set(), file_list_sizes),
    "tree": ({"directory", "tree"}, set(), file_tree),
    "move": ({"move", "file"}, set(), file_move),
    "search": ({"search", "files"}, set(), file_search),
    "info": ({"get", "info"}, set(), file_info),
    "allowed": ({"list", "allowed"}, set(), file_allowed),
    "now": ({"current", "time"}, set(), clock_now),
    "convert": ({"convert", "time"}, set(), clock_convert),
}
CHAINS: dict[str, tuple[tuple[str, ...], Chain]] = {
    "list-then-read": (("list", "read"), chain_list_then_read),
    "find-then-read": (("search", "read"), chain_find_then_read),
    "info-then-read": (("info", "read"), chain_info_then_read),
    "search-then-info": (("search", "info"), chain_search_then_info),
    "write-then-read": (("write", "read"), chain_write_then_read),
    "mkdir-then-write": (("mkdir", "write"), chain_mkdir_then_write),
    "read-then-read": (("read",), chain_read_then_read),
    "now-then-now": (("now",), chain_now_then_now),
    "now-then-convert": (("now", "convert"), chain_now_then_convert),
    "convert-then-convert": (("convert",), chain_convert_then_convert),
    "convert-then-now": (("convert", "now"), chain_convert_then_now),
}
FILE_INTENTS = {"read", "read_many", "read_media", "write", "edit", "mkdir", "list", "list_sizes", "tree", "move",
                "search", "info", "allowed"}


def intent_of(name_words: list[str], description: str) -> str | None:
    """The intent a tool serves, from the words of its name; None for tools of other kinds and
    for deprecated ones (a request for them is a request for their replacement)."""
    if "deprecated" in description.lower():
        return None
    present = set(name_words)
    for intent, (needed, excluded, _) in INTENTS.items():
        if needed <= present and not excluded & present:
            return intent
    return None


def plan_single(intent: str, speaker: Speaker, env: FixtureEnv | None, tool: str) -> Phrased | None:
    if intent in FILE_INTENTS and env is None:
        return None  # a file tool with no workspace to ground its paths in: the generic template
    return INTENTS[intent][2](speaker, env, tool)


def chain_applies(kind: str, env: FixtureEnv | None, tools: dict[str, str]) -> bool:
    """Whether the toolset (`tools`: intent -> tool name) has what a chain of `kind` needs: its
    tools, and for file tools a workspace to ground the paths in."""
    needed = CHAINS[kind][0]
    return all(intent in tools for intent in needed) and not (env is None and FILE_INTENTS & set(needed))


def plan_chain(kind: str, speaker: Speaker, env: FixtureEnv | None, tools: dict[str, str]) -> Phrased:
    """A chain of `kind`, which must apply (`chain_applies`)."""
    return CHAINS[kind][1](speaker, env, tools)
