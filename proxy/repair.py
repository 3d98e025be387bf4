"""Argument values a small model writes almost right, put right before the call.

The argument writer copies a place's name well but guesses the region in front of it: "what
time is it in Los Angeles" comes out as `Asia/Los_Angeles`, "Chicago" as `Europe/Chicago`. A
time zone has exactly one spelling the tool accepts, the zone database's, so a time-zone value
that names no zone, but whose last part names one zone, is replaced by that zone (and a zone
in the wrong case by its own spelling). Nothing else is touched, and nothing is guessed between
two candidates: a value with no unique repair stays as written, and the tool's own error says
what is wrong. Every repair is recorded in the step, so a trajectory shows what the model wrote.

Which fields hold time zones comes from the schema: the property's name (`timezone`,
`source_timezone`, `tz`) or its description (an "IANA" or "time zone" name).
"""

from __future__ import annotations

import re
import zoneinfo
from collections import defaultdict
from functools import lru_cache
from typing import Any

_ZONE_NAME = re.compile(r"(^|_)(tz|time_?zone)s?($|_)", re.IGNORECASE)
_ZONE_DESCRIPTION = re.compile(r"\bIANA\b|\btime ?zones?\b", re.IGNORECASE)


def _key(text: str) -> str:
    return "_".join(text.strip().split()).lower()


@lru_cache(maxsize=1)
def _zones() -> tuple[frozenset[str], dict[str, str], dict[str, list[str]]]:
    """The zone database's names, the same by their lower case, and by the last part of each."""
    names = frozenset(zoneinfo.available_timezones())
    by_name: dict[str, str] = {}
    by_city: dict[str, list[str]] = defaultdict(list)
    for zone in sorted(names):
        by_name[zone.lower()] = zone
        by_city[zone.rsplit("/", 1)[-1].lower()].append(zone)
    return names, by_name, dict(by_city)


def is_zone_field(name: str, spec: Any) -> bool:
    """Whether a schema property holds one IANA time-zone name."""
    if not isinstance(spec, dict) or spec.get("type") not in ("string", None) or "enum" in spec:
        return False
    description = spec.get("description")
    return bool(_ZONE_NAME.search(name)) or (isinstance(description, str) and bool(_ZONE_DESCRIPTION.search(description)))


def zone(value: str) -> str | None:
    """The one zone `value` stands for (a spelling or region slip), or None: valid, or no unique repair."""
    names, by_name, by_city = _zones()
    if value in names:
        return None
    key = _key(value)
    if key in by_name:
        return by_name[key]
    candidates = by_city.get(key.rsplit("/", 1)[-1], [])
    if len(candidates) > 1:
        # Old names linked to new ones (America/Buenos_Aires, America/Argentina/Buenos_Aires) are
        # one place: the one under the region the model wrote, or else the shortest name.
        region = key.split("/", 1)[0] if "/" in key else None
        same_region = [zone for zone in candidates if zone.lower().split("/", 1)[0] == region]
        shortest = min(len(zone.split("/")) for zone in candidates)
        candidates = same_region or [zone for zone in candidates if len(zone.split("/")) == shortest]
    return candidates[0] if len(candidates) == 1 else None


def repair_arguments(arguments: Any, schema: dict[str, Any]) -> tuple[Any, list[str]]:
    """`arguments` with repairable time-zone values repaired, and one line per repair."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(arguments, dict) or not isinstance(properties, dict):
        return arguments, []
    repaired, notes = dict(arguments), []
    for name, value in arguments.items():
        if isinstance(value, str) and is_zone_field(name, properties.get(name)):
            fixed = zone(value)
            if fixed is not None and fixed != value:
                repaired[name] = fixed
                notes.append(f"{name}: {value!r} -> {fixed!r} (the zone database's name)")
    return repaired, notes
