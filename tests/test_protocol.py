"""The prompt protocol renders exactly what Qwen2.5's own chat template renders, and training
examples tokenize to exactly what the backends see when serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflux.proxy import protocol
from agentflux.proxy.protocol import Call, Qwen25, Tool, Toolset
from agentflux.proxy.vocab import tokenizer_vectors

FMT = Qwen25()
READ = Tool("read_text_file", "Read a file as text.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
LIST = Tool("list_directory", "List a directory.", {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
NOW = Tool("get_current_time", "Current time in a zone.", {"type": "object", "properties": {"timezone": {"type": "string"}}})
FILESYSTEM = Toolset("filesystem", "Files of the workspace.", (READ, LIST))
TIME = Toolset("time", "Clocks and time zones.", (NOW,))
TASK = "List the notes folder, then read todo.txt — and tell me what's due (été 2026)."
HISTORY = [
    Call("list_directory", {"path": "notes"}, "[FILE] todo.txt\n[FILE] meeting.md"),
    Call("read_text_file", {"path": "notes/todo.txt"}, "- water the plants\n- café à 10h"),
]


def template_render(tokenizer, system: str, tools: list[Tool], history: list[Call]) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": TASK}]
    for call in history:
        messages.append({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": call.tool, "arguments": call.arguments}}]})
        messages.append({"role": "tool", "content": call.observation})
    specs = [{"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}} for t in tools]
    return tokenizer.apply_chat_template(messages, tools=specs or None, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("history", [[], HISTORY], ids=["first-step", "after-two-calls"])
def test_every_prompt_is_what_qwens_template_renders(tokenizer, history: list[Call]) -> None:
    select = protocol.select_prompt(FMT, TASK, history, FILESYSTEM)
    system = protocol.SELECTOR_SYSTEM.format(toolset="filesystem", description="Files of the workspace.")
    expected = template_render(tokenizer, system, [protocol.compact(READ), protocol.compact(LIST), protocol.SUMMARIZE_TOOL], history)
    assert select.text == expected + '<tool_call>\n{"name": "'

    route = protocol.route_prompt(FMT, TASK, history, [FILESYSTEM, TIME])
    assert route.text.startswith("<|im_start|>system\n" + protocol.ROUTER_SYSTEM)
    assert set(route.options) == {"filesystem", "time", "summarize"}

    arguments = protocol.arguments_prompt(FMT, TASK, history, READ)
    expected = template_render(tokenizer, protocol.ARGUMENTS_SYSTEM.format(tool=READ.name), [READ], history)
    assert arguments.text == expected + '<tool_call>\n{"name": "read_text_file", "arguments":'

    summary = protocol.summary_prompt(FMT, TASK, history)
    assert summary.text == template_render(tokenizer, protocol.SUMMARY_SYSTEM, [], history)


def test_a_whole_trained_call_is_what_the_template_renders(tokenizer) -> None:
    example = protocol.arguments_example(FMT, TASK, HISTORY, READ, {"path": "notes/meeting.md"})
    rendered = template_render(
        tokenizer, protocol.ARGUMENTS_SYSTEM.format(tool=READ.name), [READ], [*HISTORY, Call(READ.name, {"path": "notes/meeting.md"}, "x")]
    )
    call_text = example.prompt.removeprefix(template_render(tokenizer, protocol.ARGUMENTS_SYSTEM.format(tool=READ.name), [READ], HISTORY))
    assert (call_text + example.completion + "}\n</tool_call><|im_end|>\n") in rendered


def masked_text(tokenizer, example: protocol.Example) -> str:
    ids, mask = protocol.tokenize_example(tokenizer, example)
    return tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])


def test_loss_masks_cover_exactly_the_answer(tokenizer) -> None:
    select = protocol.select_example(FMT, TASK, HISTORY, FILESYSTEM, "read_text_file")
    assert masked_text(tokenizer, select) == 'read_text_file",'
    finish = protocol.select_example(FMT, TASK, HISTORY, FILESYSTEM, "summarize")
    assert masked_text(tokenizer, finish) == 'summarize",'
    route = protocol.route_example(FMT, TASK, HISTORY, [FILESYSTEM, TIME], "time")
    assert masked_text(tokenizer, route) == 'time",'
    arguments = protocol.arguments_example(FMT, TASK, HISTORY, READ, {"path": "notes/été.md"})
    assert masked_text(tokenizer, arguments) == ' {"path": "notes/été.md"}'
    call = protocol.call_example(FMT, TASK, HISTORY, FILESYSTEM, "read_text_file", {"path": "a"})
    assert masked_text(tokenizer, call) == '<tool_call>\n{"name": "read_text_file", "arguments": {"path": "a"}}\n</tool_call><|im_end|>'


@pytest.mark.parametrize("family", ["qwen2.5", "gemma3"])
@pytest.mark.parametrize("kind", ["route", "select", "arguments", "call"])
def test_training_tokens_are_the_natural_tokenization(request, family: str, kind: str) -> None:
    """Prompt and completion are tokenized apart (as served); that equals tokenizing the whole text,
    so the model never sees a token boundary in training that it would not see in real text. For
    each family, with its own tokenizer."""
    fmt = protocol.chat_format(family)
    tokenizer = request.getfixturevalue("tokenizer" if family == "qwen2.5" else "gemma_tokenizer")
    example = {
        "route": lambda: protocol.route_example(fmt, TASK, HISTORY, [FILESYSTEM, TIME], "filesystem"),
        "select": lambda: protocol.select_example(fmt, TASK, HISTORY, FILESYSTEM, "list_directory"),
        "arguments": lambda: protocol.arguments_example(fmt, TASK, HISTORY, LIST, {"path": "projects/alpha"}),
        "call": lambda: protocol.call_example(fmt, TASK, HISTORY, FILESYSTEM, "list_directory", {"path": "x"}),
    }[kind]()
    ids, _ = protocol.tokenize_example(tokenizer, example)
    assert ids == protocol.encode(tokenizer, example.prompt + example.completion)


def test_serving_prompts_tokenize_as_the_training_prompts(tokenizer) -> None:
    served = protocol.select_prompt(FMT, TASK, HISTORY, FILESYSTEM)
    trained = protocol.select_example(FMT, TASK, HISTORY, FILESYSTEM, "read_text_file")
    assert protocol.encode(tokenizer, served.text) == protocol.encode(tokenizer, trained.prompt)
    assert served.options["read_text_file"] == trained.completion


def test_selector_prompt_holds_only_its_toolsets_tools() -> None:
    text = protocol.select_prompt(FMT, TASK, [], FILESYSTEM).text
    assert '"name": "read_text_file"' in text and '"name": "get_current_time"' not in text
    text = protocol.arguments_prompt(FMT, TASK, [], READ).text
    assert '"name": "read_text_file"' in text and '"name": "list_directory"' not in text


def test_long_observations_are_cut_with_a_visible_marker(tokenizer) -> None:
    long = "line of output\n" * 5000
    cut = protocol.truncate_observation(long, tokenizer, 200)
    assert "characters cut: the output was longer than 200 tokens" in cut
    assert cut.startswith("line of output") and cut.rstrip().endswith("line of output")
    assert len(protocol.encode(tokenizer, cut)) < 260
    assert protocol.truncate_observation("short", tokenizer, 200) == "short"


def test_tokenizer_matches_llama_cpp_test_vectors(tokenizer, vocab_dir: Path) -> None:
    vectors = tokenizer_vectors(vocab_dir)
    assert len(vectors) >= 40
    for text, ids in vectors:
        assert protocol.encode(tokenizer, text) == ids, text
    assert tokenizer.convert_tokens_to_ids(["<|im_end|>", "<tool_call>", "</tool_call>"]) == [151645, 151657, 151658]
    assert tokenizer.decode([151657], skip_special_tokens=True) == "<tool_call>"


def test_arguments_round_trip() -> None:
    arguments = {"path": "a b/été.txt", "depth": 2, "flags": [True, None]}
    assert protocol.parse_arguments(protocol.arguments_continuation(arguments, {})) == arguments
    with pytest.raises(ValueError):
        protocol.parse_arguments(json.dumps(arguments))


def test_training_writes_arguments_in_the_order_the_grammar_decodes_them() -> None:
    """xgrammar lets a model write properties only in the schema's order; a continuation in any
    other order would teach a model calls it can never make (keys sorted by name did, before)."""
    import xgrammar as xgr

    from agentflux.proxy.backends.grammar import arguments_grammar

    edit = {"type": "object", "properties": {"oldText": {"type": "string"}, "newText": {"type": "string"}},
            "required": ["oldText", "newText"]}  # fmt: skip
    schema = {"type": "object", "required": ["path", "edits"],
              "properties": {"path": {"type": "string"}, "edits": {"type": "array", "items": edit}, "dryRun": {"type": "boolean"}}}  # fmt: skip
    written = {"dryRun": True, "edits": [{"newText": "b", "oldText": "a"}], "path": "notes/todo.txt"}
    continuation = protocol.arguments_continuation(written, schema)
    assert continuation == ' {"path": "notes/todo.txt", "edits": [{"oldText": "a", "newText": "b"}], "dryRun": true}'
    grammar = xgr.Grammar.from_ebnf(arguments_grammar(schema))
    assert xgr.testing._is_grammar_accept_string(grammar, continuation)
    assert not xgr.testing._is_grammar_accept_string(grammar, " " + json.dumps(written))


def test_selector_sees_compact_tools_and_arguments_see_the_full_schema() -> None:
    rich = Tool("search_items", "Search. " + "Long explanation. " * 40, {"type": "object", "properties": {
        "query": {"type": "string", "description": "what to look for", "minLength": 1},
        "filters": {"type": "object", "properties": {"status": {"enum": ["open", "done"]}}}}, "required": ["query"]})
    compact = protocol.compact(rich)
    assert len(compact.description) <= protocol.DESCRIPTION_CHARS and compact.description.endswith("…")
    assert compact.parameters == {"type": "object", "properties": {"query": {"type": "string"}, "filters": {"type": "object"}}, "required": ["query"]}
    toolset = Toolset("items", "", (rich,))
    assert "what to look for" not in protocol.select_prompt(FMT, TASK, [], toolset).text
    assert "what to look for" in protocol.arguments_prompt(FMT, TASK, [], rich).text


# -- Gemma 3, the embedded model's family: the same invariants with its tokenizer ---------------

GEMMA = protocol.Gemma3()


@pytest.mark.parametrize("history", [[], HISTORY], ids=["first-step", "after-two-calls"])
def test_gemma_prompts_follow_gemmas_turns(gemma_tokenizer, history: list[Call]) -> None:
    select = protocol.select_prompt(GEMMA, TASK, history, FILESYSTEM)
    system = protocol.SELECTOR_SYSTEM.format(toolset="filesystem", description="Files of the workspace.")
    # <bos> first, the system text folded into the first user turn, and the model's turn last.
    assert select.text.startswith("<bos><start_of_turn>user\n" + system + "\n\nTools:\n- read_text_file(path): ")
    assert select.text.endswith("<end_of_turn>\n<start_of_turn>model\n" + '{"name": "')
    assert select.text.count("<start_of_turn>model\n") == len(history) + 1
    assert select.text.count("<start_of_turn>user\n") == len(history) + 1
    for call in history:
        assert '{"name": "' + call.tool + '", "arguments": ' + json.dumps(call.arguments, ensure_ascii=False) + "}<end_of_turn>" in select.text
        assert "<start_of_turn>user\nResult:\n" + call.observation + "<end_of_turn>\n" in select.text
    ids = protocol.encode(gemma_tokenizer, select.text)
    assert ids[0] == gemma_tokenizer.bos_token_id and ids.count(gemma_tokenizer.bos_token_id) == 1
    assert protocol.summary_prompt(GEMMA, TASK, history).text.endswith("<start_of_turn>model\n")


def test_gemma_tool_lists_are_lean_for_choices_and_full_for_arguments() -> None:
    rich = Tool("search_items", "Search the items. " + "Long explanation. " * 40, {"type": "object", "properties": {
        "query": {"type": "string", "description": "what to look for", "minLength": 1},
        "limit": {"type": "integer"}}, "required": ["query"]})
    toolset = Toolset("items", "", (rich,))
    select = protocol.select_prompt(GEMMA, TASK, [], toolset).text
    assert "- search_items(query, limit?): Search the items.\n" in select and "Long explanation" not in select
    assert "what to look for" not in select
    arguments = protocol.arguments_prompt(GEMMA, TASK, [], rich).text
    assert '  query {"type": "string", "minLength": 1} required: what to look for' in arguments
    assert arguments.endswith('<start_of_turn>model\n{"name": "search_items", "arguments":')


def test_gemma_loss_masks_cover_exactly_the_answer(gemma_tokenizer) -> None:
    def masked(example: protocol.Example) -> str:
        ids, mask = protocol.tokenize_example(gemma_tokenizer, example)
        return gemma_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])

    assert masked(protocol.select_example(GEMMA, TASK, HISTORY, FILESYSTEM, "read_text_file")) == 'read_text_file",'
    assert masked(protocol.select_example(GEMMA, TASK, HISTORY, FILESYSTEM, "summarize")) == 'summarize",'
    assert masked(protocol.route_example(GEMMA, TASK, HISTORY, [FILESYSTEM, TIME], "time")) == 'time",'
    arguments = protocol.arguments_example(GEMMA, TASK, HISTORY, READ, {"path": "notes/été.md"})
    assert masked(arguments) == ' {"path": "notes/été.md"}'
    call = protocol.call_example(GEMMA, TASK, HISTORY, FILESYSTEM, "read_text_file", {"path": "a"})
    assert masked(call) == '{"name": "read_text_file", "arguments": {"path": "a"}}<end_of_turn>'


def test_gemma_names_end_unambiguously(gemma_tokenizer) -> None:
    """No tool name's tokens are a prefix of another's: `list_directory` can never win over
    `list_directory_with_sizes` by stopping early (the closing `",` ends every name)."""
    snapshot = json.loads((Path(__file__).parent / "data/filesystem-tools.json").read_text())
    names = [tool["name"] for tool in snapshot] + ["summarize"]
    endings = {name: protocol.encode(gemma_tokenizer, GEMMA.name_continuation(name)) for name in names}
    for name, ids in endings.items():
        for other, other_ids in endings.items():
            if name != other:
                assert other_ids[: len(ids)] != ids, (name, other)
