"""The one duration grammar: every flag, file field and environment setting reads it.

`90`, `1.5`, `200ms`, `1.5s`, `90s`, `15m`, `1h`, `7d` and combinations written
largest unit first (`1h30m`, `1m30s500ms`). A bare number is seconds. The server
keeps lease durations in whole seconds, so the file's fields use `whole_seconds`,
which refuses a fraction instead of rounding it away.
"""

from __future__ import annotations

import re
from typing import Any

_UNIT_SECONDS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_NUMBER = r"\d+(?:\.\d+)?"
_GRAMMAR = re.compile(
    "^" + "".join(f"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit, _ in _UNIT_SECONDS) + "$"
)
# The same grammar for JSON Schema, which has no named groups.
SCHEMA_PATTERN = (
    f"^(?=.)({_NUMBER}|" + "".join(f"({_NUMBER}{unit})?" for unit, _ in _UNIT_SECONDS) + ")$"
)
EXAMPLES = "e.g. 200ms, 90s, 15m, 1h30m, 7d"
# The server holds a duration as Go's int64 nanoseconds and refuses a longer one
# ("multiplication of durations resulted in overflow"): about 292 years.
SERVER_MAX_SECONDS = (2**63 - 1) // 1_000_000_000


def parse_seconds(value: Any) -> float:
    """Seconds from a number or a duration string; ValueError names the grammar."""
    if isinstance(value, bool):
        raise ValueError(f"a duration must be a number of seconds or a string ({EXAMPLES})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(f"invalid duration {value!r} (expected seconds or {EXAMPLES})")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: a duration cannot be negative")
    return seconds


def whole_seconds(value: Any) -> int:
    """Whole seconds, for what the server keeps as an integer (lease TTLs)."""
    seconds = parse_seconds(value)
    if not seconds.is_integer():
        raise ValueError(f"invalid duration {value!r}: the server takes whole seconds")
    if seconds > SERVER_MAX_SECONDS:
        raise ValueError(
            f"invalid duration {value!r}: the server refuses durations above "
            f"{SERVER_MAX_SECONDS} seconds (about 292 years)"
        )
    return int(seconds)


def _parse_text(text: str) -> float:
    stripped = text.strip()
    if re.fullmatch(_NUMBER, stripped):
        return float(stripped)
    match = _GRAMMAR.match(stripped)
    if not stripped or match is None:
        raise ValueError(f"invalid duration {text!r} (expected seconds or {EXAMPLES})")
    return sum(float(match[unit]) * factor for unit, factor in _UNIT_SECONDS if match[unit])


def duration_text(seconds: int) -> str:
    """`1h`, `90m`, `45s`: what a person writes, and parses back to the same seconds."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
