"""The grammar every backend decodes arguments with: one space, then JSON valid for a schema.

Built with xgrammar (the library vLLM uses too) with `any_whitespace=False`, which writes
exactly Qwen's separators (`", "`, `": "`), and properties in the schema's own order, so a model
generates arguments character for character as training data renders them
(`protocol.in_schema_order`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from agentflux.proxy.protocol import JSON_LEAD


@lru_cache(maxsize=512)
def _ebnf(schema_json: str) -> str:
    import xgrammar as xgr

    lead = xgr.Grammar.from_ebnf(f"root ::= {json.dumps(JSON_LEAD)}")
    body = xgr.Grammar.from_json_schema(schema_json, any_whitespace=False)
    return str(xgr.Grammar.concat(lead, body))


def arguments_grammar(schema: dict[str, Any]) -> str:
    """EBNF for `JSON_LEAD` + a JSON value valid for `schema` (cached per schema).

    Never with sorted keys: xgrammar writes properties in the order the schema lists them."""
    return _ebnf(json.dumps(schema))


def check_arguments(value: Any, schema: dict[str, Any]) -> None:
    """Raise GenerationError when `value` does not validate against `schema`."""
    import jsonschema

    from agentflux.proxy.backends import GenerationError

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        raise GenerationError(f"generated arguments do not match the schema: {exc.message}") from None
