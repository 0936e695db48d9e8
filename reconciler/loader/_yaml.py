"""YAML text → plain Python values in one pass over parser events, and positions back.

The document is built from the events of ruamel's safe parser, recording where
each key and value stands so that problems found later need no second parse. The
event pass bounds nesting depth and alias expansion as it goes; nothing recurses
per level of nesting, so a hostile file costs bounded time and memory.

The events come from the C parser (`ruamel.yaml.clib`) when it is installed and
from ruamel's pure-Python parser otherwise; both give the same values and the same
positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.resolver import BaseResolver, implicit_resolvers

from reconciler.errors import DesiredStateError, Located

MAX_DEPTH = 64
# Nodes that aliases may add on top of those written out; far above any real
# file, far below what makes validation slow (a "billion laughs" needs 10^9).
MAX_ALIAS_NODES = 100_000

Pointer = tuple[str | int, ...]

# Problems reported with their position; a file with more is mostly noise.
MAX_PROBLEMS = 100


@dataclass
class PendingProblem:
    """A problem known by pointer; its position is looked up only if the load fails."""

    pointer: Pointer
    message: str
    at_key: bool = False


# YAML forbids these characters anywhere in a stream (YAML 1.2, 5.1).
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("bool", "float", "int", "null", "merge")
)


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema: null, booleans, numbers; every other plain scalar is a string.

    No timestamps: `2024-01-01` stays a string, as in JSON. ruamel's default
    resolver also looks the document's YAML version up for every scalar,
    which is most of its composer's time.
    """

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(loadumper=loadumper if loadumper is not None else loader)

    @property
    def processing_version(self) -> tuple[int, int]:
        """The YAML version the pure-Python parser applies: always 1.2 here."""
        return (1, 2)


# Compiled here: ruamel's lazy pattern wrapper costs an attribute lookup per match.
_PLAIN_RULES: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _versions, _tag, _regexp, _first in implicit_resolvers:
    if (1, 2) in _versions and _tag in _CORE_TAGS:
        _pattern = re.compile(_regexp.pattern, _regexp.flags)
        _CoreResolver.add_implicit_resolver_base(_tag, _pattern, _first)
        for _character in _first:
            _PLAIN_RULES.setdefault(_character, []).append((_tag, _pattern))


def too_big(name: str, size: int, limit: int) -> DesiredStateError:
    return DesiredStateError(
        [
            Located(
                name,
                1,
                1,
                f"the file is {size} bytes, over the limit of {limit} bytes "
                "(raise it with --max-file-size)",
            )
        ]
    )


