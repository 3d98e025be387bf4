"""The prompt protocol: the one place where every model call is rendered.

agentflux asks the model four kinds of question, each as a tool call in the model family's
native chat format (for Qwen2.5, ChatML with `<tool_call>` JSON, byte for byte what Qwen's own
template renders):

- route:     which toolset next?  tools = the toolsets (+ `summarize`); answer: a toolset name
- select:    which tool next?     tools = that toolset's tools only (+ `summarize`); answer: a name
- arguments: with what arguments? tools = that one tool; answer: its arguments, as JSON
- summary:   what is the answer?  no tools; answer: free text

Each question is a `Prompt`: the text up to the point where the model answers. The answer is a
*continuation* of that text: `read_file",` for a name (the closing quote fuses with the comma
into one Qwen token, and marks where the name ends, so `read` can never win over `read_file`),
or ` {"path": "a.txt"}` for arguments. Training uses the very same objects: an example is
`(prompt, continuation)`, tokenized separately and concatenated, and the loss covers exactly
the continuation's tokens. The serving backends tokenize the prompt and the candidate
continuations the same way, so what was trained is what is served, by construction.

A model family is one `ChatFormat` subclass: `Qwen25`, and `Gemma3` for the embedded model.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

SUMMARIZE = "summarize"
# Arguments are generated as one space then compact-with-spaces JSON (`", "`, `": "`), exactly
# how Qwen's template writes them after `"arguments":`.
JSON_LEAD = " "

ROUTER_SYSTEM = (
    "You are the router of a local agent. Each tool below is a toolset. Pick the toolset whose tools "
    "can do the next step of the user's task, or call summarize when the task is done or cannot go further."
)
SELECTOR_SYSTEM = (
    "You are a local agent working with the {toolset} toolset: {description}. Call the tool that does the "
    "next step of the user's task, or call summarize when the task is done or cannot go further."
)
ARGUMENTS_SYSTEM = "You are a local agent. Call {tool} with the arguments that do the next step of the user's task."
SUMMARY_SYSTEM = (
    "You are a local agent. The tool results above are all you know. Answer the user's task from them, "
    "briefly and precisely; say what could not be done."
)
SUMMARIZE_DESCRIPTION = "Finish: the task is done, or cannot go further with these tools."
DESCRIPTION_CHARS = 240
# A choice (which toolset, which tool, or done) needs to know what each call returned, not all of
# it: its results are shown up to this many characters. Only the arguments prompt, which may
# copy a value out of a result, sees the whole (already truncated) observation.
CHOICE_OBSERVATION_CHARS = 240


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Toolset:
    name: str
    description: str
    tools: tuple[Tool, ...]

    def tool(self, name: str) -> Tool:
        return next(tool for tool in self.tools if tool.name == name)


@dataclass(frozen=True)
class Call:
    """One executed step of a trajectory: what was called and what it returned."""

    tool: str
    arguments: dict[str, Any]
    observation: str


Kind = Literal["route", "select", "arguments", "summary", "call"]


@dataclass(frozen=True)
class Prompt:
    """Rendered text up to the model's answer, and the answers it may give (for choices)."""

    kind: Kind
    text: str
    options: dict[str, str] = field(default_factory=dict)  # answer -> continuation text

    def continuations(self) -> list[str]:
        return list(self.options.values())

    def answer(self, continuation: str) -> str:
        """The name a chosen continuation stands for."""
        return next(name for name, text in self.options.items() if text == continuation)


@dataclass(frozen=True)
class Example:
    """A training example: the prompt, and the continuation that carries the loss."""

    prompt: str
    completion: str
    kind: Kind


class ChatFormat(ABC):
    """How one model family writes conversations and tool calls."""

    name: str

    @abstractmethod
    def conversation(self, system: str, tools: Sequence[Tool], task: str, history: Sequence[Call]) -> str:
        """The conversation so far, ending with the assistant's generation prompt."""

    @abstractmethod
    def name_prefix(self) -> str:
        """What the assistant writes before a tool name."""

    @abstractmethod
    def name_continuation(self, name: str) -> str:
        """A tool name as the model writes it, up to and including what ends it."""

    @abstractmethod
    def arguments_prefix(self, name: str) -> str:
        """What the assistant writes before the arguments of a call to `name`."""

    @abstractmethod
    def full_call(self, name: str, arguments: dict[str, Any]) -> str:
        """A whole call, through the end of the assistant turn (for the traditional baseline)."""


