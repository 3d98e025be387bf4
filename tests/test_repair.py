"""Time-zone values put right before a call (proxy/repair.py), on the real zone database."""

from __future__ import annotations

import pytest

from agentflux.proxy.repair import is_zone_field, repair_arguments, zone

# mcp-server-time's convert_time, as it lists itself.
CONVERT = {
    "type": "object",
    "properties": {
        "source_timezone": {"type": "string", "description": "Source IANA timezone name (e.g., 'America/New_York')"},
        "time": {"type": "string", "description": "Time to convert in 24-hour format (HH:MM)"},
        "target_timezone": {"type": "string", "description": "Target IANA timezone name (e.g., 'Asia/Tokyo')"},
    },
    "required": ["source_timezone", "time", "target_timezone"],
}


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("Asia/Los_Angeles", "America/Los_Angeles"),  # the city copied, the region guessed
        ("Europe/Chicago", "America/Chicago"),
        ("Los Angeles", "America/Los_Angeles"),  # the city alone, as the user wrote it
        ("asia/tokyo", "Asia/Tokyo"),  # the right zone in the wrong case
        ("utc", "UTC"),
        ("Asia/Buenos_Aires", "America/Buenos_Aires"),  # a city under two names (a link): the shorter one
    ],
)
def test_a_zone_with_one_reading_is_put_right(written: str, meant: str) -> None:
    assert zone(written) == meant


@pytest.mark.parametrize("written", ["Asia/Tokyo", "UTC", "America/Argentina/Buenos_Aires", "Mars/Olympus", "Springfield", ""])
def test_valid_or_unknown_zones_are_left_as_written(written: str) -> None:
    assert zone(written) is None


def test_only_time_zone_fields_change_and_each_change_is_recorded() -> None:
    written = {"source_timezone": "Europe/Chicago", "time": "Asia/Tokyo", "target_timezone": "Asia/Tokyo"}
    repaired, notes = repair_arguments(written, CONVERT)
    assert repaired == {"source_timezone": "America/Chicago", "time": "Asia/Tokyo", "target_timezone": "Asia/Tokyo"}
    assert written["source_timezone"] == "Europe/Chicago"  # the model's own value is not changed in place
    assert notes == ["source_timezone: 'Europe/Chicago' -> 'America/Chicago' (the zone database's name)"]


def test_fields_are_recognised_by_name_or_description_only() -> None:
    assert is_zone_field("timezone", {"type": "string"})
    assert is_zone_field("tz", {})
    assert is_zone_field("where", {"type": "string", "description": "An IANA zone name"})
    assert not is_zone_field("path", {"type": "string", "description": "A file to read"})
    assert not is_zone_field("timezone", {"type": "integer"})
    assert not is_zone_field("timezone", {"type": "string", "enum": ["UTC", "Europe/Paris"]})  # the grammar decides
    paths = {"type": "object", "properties": {"path": {"type": "string"}}}
    assert repair_arguments({"path": "Asia/Los_Angeles"}, paths) == ({"path": "Asia/Los_Angeles"}, [])
    assert repair_arguments(["not", "an", "object"], CONVERT) == (["not", "an", "object"], [])
