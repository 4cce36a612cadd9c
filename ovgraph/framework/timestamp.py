"""MediaPipe timestamps as plain ints (microseconds) with the framework's special values.

Plain ints keep the per-packet path cheap; the constants and helpers mirror
``mediapipe/framework/timestamp.h``.
"""

from __future__ import annotations

__all__ = [
    "DONE",
    "MAX",
    "MIN",
    "ONE_OVER_POST_STREAM",
    "POST_STREAM",
    "PRE_STREAM",
    "UNSET",
    "UNSTARTED",
    "is_allowed_in_stream",
    "is_range_value",
    "next_allowed_in_stream",
    "timestamp_str",
]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

UNSET = _INT64_MIN
UNSTARTED = _INT64_MIN + 1
PRE_STREAM = _INT64_MIN + 2
MIN = _INT64_MIN + 3
MAX = _INT64_MAX - 3
POST_STREAM = _INT64_MAX - 2
ONE_OVER_POST_STREAM = _INT64_MAX - 1
DONE = _INT64_MAX

_NAMES = {
    UNSET: "Timestamp::Unset()",
    UNSTARTED: "Timestamp::Unstarted()",
    PRE_STREAM: "Timestamp::PreStream()",
    MIN: "Timestamp::Min()",
    MAX: "Timestamp::Max()",
    POST_STREAM: "Timestamp::PostStream()",
    ONE_OVER_POST_STREAM: "Timestamp::OneOverPostStream()",
    DONE: "Timestamp::Done()",
}


def timestamp_str(ts: int) -> str:
    """Render a timestamp as MediaPipe's ``DebugString`` does."""
    return _NAMES.get(ts, str(ts))


def is_range_value(ts: int) -> bool:
    """Return True for ordinary timestamps in ``[Min, Max]``."""
    return MIN <= ts <= MAX


def is_allowed_in_stream(ts: int) -> bool:
    """Return True if a packet may carry ``ts`` (``[PreStream, PostStream]``)."""
    return PRE_STREAM <= ts <= POST_STREAM


def next_allowed_in_stream(ts: int) -> int:
    """Return the smallest timestamp a packet after one at ``ts`` may carry."""
    if ts == PRE_STREAM or ts >= MAX:
        return ONE_OVER_POST_STREAM
    return ts + 1