def decode(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DesiredStateError(
            [
                Located(
                    name,
                    1,
                    1,
                    "the file is UTF-16 or UTF-32 encoded (it starts with a byte order "
                    "mark): save it as UTF-8",
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = _byte_position(data, error.start)
        raise DesiredStateError(
            [
                Located(
                    name,
                    line,
                    column,
                    f"invalid UTF-8 byte 0x{data[error.start]:02x}: the file is binary or in "
                    "another encoding (e.g. latin-1); save it as UTF-8",
                )
            ]
        ) from None
    text = text.removeprefix("\ufeff")
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, column = _text_position(text, bad.start())
        character = bad.group()
        hint = (
            ": the file is binary, or UTF-16 without a byte order mark; save it as UTF-8"
            if character == "\x00"
            else " in YAML"
        )
        raise DesiredStateError(
            [Located(name, line, column, f"character U+{ord(character):04X} is not allowed{hint}")]
        )
    return text


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace"))
    return data.count(b"\n", 0, offset) + 1, column + 1


def _text_position(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


# Whether to take events from the C parser when it is installed; tests turn it off to
# run the pure-Python parser that loads files where `ruamel.yaml.clib` is missing.
use_c_parser = True


def _yaml() -> YAML:
    # Without ruamel.yaml.clib, ruamel falls back to its pure-Python parser itself.
    yaml = YAML(typ="safe", pure=not use_c_parser)
    yaml.Resolver = _CoreResolver
    # `parse` reports every duplicate key itself; the composer must not stop at one.
    yaml.allow_duplicate_keys = True
    return yaml


def _marked(name: str, error: MarkedYAMLError, text: str) -> Located:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    # Built from the parts, never str(error): that quotes the file's text,
    # which may hold an env value.
    problem = str(error.problem or "syntax error")
    if "tab" in problem or _character_at(text, line, column) == "\t":
        problem += " (a tab: YAML is indented with spaces)"
    context = ""
    if error.context:
        start = error.context_mark
        started = (
            f" that starts at {start.line + 1}:{start.column + 1}"
            if start is not None and (start.line + 1, start.column + 1) != (line, column)
            else ""
        )
        context = f" ({error.context}{started})"
    return Located(name, line, column, f"invalid YAML: {problem}{context}")


def _character_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n", line)
    if len(lines) < line:
        return ""
    return lines[line - 1][column - 1 : column]


_STR = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Missing:
    """A marker in place of a mapping's pending key."""


_NO_KEY = _Missing()
_SKIP = _Missing()  # a key whose value is dropped (duplicate or not a scalar)
_MERGE = _Missing()


@dataclass
class _Frame:
    value: dict[Any, Any] | list[Any]
    anchor: str | None
    start: Any
    size: int = 1
    key: Any = _NO_KEY
    merges: list[tuple[Any, Any]] = field(default_factory=list)
    key_lines: dict[Any, int] = field(default_factory=dict)
    key_mark: Any = None


_Mark = tuple[int, int]
_Place = tuple[Any, _Mark, _Mark]


@dataclass
class _Parsed:
    """The document as plain Python values, and the problems that do not stop loading."""

    value: Any = None
    root: tuple[int, int] = (1, 1)
    problems: list[Located] = field(default_factory=list)
    # id(container) → key or index → (stored key, key position, value position), 0-based;
    # recorded while parsing so that reporting problems needs no second parse.
    positions: dict[int, dict[str | int, _Place]] = field(default_factory=dict)


class _Fatal(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1
        self.column = mark.column + 1
        self.message = message


def parse(text: str, name: str) -> _Parsed:
    """Build the document from the parser's events, bounding what it may cost.

    Neither parser recurses per nesting level, so depth and alias expansion are
    checked before anything deep is built. Values follow the
    YAML 1.2 core schema (null, booleans, integers, floats, strings); keys
    repeated in a mapping are reported, the first one is kept.
    """
    parsed = _Parsed()
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    open_anchors: set[str] = set()
    expanded = 0
    documents = 0

    def add(value: Any, size: int, mark: Any, empty: bool = False) -> None:
        if value is _MERGE and not (
            stack and isinstance(stack[-1].value, dict) and stack[-1].key is _NO_KEY
        ):
            value = "<<"  # only a key merges; elsewhere it is the string it looks like
        if not stack:
            parsed.value = value
            parsed.root = (mark.line + 1, mark.column + 1)
            return
        parent = stack[-1]
        parent.size += size
        at = (mark.line, mark.column)
        if isinstance(parent.value, list):
            places = parsed.positions.setdefault(id(parent.value), {})
            places[len(parent.value)] = (len(parent.value), at, at)
            parent.value.append(value)
        elif parent.key is _NO_KEY:
            parent.key = _new_key(parent, value, mark, name, parsed.problems)
            parent.key_mark = at
        else:
            if parent.key is _MERGE:
                parent.merges.append((value, mark))
            elif parent.key is not _SKIP:
                parent.value[parent.key] = value
                # An empty plain value has no position of its own: point at its key.
                places = parsed.positions.setdefault(id(parent.value), {})
                places[str(parent.key)] = (
                    parent.key,
                    parent.key_mark,
                    parent.key_mark if empty else at,
                )
            parent.key = _NO_KEY

    try:
        for event in _yaml().parse(text):
            kind = type(event)
            if kind is ScalarEvent:
                value = _scalar(event)
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
                add(value, 1, event.start_mark, empty=event.value == "" and event.style is None)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if len(stack) >= MAX_DEPTH:
                    raise _Fatal(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
                if event.tag not in {None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}:
                    raise _Fatal(event.start_mark, _unsupported_tag(event.tag))
                if event.anchor is not None:
                    open_anchors.add(event.anchor)
                container: dict[Any, Any] | list[Any] = {} if kind is MappingStartEvent else []
                stack.append(_Frame(container, event.anchor, event.start_mark))
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    _merge(frame, name, parsed.problems, parsed.positions)
                if frame.anchor is not None:
                    anchors[frame.anchor] = (frame.value, frame.size)
                    open_anchors.discard(frame.anchor)
                add(frame.value, frame.size, frame.start)
            elif kind is AliasEvent:
                if event.anchor in open_anchors:
                    raise _Fatal(
                        event.start_mark, f"alias *{event.anchor} refers to a node that contains it"
                    )
                if event.anchor not in anchors:
                    raise _Fatal(
                        event.start_mark, f"alias *{event.anchor} names no anchor above it"
                    )
                value, size = anchors[event.anchor]
                expanded += size
                if expanded > MAX_ALIAS_NODES:
                    raise _Fatal(
                        event.start_mark,
                        f"aliases expand to more than {MAX_ALIAS_NODES} nodes "
                        "(an alias bomb?): write the values out",
                    )
                add(value, size, event.start_mark)
            elif kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Fatal(
                        event.start_mark,
                        "a desired-state file holds one YAML document; remove this '---' "
                        "and what follows, or merge it into the first",
                    )
    except _Fatal as fatal:
        problem = Located(name, fatal.line, fatal.column, fatal.message)
        raise DesiredStateError([*parsed.problems, problem]) from None
    except MarkedYAMLError as error:
        raise DesiredStateError([*parsed.problems, _marked(name, error, text)]) from None
    except YAMLError as error:
        problem = Located(name, 1, 1, f"invalid YAML: {error}")
        raise DesiredStateError([*parsed.problems, problem]) from None
    return parsed


def _new_key(frame: _Frame, key: Any, mark: Any, name: str, problems: list[Located]) -> Any:
    """The key a mapping stores the next value under, or a marker to drop or merge it."""
    if key is _MERGE:
        return _MERGE
    line, column = mark.line + 1, mark.column + 1
    try:
        first = frame.key_lines.get(key)
    except TypeError:
        problems.append(
            Located(name, line, column, "a mapping key must be a plain value, not a collection")
        )
        return _SKIP
    if first is not None:
        problems.append(
            Located(
                name, line, column, f"duplicate key {key!r} (first at line {first}): remove one"
            )
        )
        return _SKIP
    frame.key_lines[key] = line
    return key


def _merge(
    frame: _Frame,
    name: str,
    problems: list[Located],
    positions: dict[int, dict[str | int, _Place]],
) -> None:
    """`<<: *defaults`: keys of the merged mappings that the mapping does not set itself."""
    mapping = frame.value
    assert isinstance(mapping, dict)
    explicit = set(mapping)
    for value, mark in frame.merges:
        sources = value if isinstance(value, list) else [value]
        for source in sources:
            if not isinstance(source, dict):
                problems.append(
                    Located(
                        name,
                        mark.line + 1,
                        mark.column + 1,
                        "a merge key (<<) takes a mapping or a list of mappings",
                    )
                )
                continue
            merged_places = positions.setdefault(id(mapping), {})
            source_places = positions.get(id(source), {})
            for key, item in source.items():
                if key not in explicit and key not in mapping:
                    mapping[key] = item
                    if str(key) in source_places:
                        merged_places[str(key)] = source_places[str(key)]


def _scalar(event: Any) -> Any:
    value: str = event.value
    tag = event.tag
    if tag is None or tag == "!":
        if not event.implicit[0]:
            return value
        tag = _resolve_plain(value)
    if tag == _STR:
        return value
    if tag == _MERGE_TAG:
        return _MERGE
    construct = _SCALARS.get(tag)
    if construct is None:
        raise _Fatal(event.start_mark, _unsupported_tag(tag))
    try:
        return construct(value)
    except ValueError:
        # The value is not quoted back: it may be an env value.
        shown = tag.replace("tag:yaml.org,2002:", "!!", 1)
        raise _Fatal(event.start_mark, f"this value is not a valid {shown}") from None


def _resolve_plain(value: str) -> str:
    for tag, pattern in _PLAIN_RULES.get(value[:1], ()):
        if pattern.match(value):
            return tag
    return _STR


def _unsupported_tag(tag: str) -> str:
    shown = tag.replace("tag:yaml.org,2002:", "!!", 1)
    return f"unsupported tag {shown}: write plain YAML values (strings, numbers, booleans)"


def _core_int(text: str) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    for prefix, base in (("0b", 2), ("0o", 8), ("0x", 16)):
        if digits.startswith(prefix):
            return sign * int(digits[2:], base)
    return sign * int(digits, 10)


def _core_float(text: str) -> float:
    number = text.replace("_", "").lower()
    if number.lstrip("+-") in {".inf", ".nan"}:
        number = number.replace(".", "")
    return float(number)


def _core_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered not in {"true", "false"}:
        raise ValueError(text)
    return lowered == "true"


def _core_null(text: str) -> None:
    if text not in {"", "~", "null", "Null", "NULL"}:
        raise ValueError(text)


_SCALARS: dict[str, Any] = {
    "tag:yaml.org,2002:int": _core_int,
    "tag:yaml.org,2002:float": _core_float,
    "tag:yaml.org,2002:bool": _core_bool,
    "tag:yaml.org,2002:null": _core_null,
}


def yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --- positions ------------------------------------------------------------------


def locate_all(
    parsed: _Parsed, name: str, pending: list[PendingProblem], unlisted: int
) -> list[Located]:
    located = []
    for problem in pending[:MAX_PROBLEMS]:
        line, column = _find(parsed, problem.pointer, problem.at_key)
        located.append(Located(name, line + 1, column + 1, problem.message))
    unlisted += max(0, len(pending) - MAX_PROBLEMS)
    if unlisted:
        last = located[-1]
        located.append(Located(name, last.line, last.column, f"{unlisted} more problems not shown"))
    return located


def _find(parsed: _Parsed, pointer: Pointer, at_key: bool) -> _Mark:
    """The position of a pointer's key or value; where it stops existing, its deepest parent."""
    node = parsed.value
    key_mark = value_mark = (parsed.root[0] - 1, parsed.root[1] - 1)
    for part in pointer:
        if not isinstance(node, dict | list):
            return value_mark
        place = parsed.positions.get(id(node), {}).get(
            part if isinstance(node, list) else str(part)
        )
        if place is None:
            return value_mark
        stored, key_mark, value_mark = place
        node = node[stored]
    return key_mark if at_key else value_mark
