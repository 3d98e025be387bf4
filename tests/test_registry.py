"""The registry file: Claude Desktop compatibility, precise errors, secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agentflux.registry.loader import RegistryError, load_registry
from agentflux.registry.secrets import MASK, REDACTOR, RedactingFilter, substitute

CLAUDE_DESKTOP_CONFIG = {
    "mcpServers": {
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
        },
        "notion": {
            "command": "npx",
            "args": ["-y", "@notionhq/notion-mcp-server"],
            "env": {"NOTION_TOKEN": "ntn_****"},
        },
        "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"}},
    }
}


def test_claude_desktop_config_loads_unchanged_as_json(tmp_path: Path) -> None:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps(CLAUDE_DESKTOP_CONFIG, indent="\t"))
    registry = load_registry(path)
    servers = registry.config.servers
    assert list(servers) == ["filesystem", "notion", "remote"]
    assert servers["filesystem"].transport == "stdio"
    assert servers["notion"].env == {"NOTION_TOKEN": "ntn_****"}
    assert servers["remote"].transport == "http"
    assert registry.config.proxy.surfaces == ["do_task"]


def test_example_registry_is_valid() -> None:
    registry = load_registry(Path(__file__).parent.parent / "examples/registry.yaml")
    assert {"filesystem", "time", "git", "notion", "monday"} <= set(registry.config.servers)


# Each bad input, the line and column of the offending key (or list item), the field, and a phrase the message must contain.
BAD_INPUTS = [
    pytest.param("mcpServers:\n  fs:\n    comand: node\n", (3, 5), "mcpServers.fs.comand", "unknown key 'comand'; expected one of: type, command", id="typo-in-key"),
    pytest.param("mcpServers:\n  fs:\n    args: [a]\n", (2, 3), "mcpServers.fs", "missing 'command'", id="no-command-or-url"),
    pytest.param("mcpServers:\n  fs:\n    command: node\n    url: http://x\n", (2, 3), "mcpServers.fs", "not both", id="command-and-url"),
    pytest.param("mcpServers:\n  fs:\n    command: node\n    args: a b\n", (4, 5), "mcpServers.fs.args", "valid list", id="args-not-a-list"),
    pytest.param("mcpServers:\n  fs:\n    command: node\n    env: {A: 1}\n", (4, 11), "mcpServers.fs.env.A", "valid string", id="env-value-not-string"),
    pytest.param("mcpServers:\n  n:\n    command: node\n    env: {T: '${NOTION'}\n", (4, 5), "mcpServers.n.env", "malformed secret reference", id="broken-secret-reference"),
    pytest.param("mcpServers:\n  r:\n    type: sse\n    url: http://x\n", (3, 5), "mcpServers.r.type", "'stdio', 'http' or 'streamable-http'", id="unsupported-transport"),
    pytest.param("mcpServers:\n  fs:\n    command: node\n    enabled: maybe\n", (4, 5), "mcpServers.fs.enabled", "valid boolean", id="enabled-not-bool"),
    pytest.param("mcpServers:\n  fs:\n    command: node\n    tools: {allow: read_file}\n", (4, 13), "mcpServers.fs.tools.allow", "valid list", id="allow-not-a-list"),
    pytest.param("mcpServers:\n  fs:\n    command: node\n    sandbox: {kind: chroot}\n", (4, 15), "mcpServers.fs.sandbox.kind", "Input should be", id="unknown-sandbox-kind"),
    pytest.param("proxy:\n  surfaces: [passthrough, serch]\nmcpServers: {}\n", (2, 27), "proxy.surfaces[1]", "'do_task', 'passthrough' or 'search'", id="unknown-surface"),
    pytest.param("proxy:\n  colour: blue\nmcpServers: {}\n", (2, 3), "proxy.colour", "unknown key 'colour'; expected one of: surfaces", id="unknown-proxy-key"),
    pytest.param("proxy:\n  http: {port: 99999}\nmcpServers: {}\n", (2, 10), "proxy.http.port", "less than or equal to 65535", id="port-out-of-range"),
    pytest.param("servers:\n  fs: {command: node}\n", (1, 1), "mcpServers", "required key is missing", id="no-mcpServers"),
    pytest.param("mcpServers:\n  fs: {command: node}\n  fs: {command: other}\n", (3, 3), "mcpServers.fs", "duplicate key", id="duplicate-server"),
    pytest.param("mcpServers:\n  fs: {command: node\n", (3, 1), "", "invalid YAML", id="yaml-syntax"),
    pytest.param("- a\n- b\n", (1, 1), "", "expected a mapping", id="not-a-mapping"),
    pytest.param("", (1, 1), "", "the file is empty", id="empty-file"),
    pytest.param(
        "proxy:\n  namespacing: false\nmcpServers:\n  a: {command: x}\n  b: {command: y}\n",
        (2, 3), "proxy.namespacing", "only valid with one enabled server", id="transparent-with-two-servers",
    ),
]


@pytest.mark.parametrize(("text", "position", "field", "phrase"), BAD_INPUTS)
def test_bad_registry_is_rejected_with_file_line_and_field(
    tmp_path: Path, text: str, position: tuple[int, int], field: str, phrase: str
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    problem = info.value.problems[0]
    assert (problem.line, problem.column) == position
    assert problem.path == field
    assert phrase in problem.message
    rendered = str(info.value)
    assert rendered.startswith(f"{path}:{position[0]}:{position[1]}:")


def test_json_syntax_error_points_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text('{\n  "mcpServers": {\n    "fs": {"command": "node",}\n  }\n}\n')
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.problems[0].line == 3
    assert "invalid JSON" in info.value.problems[0].message


def test_json_errors_have_positions_too(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text('{\n\t"mcpServers": {\n\t\t"fs": {"comand": "node"}\n\t}\n}\n')
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    problem = info.value.problems[0]
    assert (problem.path, problem.line) == ("mcpServers.fs.comand", 3)


def test_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="file not found; pass --registry PATH"):
        load_registry(tmp_path / "nope.yaml")


def test_secret_references_resolve_from_the_environment_and_are_redacted() -> None:
    resolved = substitute("Bearer ${AF_TEST_TOKEN} for ${AF_OTHER}", {"AF_TEST_TOKEN": "s3cr3t-value-123"})
    assert resolved.value == "Bearer s3cr3t-value-123 for ${AF_OTHER}"
    assert resolved.missing == ("AF_OTHER",)
    assert REDACTOR.redact("token=s3cr3t-value-123!") == f"token={MASK}!"


def test_log_records_never_carry_a_known_secret(caplog: pytest.LogCaptureFixture) -> None:
    substitute("${AF_LOG_TOKEN}", {"AF_LOG_TOKEN": "tok-abcdef-987"})
    logger = logging.getLogger("agentflux.test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("connecting with %s", "tok-abcdef-987")
    assert "tok-abcdef-987" not in caplog.text
    assert MASK in caplog.text
