"""Error collection for graph validation: locations of fields and "did you mean" hints.

A :class:`Collector` gathers ``GraphConfigError``s of one graph and finds the file line of the
field at fault (``input_stream: "x"`` rather than the ``node {`` above it) from the field lines
that ``textformat`` records per node.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ovgraph.errors import GraphConfigError
from ovgraph.framework.calculator import NodeSpec
from ovgraph.framework.tag_map import TagMapError, parse_spec

__all__ = ["Collector", "did_you_mean", "hint", "name_of", "parses"]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``' Did you mean "x"?'`` for the nearest of ``known`` names, or ``""``.

    Names are compared without case; a suffix both share (``Calculator``,
    ``InputStreamHandler``) must not make them look alike, so what precedes it must be close too.
    """
    wanted = name.lower()
    best, best_score = "", 0.0
    for candidate in sorted(set(known)):
        other = candidate.lower()
        score = difflib.SequenceMatcher(None, wanted, other).ratio()
        common = 0
        while common < min(len(wanted), len(other)) and (
            wanted[-1 - common] == other[-1 - common]
        ):
            common += 1
        if 0 < common < min(len(wanted), len(other)):
            front = difflib.SequenceMatcher(None, wanted[:-common], other[:-common]).ratio()
            score = min(score, front)
        if score > best_score:
            best, best_score = candidate, score
    return f' Did you mean "{best}"?' if best_score >= 0.75 else ""


def hint(name: str, known: Iterable[str], what: str, limit: int = 12) -> str:
    """:func:`did_you_mean`, or else the ``known`` names listed (at most ``limit``).

    ``what`` names them in the text: ``" (known streams: a, b)"``; nothing when none is known.
    """
    near = did_you_mean(name, known)
    if near:
        return near
    names = sorted(set(known))
    if not names:
        return ""
    shown = ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit
                                        else "")
    return f" ({what}: {shown})"


@dataclass
class Collector:
    """The errors of one graph, and where its nodes' fields are."""

    path: str | None
    field_lines: list[dict[str, list[int]]] = field(default_factory=list)
    errors: list[GraphConfigError] = field(default_factory=list)

    def add(
        self, cls: type[GraphConfigError], message: str, node: str | None = None,
        line: int | None = None,
    ) -> None:
        """Record an error of class ``cls``."""
        self.errors.append(cls(message, node=node, path=self.path, line=line))

    def report(
        self, cls: type[GraphConfigError], message: str, node: str | None, line: int | None
    ) -> None:
        """Record an error (the callback form ``expand_subgraphs`` takes)."""
        self.add(cls, message, node, line)

    def _lines(self, spec: NodeSpec, field_name: str) -> list[int]:
        if spec.index >= len(self.field_lines):
            return []
        return self.field_lines[spec.index].get(field_name, [])

    def line_at(self, spec: NodeSpec, field_name: str, occurrence: int) -> int | None:
        """The line of the ``occurrence``-th ``field_name`` of ``spec``, else the node's."""
        lines = self._lines(spec, field_name)
        return lines[occurrence] if occurrence < len(lines) else spec.line

    def line_of(self, spec: NodeSpec, field_name: str, value: str | None = None) -> int | None:
        """The line of ``spec``'s repeated field whose entry is (or names) ``value``.

        Without ``value``, the line of the field's first occurrence; the node's own line when
        the field was not written in the file (e.g. inside an expanded subgraph).
        """
        lines = self._lines(spec, field_name)
        if not lines:
            return spec.line
        if value is not None:
            for k, item in enumerate(getattr(spec.config, field_name)):
                names = (item, name_of(item), getattr(item, "tag_index", None))
                if value in names and k < len(lines):
                    return lines[k]
        return lines[0]


def name_of(spec: Any) -> str | None:
    """The stream name of a spec, even of one that does not parse (None for non-strings)."""
    if not isinstance(spec, str):
        return None
    try:
        return parse_spec(spec)[2]
    except TagMapError:
        return spec.rsplit(":", 1)[-1]


def parses(spec: str) -> bool:
    """Whether ``spec`` is a valid ``TAG:index:name``."""
    try:
        parse_spec(spec)
    except TagMapError:
        return False
    return True
