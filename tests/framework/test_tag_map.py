"""TAG:index:name specs and tag maps (MediaPipe ``tool/tag_map.cc`` / ``validate_name.cc``)."""

from __future__ import annotations

import re

import pytest

from ovgraph.framework.tag_map import (
    TAG_INDEX_NAME_PATTERN,
    TagMap,
    TagMapError,
    parse_spec,
    parse_tag_index,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("name", ("", None, "name")),  # untagged
        ("_x9", ("", None, "_x9")),  # leading underscore, digits later
        ("TAG:name", ("TAG", None, "name")),  # tag without index = index 0 when mapped
        ("VIDEO:2:name_b", ("VIDEO", 2, "name_b")),  # explicit index
        ("A_1:0:x", ("A_1", 0, "x")),  # tag with digits
        ("OVTENSOR1:x", ("OVTENSOR1", None, "x")),  # digits belong to the tag
    ],
)
def test_parse_spec_accepts(spec: str, expected: tuple) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "Name",  # uppercase name
        "tag:name",  # lowercase tag
        "A:B:C:in",  # too many parts
        "TAG:01:x",  # leading zero index
        "TAG:-1:x",  # negative index
        "1abc",  # name starts with a digit
        "",  # empty
        "TAG:",  # no name
        "TAG:name ",  # trailing space
    ],
)
def test_parse_spec_rejects_with_mediapipe_message(spec: str) -> None:
    with pytest.raises(TagMapError) as info:
        parse_spec(spec)
    message = str(info.value)
    assert message.startswith(f'TAG:index:name is invalid, "{spec}" does not match')
    assert TAG_INDEX_NAME_PATTERN in message
    assert '(examples: "TAG:name" "VIDEO:2:name_b", "longer_name")' in message


def test_pattern_constant_is_mediapipe_regex() -> None:
    assert TAG_INDEX_NAME_PATTERN == "([A-Z_][A-Z0-9_]*:((0|[1-9][0-9]*):)?)?[a-z_][a-z0-9_]*"
    assert re.fullmatch(TAG_INDEX_NAME_PATTERN, "VIDEO:2:name_b")
    assert not re.fullmatch(TAG_INDEX_NAME_PATTERN, "video:name")


def test_ids_follow_sorted_tag_order_not_file_order() -> None:
    tag_map = TagMap(["ZETA:z", "LOOPBACK:loop", "REQUEST:req", "ALPHA:a"])
    assert [e.tag for e in tag_map] == ["ALPHA", "LOOPBACK", "REQUEST", "ZETA"]
    assert tag_map.names() == ["a", "loop", "req", "z"]
    assert tag_map.id_of("REQUEST") == 2
    assert tag_map.id_of("ZETA", 0) == 3


def test_untagged_streams_come_first_in_order_of_appearance() -> None:
    tag_map = TagMap(["B:b", "second", "A:a", "first_is_not_sorted", "third"])
    entries = [(e.tag, e.index, e.name) for e in tag_map]
    assert entries == [
        ("", 0, "second"),
        ("", 1, "first_is_not_sorted"),
        ("", 2, "third"),
        ("A", 0, "a"),
        ("B", 0, "b"),
    ]
    assert tag_map.ids_of_tag("") == [0, 1, 2]


def test_indexes_sort_within_a_tag() -> None:
    tag_map = TagMap(["IN:1:b", "IN:0:a", "IN:2:c"])
    assert tag_map.names() == ["a", "b", "c"]
    assert tag_map.tags() == {"IN": 3}
    assert tag_map.ids_of_tag("IN") == [0, 1, 2]
    assert tag_map.has("IN", 2) and not tag_map.has("IN", 3)
    assert tag_map.id_of("IN", 3) is None


def test_numbered_looking_tags_are_distinct_tags() -> None:
    tag_map = TagMap(["OVTENSOR:a", "OVTENSOR1:b", "OVMS_PY_TENSOR_1:c"])
    assert tag_map.tags() == {"OVMS_PY_TENSOR_1": 1, "OVTENSOR": 1, "OVTENSOR1": 1}
    assert tag_map.id_of("OVTENSOR", 1) is None


def test_repeated_tag_without_index_is_reassignment_error() -> None:
    with pytest.raises(TagMapError, match='tag "IN" index 0 already had a name "a" but is being '
                       'reassigned a name "b"'):
        TagMap(["IN:a", "IN:b"])


def test_duplicate_explicit_index_is_error() -> None:
    with pytest.raises(TagMapError, match='tag "IN" index 1 already had a name "a"'):
        TagMap(["IN:0:x", "IN:1:a", "IN:1:b"])


def test_index_gap_is_error() -> None:
    with pytest.raises(TagMapError, match="Not all indexes were assigned names"):
        TagMap(["IN:0:a", "IN:2:c"])


def test_all_bad_specs_are_reported_together() -> None:
    with pytest.raises(TagMapError) as info:
        TagMap(["Bad", "good", "tag:x"])
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert '"Bad"' in lines[0] and '"tag:x"' in lines[1]


def test_entry_spec_round_trips() -> None:
    tag_map = TagMap(["plain", "TAG:1:b", "TAG:0:a"])
    assert [e.spec() for e in tag_map] == ["plain", "TAG:0:a", "TAG:1:b"]
    assert len(tag_map) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("LOOPBACK", ("LOOPBACK", 0)),  # tag alone = index 0
        ("LOOPBACK:0", ("LOOPBACK", 0)),
        ("IN:3", ("IN", 3)),
        (":1", ("", 1)),  # untagged index
        ("", ("", 0)),  # first untagged stream
    ],
)
def test_parse_tag_index(text: str, expected: tuple[str, int]) -> None:
    assert parse_tag_index(text) == expected


@pytest.mark.parametrize("text", ["loopback", "IN:x", "IN:01", "IN:0:name", "A B"])
def test_parse_tag_index_rejects(text: str) -> None:
    with pytest.raises(TagMapError, match=r"TAG:index is invalid"):
        parse_tag_index(text)
