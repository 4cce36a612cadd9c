"""Packets: an immutable payload stamped with a timestamp."""

from __future__ import annotations

from typing import Any

from ovgraph.framework import timestamp as ts_mod

__all__ = ["EMPTY", "Packet"]


class _Empty:
    """Sentinel payload of an empty packet (a timestamp without data)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Any = _Empty()


class Packet:
    """A payload with a timestamp, as carried on streams and side packets.

    Packets are cheap value objects; ``Packet.empty(ts)`` marks "no data at ts" in an input set.
    """

    __slots__ = ("payload", "timestamp")

    def __init__(self, payload: Any, timestamp: int = ts_mod.UNSET) -> None:
        self.payload = payload
        self.timestamp = timestamp

    @classmethod
    def empty(cls, timestamp: int = ts_mod.UNSET) -> Packet:
        """Return an empty packet at ``timestamp``."""
        return cls(EMPTY, timestamp)

    def at(self, timestamp: int) -> Packet:
        """Return a copy of this packet at another timestamp."""
        return Packet(self.payload, timestamp)

    @property
    def is_empty(self) -> bool:
        """Whether the packet carries no payload."""
        return self.payload is EMPTY

    def get(self) -> Any:
        """Return the payload; raise ``ValueError`` on an empty packet."""
        if self.payload is EMPTY:
            raise ValueError("Empty packet has no payload")
        return self.payload

    def __repr__(self) -> str:
        return f"Packet({self.payload!r} @ {ts_mod.timestamp_str(self.timestamp)})"
