"""ToolFit by an LLM judge, for tasks whose required outputs agentflux does not know.

ToolFit (the paper's §3.1 and appendix D) is the share of the tool outputs a task requires
that the trajectory's raw tool outputs contain, on a 0–10 scale; any assistant summary is
ignored. The prompt below is our own wording of that rubric. The judge must answer with one
JSON object and nothing else; an answer that is not one, or whose score is not an integer
from 0 to 10, is a parse failure: counted and reported, never guessed at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx2

from agentflux.proxy.protocol import Tool
from agentflux.registry.secrets import REDACTOR
from agentflux.trainer.chat import ChatClient

logger = logging.getLogger(__name__)

OUTPUT_CHARS = 4000  # per tool output shown to the judge; longer ones are cut and say so

JUDGE_SYSTEM = """You grade how completely an agent's tool calls retrieved what a user's request needs.
You see only the tools the agent called and their raw outputs. Ignore any final answer: only tool outputs count.

You receive:
- WORKSPACE: the true state of the files involved (paths, sizes), for deciding what is in scope;
- TOOLS: the tools the agent could call, with their descriptions;
- REQUEST: what the user asked for;
- CALLS: each tool call the agent made, with its raw output.

Method:
1. Split the request into atomic requirements:
   - a listing: one per item that must appear (each file or folder in scope);
   - metadata: one per (item, field) pair, e.g. (report.csv, size);
   - contents: one per file whose contents are asked for, and one per explicit range ("first 10 lines");
   - "all" or a pattern: expand the items from WORKSPACE; each item in scope is its own requirement;
   - a change to files (write, edit, move): one per change, satisfied by the tool's confirmation.
2. Each requirement must be achievable by at least one of TOOLS; any suitable tool counts.
3. A requirement is satisfied only when a CALLS output shows the needed data itself: the name for a
   listing, the field's value for metadata, the full untruncated contents for contents. Missing, wrong,
   truncated or merely implied data does not satisfy it. Extra outputs neither help nor hurt.
4. coverage = satisfied / total * 100 (0 when there are no requirements).
5. score = round(coverage / 10), an integer from 0 to 10 (half rounds up).

Answer with exactly one JSON object and nothing before or after it:
{"requirements": [{"requirement": "...", "satisfied": true}], "coverage": 0-100, "score": 0-10}"""


@dataclass(frozen=True)
class Verdict:
    score: int | None  # None: the judge's answer could not be used
    error: str | None = None
    requirements: int = 0


def judge_messages(request: str, workspace: str, tools: Sequence[Tool], calls: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The judge's conversation; `calls` holds tool, arguments, output and is_error per call."""
    shown = []
    for number, call in enumerate(calls, 1):
        output = call["output"]
        if len(output) > OUTPUT_CHARS:
            output = output[:OUTPUT_CHARS] + f"\n[output truncated: {len(call['output'])} characters in all]"
        status = "error" if call.get("is_error") else "ok"
        shown.append(f"#{number} {call['tool']} {json.dumps(call['arguments'], ensure_ascii=False)} ({status})\n{output}")
    user = "\n\n".join([
        "WORKSPACE:\n" + workspace,
        "TOOLS:\n" + "\n".join(f"- {tool.name}: {tool.description}" for tool in tools),
        "REQUEST:\n" + request,
        "CALLS:\n" + ("\n\n".join(shown) if shown else "(none)"),
    ])
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": REDACTOR.redact(user)}]


def parse_verdict(content: str) -> Verdict:
    """The score from the judge's answer, strictly: one JSON object with an integer score 0-10."""
    try:
        answer = json.loads(content.strip())
    except json.JSONDecodeError as exc:
        return Verdict(None, f"not JSON ({exc.msg} at character {exc.pos})")
    if not isinstance(answer, dict):
        return Verdict(None, f"a JSON {type(answer).__name__}, not an object")
    score = answer.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        return Verdict(None, f"score is {score!r}, not an integer from 0 to 10")
    requirements = answer.get("requirements")
    return Verdict(score, None, len(requirements) if isinstance(requirements, list) else 0)


class Judge:
    def __init__(self, url: str, model: str, api_key: str | None = None) -> None:
        # Deterministic grading: temperature 0; room for the requirement list.
        self.client = ChatClient(url, model, api_key, temperature=0.0, max_tokens=1200)

    async def grade(self, request: str, workspace: str, tools: Sequence[Tool], calls: Sequence[dict[str, Any]]) -> Verdict:
        try:
            message = await self.client.chat(judge_messages(request, workspace, tools, calls))
        except (httpx2.HTTPError, KeyError, ValueError) as exc:
            return Verdict(None, f"the judge could not be asked: {REDACTOR.redact(str(exc))}")
        verdict = parse_verdict(message.get("content") or "")
        if verdict.error:
            logger.info("judge answer unusable: %s", verdict.error)
        return verdict

    async def aclose(self) -> None:
        await self.client.aclose()