def _dumps(value: Any) -> str:
    # Jinja's `tojson` in transformers' chat templates: json.dumps without ASCII escaping.
    return json.dumps(value, ensure_ascii=False)


class Qwen25(ChatFormat):
    """Qwen2.5 ChatML with hermes-style `<tool_call>` blocks, as its chat template renders them."""

    name = "qwen2.5"

    def conversation(self, system: str, tools: Sequence[Tool], task: str, history: Sequence[Call]) -> str:
        parts = ["<|im_start|>system\n", system]
        if tools:
            parts.append(
                "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
            )
            for tool in tools:
                function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
                parts.append("\n" + _dumps({"type": "function", "function": function}))
            parts.append(
                "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
                '"arguments": <args-json-object>}\n</tool_call>'
            )
        parts.append("<|im_end|>\n<|im_start|>user\n" + task + "<|im_end|>\n")
        for call in history:
            parts.append(
                '<|im_start|>assistant\n<tool_call>\n{"name": "'
                + call.tool
                + '", "arguments": '
                + _dumps(call.arguments)
                + "}\n</tool_call><|im_end|>\n"
            )
            parts.append("<|im_start|>user\n<tool_response>\n" + call.observation + "\n</tool_response><|im_end|>\n")
        parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    def name_prefix(self) -> str:
        return '<tool_call>\n{"name": "'

    def name_continuation(self, name: str) -> str:
        return name + '",'

    def arguments_prefix(self, name: str) -> str:
        return self.name_prefix() + name + '", "arguments":'

    def full_call(self, name: str, arguments: dict[str, Any]) -> str:
        return '<tool_call>\n{"name": "' + name + '", "arguments": ' + _dumps(arguments) + "}\n</tool_call><|im_end|>"


class Gemma3(ChatFormat):
    """Gemma 3's turns (`<bos>`, `<start_of_turn>user|model`, the system text folded into the
    first user turn, as its own template does) with a tool notation of our own, since Gemma 3
    has none: one line per tool, and a call as one JSON object in the model's turn.

    The notation is lean on purpose: on a CPU, prompt length is the cost of every training
    step and every served call. A tool is `- name(param, optional?): description`, with the
    description cut to its first sentence; where the schema carries more (the arguments
    prompt's full schema), each parameter gets a line of its own with its type and description.
    A call is `{"name": "<tool>", "arguments": {...}}`: Gemma's tokenizer splits it exactly
    where Qwen's does (`read_text_file",` ends a name; ` {"` opens the arguments).
    """

    name = "gemma3"

    def conversation(self, system: str, tools: Sequence[Tool], task: str, history: Sequence[Call]) -> str:
        parts = ["<bos><start_of_turn>user\n", system]
        if tools:
            parts.append("\n\nTools:\n" + "\n".join(_tool_lines(tool) for tool in tools))
            parts.append('\n\nAnswer with one call: {"name": <tool>, "arguments": <JSON object>}.')
        parts.append("\n\nTask: " + task + "<end_of_turn>\n")
        for call in history:
            parts.append("<start_of_turn>model\n" + self._call(call.tool, call.arguments) + "<end_of_turn>\n")
            parts.append("<start_of_turn>user\nResult:\n" + call.observation + "<end_of_turn>\n")
        parts.append("<start_of_turn>model\n")
        return "".join(parts)

    def _call(self, name: str, arguments: dict[str, Any]) -> str:
        return '{"name": "' + name + '", "arguments": ' + _dumps(arguments) + "}"

    def name_prefix(self) -> str:
        return '{"name": "'

    def name_continuation(self, name: str) -> str:
        return name + '",'

    def arguments_prefix(self, name: str) -> str:
        return self.name_prefix() + name + '", "arguments":'

    def full_call(self, name: str, arguments: dict[str, Any]) -> str:
        return self._call(name, arguments) + "<end_of_turn>"


