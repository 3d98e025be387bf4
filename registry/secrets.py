"""Secret references (`${NAME}`) and redaction.

Registry files never hold tokens themselves: they say `NOTION_TOKEN: ${NOTION_TOKEN}` and the
value comes from the environment agentflux runs in, at launch. Every value resolved this way
is remembered by a process-wide `Redactor`, and every log line, status message and stored
trajectory passes through it, so a token never leaves the process in clear text.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MALFORMED = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*\})")
# Literal values under keys like these are treated as secrets even without a reference.
SECRET_KEY = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|AUTH|CREDENTIAL|COOKIE", re.IGNORECASE)
MASK = "***"
# Shorter values would redact common words; no real token is this short.
_MIN_SECRET_LENGTH = 6


def references(text: str) -> list[str]:
    """The environment variable names that `text` refers to, in order."""
    return REFERENCE.findall(text)


def malformed_reference(text: str) -> str | None:
    """A description of a broken `${...}` in `text`, or None when all references are well formed."""
    match = _MALFORMED.search(text)
    if match is None:
        return None
    return f"malformed secret reference at {text[match.start():match.start() + 20]!r}; write ${{NAME}} with NAME a valid environment variable name"


@dataclass(frozen=True)
class Resolution:
    value: str
    missing: tuple[str, ...]


def substitute(text: str, environ: Mapping[str, str]) -> Resolution:
    """Replace each `${NAME}` by its value; names absent from `environ` are reported, not guessed."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            missing.append(name)
            return match.group(0)
        value = environ[name]
        REDACTOR.add(value)
        return value

    return Resolution(REFERENCE.sub(replace, text), tuple(missing))


class Redactor:
    """Remembers secret values and masks them in any text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        if len(value) < _MIN_SECRET_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_all(self, values: Iterable[str]) -> None:
        for value in values:
            self.add(value)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(MASK, text)


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that masks known secrets in every record it lets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = REDACTOR.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            record.exc_text = REDACTOR.redact(logging.Formatter().formatException(record.exc_info))
        return True
