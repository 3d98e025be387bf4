"""Public tool names and the search ranking."""

from __future__ import annotations

from agentflux.proxy.naming import MAX_LENGTH, NameMap, Origin
from agentflux.proxy.search import Document, SearchIndex


def test_names_are_namespaced_and_sanitized() -> None:
    names = NameMap([Origin("notion", "API-get-self"), Origin("my server", "read.file")])
    assert names.public("notion", "API-get-self") == "notion__API-get-self"
    assert names.public("my server", "read.file") == "my_server__read_file"
    assert names.origin("my_server__read_file") == Origin("my server", "read.file")
    assert names.origin("nope") is None


def test_collisions_after_sanitizing_get_distinct_stable_names() -> None:
    items = [Origin("a.b", "t"), Origin("a_b", "t"), Origin("a b", "t")]
    first = NameMap(items)
    second = NameMap(list(reversed(items)))
    publics = {first.public(o.server, o.name) for o in items}
    assert len(publics) == 3
    assert all(first.public(o.server, o.name) == second.public(o.server, o.name) for o in items)
    assert all(first.origin(first.public(o.server, o.name)) == o for o in items)


def test_long_names_are_shortened_with_a_hash() -> None:
    origin = Origin("monday-dot-com-production-workspace", "get_board_items_page_with_all_columns_and_groups")
    names = NameMap([origin])
    public = names.public(origin.server, origin.name)
    assert len(public) == MAX_LENGTH
    assert names.origin(public) == origin


def test_transparent_mode_keeps_names() -> None:
    names = NameMap([Origin("everything", "test.tool/with odd")], namespacing=False)
    assert names.public("everything", "test.tool/with odd") == "test.tool/with odd"


def test_search_ranks_by_name_and_description() -> None:
    index = SearchIndex(
        [
            Document("fs__list_directory", "filesystem list_directory List all files and directories in a path"),
            Document("fs__read_text_file", "filesystem read_text_file Read the contents of a text file"),
            Document("time__get_current_time", "time get_current_time Get the current time in a timezone"),
        ]
    )
    assert index.search("read a file", 3)[0][0] == "fs__read_text_file"
    assert index.search("what time is it", 3)[0][0] == "time__get_current_time"
    assert index.search("listDirectory", 1)[0][0] == "fs__list_directory"
    assert index.search("unrelated banana", 3) == []