def first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of a description, within `limit` characters."""
    text = " ".join(text.split())
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rsplit(" ", 1)[0] + "…"


def _tool_lines(tool: Tool) -> str:
    properties: dict[str, Any] = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or [])
    signature = ", ".join(name + ("" if name in required else "?") for name in properties)
    lines = [f"- {tool.name}({signature}): {first_sentence(tool.description)}"]
    detailed = any(isinstance(spec, dict) and set(spec) - {"type"} for spec in properties.values())
    if detailed:
        for name, spec in properties.items():
            spec = spec if isinstance(spec, dict) else {}
            facts = {key: value for key, value in spec.items() if key not in ("description", "title")}
            about = f" {spec['description'].strip()}" if isinstance(spec.get("description"), str) else ""
            lines.append(f"  {name} {_dumps(facts)}{' required' if name in required else ''}:{about}".rstrip(":"))
    return "\n".join(lines)


FORMATS: dict[str, ChatFormat] = {Qwen25.name: Qwen25(), Gemma3.name: Gemma3()}


def chat_format(name: str) -> ChatFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown chat format {name!r}; known: {', '.join(FORMATS)}") from None


# -- the four questions ------------------------------------------------------------------------

SUMMARIZE_TOOL = Tool(SUMMARIZE, SUMMARIZE_DESCRIPTION, {"type": "object", "properties": {}})


def _choice(fmt: ChatFormat, kind: Kind, system: str, tools: Sequence[Tool], task: str, history: Sequence[Call]) -> Prompt:
    text = fmt.conversation(system, tools, task, [_glimpse(call) for call in history]) + fmt.name_prefix()
    return Prompt(kind, text, {tool.name: fmt.name_continuation(tool.name) for tool in tools})


def _glimpse(call: Call) -> Call:
    if len(call.observation) <= CHOICE_OBSERVATION_CHARS:
        return call
    cut = len(call.observation) - CHOICE_OBSERVATION_CHARS
    return replace(call, observation=f"{call.observation[:CHOICE_OBSERVATION_CHARS]}\n[… {cut} more characters]")


def route_prompt(fmt: ChatFormat, task: str, history: Sequence[Call], toolsets: Sequence[Toolset]) -> Prompt:
    tools = [Tool(ts.name, _toolset_description(ts), {"type": "object", "properties": {}}) for ts in toolsets]
    return _choice(fmt, "route", ROUTER_SYSTEM, [*tools, SUMMARIZE_TOOL], task, history)


def _toolset_description(toolset: Toolset) -> str:
    names = ", ".join(tool.name for tool in toolset.tools)
    return f"{toolset.description} Tools: {names}." if toolset.description else f"Tools: {names}."


def compact(tool: Tool) -> Tool:
    """A tool as the selector sees it: its name, the start of its description, and its
    parameters' names and types. Choosing a tool needs no more, and a toolset as large as
    monday.com's (92 tools, 217 KB of schemas) then still fits a prompt; the argument
    prompt shows the full schema of the one chosen tool."""
    description = tool.description.strip()
    if len(description) > DESCRIPTION_CHARS:
        description = description[: DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    properties = {
        name: {"type": spec["type"]} if isinstance(spec, dict) and isinstance(spec.get("type"), str) else {}
        for name, spec in (tool.parameters.get("properties") or {}).items()
    }
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if tool.parameters.get("required"):
        parameters["required"] = list(tool.parameters["required"])
    return Tool(tool.name, description, parameters)


def select_prompt(fmt: ChatFormat, task: str, history: Sequence[Call], toolset: Toolset) -> Prompt:
    system = SELECTOR_SYSTEM.format(toolset=toolset.name, description=toolset.description or "its tools below")
    return _choice(fmt, "select", system, [*map(compact, toolset.tools), SUMMARIZE_TOOL], task, history)


def arguments_prompt(fmt: ChatFormat, task: str, history: Sequence[Call], tool: Tool) -> Prompt:
    system = ARGUMENTS_SYSTEM.format(tool=tool.name)
    return Prompt("arguments", fmt.conversation(system, [tool], task, history) + fmt.arguments_prefix(tool.name))


def summary_prompt(fmt: ChatFormat, task: str, history: Sequence[Call]) -> Prompt:
    return Prompt("summary", fmt.conversation(SUMMARY_SYSTEM, [], task, history))


def arguments_continuation(arguments: dict[str, Any], schema: dict[str, Any]) -> str:
    return JSON_LEAD + _dumps(in_schema_order(arguments, schema))


def in_schema_order(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with every object's keys in the order its schema lists them (others last, as
    written): the order in which the decoding grammar lets a model write them."""
    if isinstance(value, list):
        items = schema.get("items")
        return [in_schema_order(item, items) for item in value] if isinstance(items, dict) else value
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties") or {}
    listed = [key for key in properties if key in value] + [key for key in value if key not in properties]
    return {key: in_schema_order(value[key], properties.get(key) or {}) for key in listed}


