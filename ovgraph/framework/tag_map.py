"""``TAG:index:name`` stream specs and the tag maps built from them (MediaPipe ``tool/tag_map``).

Ids are assigned in sorted tag order and then by index, exactly as MediaPipe's ``std::map`` does,
so calculators see their streams in the same order in both runtimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["TAG_INDEX_NAME_PATTERN", "TagMap", "TagMapError", "parse_spec", "parse_tag_index"]

TAG_INDEX_NAME_PATTERN = "([A-Z_][A-Z0-9_]*:((0|[1-9][0-9]*):)?)?[a-z_][a-z0-9_]*"
_SPEC_RE = re.compile(r"(?:([A-Z_][A-Z0-9_]*):(?:(0|[1-9][0-9]*):)?)?([a-z_][a-z0-9_]*)")
_TAG_INDEX_RE = re.compile(r"([A-Z_][A-Z0-9_]*)?(?::(0|[1-9][0-9]*))?")


class TagMapError(ValueError):
    """A stream spec or tag map is malformed (MediaPipe's wording)."""


def parse_spec(spec: str) -> tuple[str, int | None, str]:
    """Split ``[TAG[:index]:]name`` into ``(tag, index or None, name)``."""
    match = _SPEC_RE.fullmatch(spec)
    if match is None:
        raise TagMapError(
            f'TAG:index:name is invalid, "{spec}" does not match "{TAG_INDEX_NAME_PATTERN}" '
            '(examples: "TAG:name" "VIDEO:2:name_b", "longer_name").'
        )
    tag, index, name = match.groups()
    return tag or "", int(index) if index is not None else None, name


def parse_tag_index(text: str) -> tuple[str, int]:
    """Parse a ``tag_index`` string (``TAG``, ``TAG:n``, ``:n`` or ``""``)."""
    match = _TAG_INDEX_RE.fullmatch(text)
    if match is None:
        raise TagMapError(
            f'TAG:index is invalid, "{text}" does not match '
            '"([A-Z_][A-Z0-9_]*)?(:(0|[1-9][0-9]*))?"'
        )
    tag, index = match.groups()
    return tag or "", int(index) if index is not None else 0


@dataclass(frozen=True)
class TagEntry:
    """One stream of a tag map."""

    tag: str
    index: int
    name: str

    def spec(self) -> str:
        """Render as ``TAG:index:name``."""
        return f"{self.tag}:{self.index}:{self.name}" if self.tag else self.name


class TagMap:
    """Streams (or side packets) of one node side, addressed by id or by ``(tag, index)``."""

    __slots__ = ("_ids", "entries")

    def __init__(self, specs: Iterable[str]) -> None:
        by_tag: dict[str, dict[int, str]] = {}
        errors: list[str] = []
        for spec in specs:
            try:
                tag, index, name = parse_spec(spec)
            except TagMapError as exc:
                errors.append(str(exc))
                continue
            slots = by_tag.setdefault(tag, {})
            if index is None:
                index = len(slots) if tag == "" else 0
            if index in slots:
                errors.append(
                    f'tag "{tag}" index {index} already had a name "{slots[index]}" '
                    f'but is being reassigned a name "{name}"'
                )
                continue
            slots[index] = name
        for tag, slots in by_tag.items():
            if sorted(slots) != list(range(len(slots))):
                errors.append(
                    f'Not all indexes were assigned names.  Tag "{tag}" has indexes {sorted(slots)}'
                )
        if errors:
            raise TagMapError("\n".join(errors))
        self.entries: tuple[TagEntry, ...] = tuple(
            TagEntry(tag, index, by_tag[tag][index])
            for tag in sorted(by_tag)
            for index in range(len(by_tag[tag]))
        )
        self._ids = {(e.tag, e.index): i for i, e in enumerate(self.entries)}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[TagEntry]:
        return iter(self.entries)

    def id_of(self, tag: str, index: int = 0) -> int | None:
        """Return the id of ``(tag, index)`` or None."""
        return self._ids.get((tag, index))

    def has(self, tag: str, index: int = 0) -> bool:
        """Whether ``(tag, index)`` exists."""
        return (tag, index) in self._ids

    def tags(self) -> dict[str, int]:
        """Return the count of streams per tag."""
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.tag] = counts.get(entry.tag, 0) + 1
        return counts

    def names(self) -> list[str]:
        """Return stream names by id."""
        return [e.name for e in self.entries]

    def ids_of_tag(self, tag: str) -> list[int]:
        """Return the ids of every index of ``tag``."""
        return [i for i, e in enumerate(self.entries) if e.tag == tag]
