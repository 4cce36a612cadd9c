"""The one place openvino-genai errors are translated into ovgraph's error tree."""

from __future__ import annotations

from ovgraph.errors import InvalidParameterError, RequestError

__all__ = ["first_line", "scrub", "translate_error"]

# genai messages that describe a bad input rather than a server fault.
_CLIENT_ERRORS = (
    "aspect ratio",
    "Missing image",
    "not representable as pointer",
    "Chat template",
    "exceeds",
)


def translate_error(exc: BaseException) -> Exception:
    """Map a genai exception to the ovgraph error tree (client fault or server fault)."""
    text = first_line(str(exc)) or type(exc).__name__
    for marker in _CLIENT_ERRORS:
        if marker.lower() in text.lower():
            if "aspect ratio" in text.lower():
                return InvalidParameterError(
                    "Image aspect ratio must be smaller than 200", param="messages"
                )
            return RequestError(scrub(text))
    return RuntimeError(scrub(text))


def first_line(text: str) -> str:
    """The first line of a genai message that is not a source location."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line and not line.startswith(("Exception from ", "Check '")):
            return line
    return ""


def scrub(text: str) -> str:
    """Drop source locations (``at /path/file.cpp:123``) from genai messages."""
    for marker in (" at /", " at C:", "Check '"):
        if marker in text:
            text = text.split(marker)[0].strip() or "Generation failed"
    return text[:300]