def parse_arguments(continuation: str) -> Any:
    """The arguments a continuation holds; raises ValueError when it is not one JSON value."""
    if not continuation.startswith(JSON_LEAD):
        raise ValueError("the arguments do not start where the format puts them")
    return json.loads(continuation[len(JSON_LEAD) :])


# -- training examples: the same prompts, with the answer --------------------------------------


def route_example(fmt: ChatFormat, task: str, history: Sequence[Call], toolsets: Sequence[Toolset], answer: str) -> Example:
    prompt = route_prompt(fmt, task, history, toolsets)
    return Example(prompt.text, prompt.options[answer], "route")


def select_example(fmt: ChatFormat, task: str, history: Sequence[Call], toolset: Toolset, answer: str) -> Example:
    prompt = select_prompt(fmt, task, history, toolset)
    return Example(prompt.text, prompt.options[answer], "select")


def arguments_example(
    fmt: ChatFormat, task: str, history: Sequence[Call], tool: Tool, arguments: dict[str, Any]
) -> Example:
    prompt = arguments_prompt(fmt, task, history, tool)
    return Example(prompt.text, arguments_continuation(arguments, tool.parameters), "arguments")


def call_example(
    fmt: ChatFormat, task: str, history: Sequence[Call], toolset: Toolset, name: str, arguments: dict[str, Any]
) -> Example:
    """The traditional baseline: the toolset's prompt, and the whole call as the target."""
    # The baseline writes arguments too, so it sees every tool's full schema, as a plain tool-calling model does.
    system = SELECTOR_SYSTEM.format(toolset=toolset.name, description=toolset.description or "its tools below")
    prompt = fmt.conversation(system, [*toolset.tools, SUMMARIZE_TOOL], task, history)
    schema = SUMMARIZE_TOOL.parameters if name == SUMMARIZE else toolset.tool(name).parameters
    return Example(prompt, fmt.full_call(name, in_schema_order(arguments, schema)), "call")


def tokenize_example(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 loss mask: prompt and completion tokenized apart, as the backends do."""
    prompt_ids = encode(tokenizer, example.prompt)
    completion_ids = encode(tokenizer, example.completion)
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [1] * len(completion_ids)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` alone (no BOS or other added tokens): every backend tokenizes through this."""
    return tokenizer.encode(text, add_special_tokens=False)


# -- long observations -------------------------------------------------------------------------


def truncate_observation(text: str, tokenizer: Any, max_tokens: int) -> str:
    """`text` cut to about `max_tokens`, keeping its start and end, with a marker saying so."""
    ids = encode(tokenizer, text)
    if len(ids) <= max_tokens:
        return text
    head = tokenizer.decode(ids[: max_tokens * 2 // 3])
    tail = tokenizer.decode(ids[len(ids) - max_tokens // 3 :])
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n[… {cut} characters cut: the output was longer than {max_tokens} tokens …]\n{tail}"
