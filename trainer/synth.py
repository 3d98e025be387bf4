"""Teacher-free task synthesis: plans (a request and the calls that fulfil it) from tool schemas.

Tools whose names say what they do (files, clocks) get requests as people write them, single
and multi-step, from `phrasing.py`. Any other tool gets arguments sampled valid for its schema
and grounded in the fixture world (a `path` names a file that exists, or for tools that
create, one that does not yet; an `oldText` is a real line of that file; enums, formats,
bounds, defaults and examples are respected), and a request rendered in varied styles from
the tool's name and the argument values. The plan is the orchestrator: it is executed for
real against the server (see `collect.py`), which is what makes a trajectory.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from agentflux.proxy.protocol import Tool, Toolset
from agentflux.trainer.phrasing import CHAINS, Phrased, Speaker, chain_applies, intent_of, local_zone, plan_chain, plan_single
from agentflux.trainer.workspace import FixtureEnv

STYLES = ("imperative", "question", "polite", "terse", "indirect")
PATH_NAMES = {"path", "file", "filename", "file_path", "filepath", "directory", "dir", "folder", "root", "source", "destination", "target"}
TIMEZONES = ["UTC", "Europe/Paris", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney", "America/Sao_Paulo", "Africa/Nairobi"]
PHRASES = ["quarterly numbers look good", "remember the backup", "Ünïcode note ✓", "ship it on Friday", "call Dana at 10:30"]
PREPOSITIONS = {"destination": "to", "target": "to", "source": "from"}
VERBS = {
    "read": ["read", "show me", "open", "print the contents of"],
    "list": ["list", "show", "what is in"],
    "search": ["search", "find", "look for"],
    "get": ["get", "tell me", "fetch", "look up"],
    "write": ["write", "save", "create"],
    "create": ["create", "make", "set up"],
    "edit": ["edit", "change", "update"],
    "move": ["move", "rename"],
    "convert": ["convert", "translate"],
    "delete": ["delete", "remove"],
    "update": ["update", "change"],
}


@dataclass
class PlannedCall:
    tool: str
    arguments: dict[str, Any]


@dataclass
class Plan:
    query: str
    calls: list[PlannedCall]
    style: str
    kind: str = "single"  # single, or the name of a chain
    source: str = "template"


def words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


# -- arguments ---------------------------------------------------------------------------------


class ArgumentSampler:
    def __init__(self, env: FixtureEnv | None, rng: random.Random) -> None:
        self.env = env
        self.rng = rng

    def sample(self, tool: Tool) -> dict[str, Any]:
        schema = tool.parameters
        properties: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        creates = bool({"write", "create", "save", "new"} & set(words(tool.name)))
        lists = bool({"list", "directory", "tree"} & set(words(tool.name))) and not {"file", "files"} & set(words(tool.name))
        values: dict[str, Any] = {}
        # Paths first: other values (a line to replace) are grounded in the file they chose.
        ordered = sorted(properties, key=lambda n: (n.lower() not in PATH_NAMES, n))
        for name in ordered:
            if name not in required and self.rng.random() > 0.35:
                continue
            values[name] = self.value(name, properties[name], creates=creates, lists=lists, context=values)
        # Written in the schema's order, as a person (or a teacher model) would write them.
        return {name: values[name] for name in properties if name in values}

    def value(self, name: str, schema: dict[str, Any], *, creates: bool, lists: bool, context: dict[str, Any]) -> Any:
        rng, lower = self.rng, name.lower()
        if "enum" in schema and schema["enum"]:
            return rng.choice(schema["enum"])
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if kind is None and "anyOf" in schema:
            return self.value(name, schema["anyOf"][0], creates=creates, lists=lists, context=context)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind in ("integer", "number"):
            return self._number(lower, schema, kind)
        if kind == "array":
            return self._array(lower, schema, creates=creates, lists=lists, context=context)
        if kind == "object":
            inner = schema.get("properties") or {}
            return {k: self.value(k, v, creates=creates, lists=lists, context=context) for k, v in inner.items() if k in (schema.get("required") or inner)}
        return self._string(lower, schema, creates=creates, lists=lists, context=context)

    def _number(self, name: str, schema: dict[str, Any], kind: str) -> Any:
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + (1 if "exclusiveMinimum" in schema else 0))
        high = schema.get("maximum", low + (10 if name in ("head", "tail", "limit", "depth", "count", "lines") else 100))
        # Whole numbers even for "number": 10, not 10.0, is how people write a line count.
        return self.rng.randint(int(max(low, 1 if name in ("head", "tail", "limit") else low)), int(high))

    def _array(self, name: str, schema: dict[str, Any], *, creates: bool, lists: bool, context: dict[str, Any]) -> list[Any]:
        items = schema.get("items") or {"type": "string"}
        if name == "paths" and self.env:
            return self.rng.sample(self.env.text_files(), 2)
        if name == "edits" and items.get("type") == "object":
            return [self.value("edit", items, creates=creates, lists=lists, context=context)]
        count = min(schema.get("maxItems", 2), max(schema.get("minItems", 1), 1 + (self.rng.random() < 0.3)))
        return [self.value(name.rstrip("s"), items, creates=creates, lists=lists, context=context) for _ in range(count)]

    def _string(self, name: str, schema: dict[str, Any], *, creates: bool, lists: bool, context: dict[str, Any]) -> str:
        rng = self.rng
        if schema.get("examples") and rng.random() < 0.5:
            return str(rng.choice(schema["examples"]))
        if name in PATH_NAMES and self.env is not None:
            return self._path(name, creates=creates, lists=lists, context=context)
        if name in ("oldtext", "old_text", "old_string", "search") and self.env is not None and "path" in context:
            lines = [line for line in self.env.files.get(context["path"], "").splitlines() if line.strip()]
            if lines:
                return rng.choice(lines)
        if "timezone" in name or name == "tz":
            return rng.choice(TIMEZONES)
        if name == "time" or schema.get("pattern", "").startswith("^([01]"):
            return f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}"
        if name in ("pattern", "query", "glob"):
            stems = sorted({re.split(r"[ .-]", p.rsplit("/", 1)[-1])[0] for p in self.env.files}) if self.env else ["report"]
            return rng.choice([f"*.{rng.choice(['md', 'csv', 'txt', 'json', 'log'])}", rng.choice(stems)])
        fmt = schema.get("format")
        if fmt == "date":
            return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if fmt == "date-time":
            return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
        if fmt in ("uri", "url"):
            return f"https://example.com/{rng.choice(['docs', 'board', 'page'])}/{rng.randint(100, 999)}"
        if fmt == "email":
            return f"{rng.choice(['dana', 'luis', 'mei'])}@example.com"
        if name.endswith("id") or name.endswith("_id"):
            return f"{rng.randint(10**7, 10**8 - 1)}"
        if "default" in schema and isinstance(schema["default"], str) and rng.random() < 0.5:
            return schema["default"]
        text = rng.choice(PHRASES)
        return text[: schema["maxLength"]] if "maxLength" in schema else text

    def _path(self, name: str, *, creates: bool, lists: bool, context: dict[str, Any]) -> str:
        assert self.env is not None
        rng = self.rng
        if name in ("destination", "target") or (creates and name not in ("source",)):
            folder = rng.choice(self.env.dirs)
            stem = rng.choice(["draft", "Notes 2026", "résumé", "NEW-PLAN", ".config", "summary"])
            extension = "" if lists else rng.choice([".md", ".txt", ".json", ""])
            candidate = f"{stem}{extension}" if folder == "." else f"{folder}/{stem}{extension}"
            return candidate if candidate not in self.env.files else candidate + "-2"
        if lists or name in ("directory", "dir", "folder", "root"):
            return rng.choice(self.env.dirs)
        return rng.choice(self.env.text_files())


# -- requests ----------------------------------------------------------------------------------


def describe(tool: Tool, arguments: dict[str, Any], style: str, rng: random.Random) -> str:
    """A natural-language request for `tool` with `arguments`, in the given style."""
    name_words = words(tool.name)
    if name_words and name_words[0] == "api" and len(name_words) > 1:
        name_words = name_words[1:]
    verb_key = name_words[0] if name_words else "use"
    verb = rng.choice(VERBS.get(verb_key, [verb_key]))
    subject = " ".join(name_words[1:]) or "it"
    details = _argument_phrase(arguments, rng)
    core = f"{verb} the {subject}{details}"
    if style == "question":
        return f"Can you {core}?"
    if style == "polite":
        return f"Please {core}, thank you."
    if style == "terse":
        return f"{verb} {subject}{details}".strip()
    if style == "indirect":
        return f"I need you to {core}."
    return core[0].upper() + core[1:] + "."


def _argument_phrase(arguments: dict[str, Any], rng: random.Random) -> str:
    parts = []
    for name, value in arguments.items():
        label = " ".join(words(name)) or name
        if isinstance(value, str) and name.lower() in PATH_NAMES:
            quoted = f"`{value}`" if rng.random() < 0.5 else value
            parts.append(f"{PREPOSITIONS.get(name.lower(), 'at')} {quoted}")
        elif isinstance(value, (dict, list)):
            parts.append(f"with {label} {_render_value(value)}")
        else:
            parts.append(f"with {label} {value}")
    return (" " + " and ".join(parts)) if parts else ""


def _render_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_render_value(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{' '.join(words(k))} {_render_value(v)}" for k, v in value.items())
    return str(value)


# -- plans -------------------------------------------------------------------------------------


def synthesize(
    toolset: Toolset,
    env: FixtureEnv | None,
    per_tool: int,
    seed: int,
    chains: bool = True,
    *,
    root: str | None = None,
    heldout: bool = False,
) -> list[Plan]:
    """`per_tool` single-step plans for every tool, balanced, plus multi-step chains.

    Tools with a known intent (phrasing.py) get requests as people write them, grounded in the
    fixture world; `root` is the folder the server reports paths under. `heldout` writes with
    the phrasings training never uses. Deprecated tools get no plans: a request for one is a
    request for its replacement."""
    rng = random.Random(seed)
    sampler = ArgumentSampler(env, rng)
    speaker = Speaker(rng, env, root, heldout, local_zone(toolset.tools))
    plans: list[Plan] = []
    intents: dict[str, str] = {}
    for tool in toolset.tools:
        intent = intent_of(words(tool.name), tool.description)
        if intent is None and "deprecated" in tool.description.lower():
            continue
        if intent is not None:
            intents[intent] = tool.name
        for index in range(per_tool):
            phrased = plan_single(intent, speaker, env, tool.name) if intent else None
            if phrased is not None:
                plans.append(_plan(phrased))
                continue
            arguments = sampler.sample(tool)
            style = STYLES[index % len(STYLES)]
            plans.append(Plan(describe(tool, arguments, style, rng), [PlannedCall(tool.name, arguments)], style))
    if chains:
        kinds = [kind for kind in CHAINS if chain_applies(kind, env, intents)]
        # Half a tool's count per kind, and all kinds together at most half as many tasks as
        # the single steps: a toolset of two tools and four kinds (the clock) would otherwise
        # be half chains, the longest examples to train on.
        per_kind = max(2, min(per_tool // 2, len(plans) // (2 * len(kinds)))) if kinds else 0
        for kind in kinds:
            for _ in range(per_kind):
                plans.append(_plan(plan_chain(kind, speaker, env, intents)))
    rng.shuffle(plans)
    return plans


def _plan(phrased: Phrased) -> Plan:
    return Plan(phrased.request, [PlannedCall(tool, arguments) for tool, arguments in phrased.calls], phrased.style, phrased.kind)
