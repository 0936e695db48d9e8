"""Load a desired-state file: bytes → YAML → model → cross-references → plugin files.

Every problem is reported at the position of the offending key or value
(`FILE:LINE:COL: message`), all of them at once. The happy path pays for no
positions: the document is built in one pass over the events of ruamel's C
safe parser and validated; only when there are problems is the file parsed
again into a node tree, to find where each one is.

Hostile files cost bounded time and memory: the size is checked before
reading, and the event pass (libyaml produces events without recursion)
bounds nesting depth and alias expansion as it goes. ruamel's own composer
and constructor recurse in C and crash on deep nesting, so they only ever
see text that the event pass accepted.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
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

from reconciler.builtins import (
    BUILTIN_ALIASES,
    OPENBAO_BUILTINS,
    RESERVED_BUILTINS,
    BuiltinKey,
    is_builtin_version,
)
from reconciler.errors import DesiredStateError, Located
from reconciler.model import RESERVED_PATHS, DesiredState, Mount, MountKind, PluginEntry

DEFAULT_MAX_FILE_SIZE = 4 * 1024 * 1024
MAX_DEPTH = 64
# Nodes that aliases may add on top of those written out; far above any real
# file, far below what makes validation slow (a "billion laughs" needs 10^9).
MAX_ALIAS_NODES = 100_000
# Problems reported with their position; a file with more is mostly noise.
MAX_PROBLEMS = 100

Pointer = tuple[str | int, ...]

_SECTIONS: tuple[tuple[Literal["secrets", "auth"], MountKind], ...] = (
    ("secrets", "secret"),
    ("auth", "auth"),
)
_KIND_NOUN: dict[str, str] = {"secret": "secrets engine", "auth": "auth method"}
# The server refuses to mount anything under these (`cannot mount "auth/x/"`).
_PROTECTED_PREFIXES: dict[MountKind, tuple[str, ...]] = {
    "secret": ("auth/", "audit/", *sorted(RESERVED_PATHS["secret"])),
    "auth": tuple(sorted(RESERVED_PATHS["auth"])),
}
# Problems about how a mount resolves; meaningless when an entry it might
# resolve to was dropped for schema errors.
_RESOLUTION_CODES = frozenset({"undeclared", "unknown-version", "ambiguous", "absent"})
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


# Compiled here: ruamel's lazy pattern wrapper costs an attribute lookup per match.
_PLAIN_RULES: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _versions, _tag, _regexp, _first in implicit_resolvers:
    if (1, 2) in _versions and _tag in _CORE_TAGS:
        _pattern = re.compile(_regexp.pattern, _regexp.flags)
        _CoreResolver.add_implicit_resolver_base(_tag, _pattern, _first)
        for _character in _first:
            _PLAIN_RULES.setdefault(_character, []).append((_tag, _pattern))


@dataclass(frozen=True)
class LoadedDesired:
    """A valid desired-state file, normalised, with what it was loaded from."""

    path: Path
    state: DesiredState
    sha256: str
    plugin_directory: Path | None


@dataclass(frozen=True)
class ReferenceProblem:
    """A cross-reference error at `pointer` (keys and list indices from the top level)."""

    pointer: Pointer
    message: str
    code: str

    @property
    def where(self) -> str:
        """The pointer written as `secrets[3].plugin`."""
        return _dotted(self.pointer)


def load_desired(
    path: Path,
    *,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    check_plugin_files: bool = True,
) -> LoadedDesired:
    """Load, validate and normalise a desired-state file; DesiredStateError lists every problem.

    With `check_plugin_files`, each present entry's binary must exist in the
    plugin directory and match its sha256; an omitted sha256 is filled in.
    """
    name = str(path)
    try:
        size = path.stat().st_size
        if size > max_file_size:
            raise _too_big(name, size, max_file_size)
        with path.open("rb") as stream:
            data = stream.read(max_file_size + 1)
    except OSError as error:
        raise DesiredStateError(
            [Located(name, 1, 1, f"cannot read the file: {error.strerror or error}")]
        ) from None
    if len(data) > max_file_size:
        raise _too_big(name, len(data), max_file_size)
    return _load(data, name, path, path.parent, check_plugin_files)


def load_desired_text(
    text: str | bytes,
    name: str = "<text>",
    *,
    directory: Path | None = None,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    check_plugin_files: bool = True,
) -> LoadedDesired:
    """Like `load_desired` for text already in memory; `plugin_directory` is relative to
    `directory` (default: the current directory)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if len(data) > max_file_size:
        raise _too_big(name, len(data), max_file_size)
    return _load(data, name, Path(name), directory or Path.cwd(), check_plugin_files)


def check_references(
    state: DesiredState, builtins: Collection[BuiltinKey] = OPENBAO_BUILTINS
) -> list[ReferenceProblem]:
    """The rules that relate entries to each other, as problems pointing into the file.

    Pure: no I/O. `builtins` holds the (type, name) pairs of the built-in
    plugins, the shipped OpenBao list by default or a live server's.
    """
    problems: list[ReferenceProblem] = []
    problems += _check_plugins(state)
    for section, kind in _SECTIONS:
        mounts: list[Mount] = getattr(state, section)
        problems += _check_paths(section, kind, mounts)
        for index, mount in enumerate(mounts):
            problems += _check_resolution(state, builtins, section, kind, index, mount)
    return problems


# --- pipeline ---------------------------------------------------------------


@dataclass
class _Pending:
    """A problem known by pointer; its position is looked up only if the load fails."""

    pointer: Pointer
    message: str
    at_key: bool = False


@dataclass
class _Salvage:
    """What could be validated of an invalid file, so the other rules still run."""

    state: DesiredState
    index: dict[str, list[int]]
    uncertain_names: set[str] = field(default_factory=set)
    names_unknown: bool = False
    directory_broken: bool = False


def _load(
    data: bytes, name: str, path: Path, base: Path, check_plugin_files: bool
) -> LoadedDesired:
    text = _decode(data, name)
    parsed = _parse(text, name)
    problems, raw = parsed.problems, parsed.value
    if raw is None:
        raise DesiredStateError(
            [
                *problems,
                Located(name, 1, 1, "the file is empty: expected a mapping with version: 1"),
            ]
        )
    if not isinstance(raw, dict):
        line, column = parsed.root
        raise DesiredStateError(
            [
                *problems,
                Located(
                    name,
                    line,
                    column,
                    f"the top level must be a mapping (version: 1, plugins: …), "
                    f"found {_yaml_type(raw)}",
                ),
            ]
        )

    pending: list[_Pending] = []
    unlisted = 0
    try:
        state = DesiredState.model_validate(raw)
        salvage = _Salvage(state, {})
    except ValidationError as error:
        details = error.errors(include_url=False)
        pending += [_from_pydantic(detail) for detail in details[:MAX_PROBLEMS]]
        unlisted = len(details) - len(pending)
        salvage = _salvaged(raw)

    for problem in check_references(salvage.state):
        if _trustworthy(problem, salvage):
            pending.append(_Pending(_original_pointer(problem.pointer, salvage), problem.message))

    directory: Path | None = None
    if salvage.state.plugin_directory is not None:
        directory = (base / salvage.state.plugin_directory).resolve()
        if check_plugin_files:
            plugins, file_problems = _check_plugin_files(salvage.state, directory)
            pending += [_Pending(_original_pointer(p, salvage), m) for p, m in file_problems]
            salvage.state = salvage.state.model_copy(update={"plugins": plugins})

    if problems or pending:
        raise DesiredStateError(problems + _locate_all(parsed, name, pending, unlisted))
    return LoadedDesired(
        path=path,
        state=salvage.state,
        sha256=hashlib.sha256(data).hexdigest(),
        plugin_directory=directory,
    )


def _too_big(name: str, size: int, limit: int) -> DesiredStateError:
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


def _decode(data: bytes, name: str) -> str:
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


def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=False)
    yaml.Resolver = _CoreResolver
    # `_parse` reports every duplicate key itself; the composer must not stop at one.
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


def _parse(text: str, name: str) -> _Parsed:
    """Build the document from the parser's events, bounding what it may cost.

    The events come from the C parser without recursion, so depth and alias
    expansion are checked before anything deep is built. Values follow the
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


# --- schema errors ------------------------------------------------------------

_TYPE_NAMES: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _from_pydantic(detail: ErrorDetails) -> _Pending:
    loc: Pointer = tuple(part for part in detail["loc"] if part != "[key]")
    error_type = detail["type"]
    where = _dotted(loc)
    if error_type == "extra_forbidden":
        key = loc[-1]
        return _Pending(loc, f"unknown key {key!r}{_key_hint(loc)}", at_key=True)
    if error_type == "missing":
        container = _dotted(loc[:-1]) or "the top level"
        return _Pending(loc[:-1], f"{container}: missing required key {loc[-1]!r}")
    if error_type in _TYPE_NAMES:
        found = _yaml_type(detail.get("input"))
        message = f"{where}: expected {_TYPE_NAMES[error_type]}, found {found}"
    elif error_type == "value_error":
        message = f"{where}: {str(detail['msg']).removeprefix('Value error, ')}"
    elif error_type == "string_pattern_mismatch" and loc[-1] in {"name", "plugin"}:
        message = (
            f"{where}: {detail.get('input')!r} is not a plugin name (letters, digits, "
            "'.', '_', '-'; starting with a letter or digit)"
        )
    else:
        message = f"{where}: {str(detail['msg']).replace('Input should be', 'expected')}"
    return _Pending(loc, message, at_key="[key]" in detail["loc"])


def _key_hint(loc: Pointer) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(allowed)})"


def _model_at(loc: Pointer) -> type[BaseModel] | None:
    model: type[BaseModel] = DesiredState
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        found = _model_in(info.annotation) if info is not None else None
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in {list, typing.Union, types.UnionType}:
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None


def _yaml_type(value: Any) -> str:
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


def _dotted(pointer: Pointer) -> str:
    text = ""
    for part in pointer:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _salvaged(raw: dict[Any, Any]) -> _Salvage:
    """The valid parts of an invalid file, each list item validated on its own."""
    directory = raw.get("plugin_directory")
    directory_ok = directory is None or (isinstance(directory, str) and directory != "")
    kept: dict[str, list[Any]] = {}
    index: dict[str, list[int]] = {}
    uncertain: set[str] = set()
    names_unknown = False
    for section, model in (("plugins", PluginEntry), ("secrets", Mount), ("auth", Mount)):
        items = raw.get(section) or []
        kept[section], index[section] = [], []
        if not isinstance(items, list):
            names_unknown |= section == "plugins"
            continue
        for number, item in enumerate(items):
            try:
                kept[section].append(model.model_validate(item))
                index[section].append(number)
            except ValidationError:
                if section != "plugins":
                    continue
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    uncertain.add(item["name"])
                else:
                    names_unknown = True
    state = DesiredState.model_construct(
        version=1,
        plugin_directory=directory if directory_ok else None,
        plugins=kept["plugins"],
        secrets=kept["secrets"],
        auth=kept["auth"],
    )
    return _Salvage(state, index, uncertain, names_unknown, not directory_ok)


def _trustworthy(problem: ReferenceProblem, salvage: _Salvage) -> bool:
    """False for a problem that an entry dropped for its schema errors could cause."""
    if problem.code == "sha256-required":
        return not salvage.directory_broken
    if problem.code not in _RESOLUTION_CODES or len(problem.pointer) < 2:
        return True
    if salvage.names_unknown:
        return False
    section, index = problem.pointer[0], problem.pointer[1]
    mount: Mount = getattr(salvage.state, str(section))[int(index)]
    return mount.plugin not in salvage.uncertain_names


def _original_pointer(pointer: Pointer, salvage: _Salvage) -> Pointer:
    if len(pointer) >= 2 and isinstance(pointer[1], int) and str(pointer[0]) in salvage.index:
        return (pointer[0], salvage.index[str(pointer[0])][pointer[1]], *pointer[2:])
    return pointer


# --- cross-references ---------------------------------------------------------


def _check_plugins(state: DesiredState) -> list[ReferenceProblem]:
    problems: list[ReferenceProblem] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, entry in enumerate(state.plugins):
        first = seen.setdefault(entry.key, index)
        if first != index:
            problems.append(
                ReferenceProblem(
                    ("plugins", index, "version"),
                    f"duplicate plugin {_entry_name(entry)}: plugins[{first}] declares it too "
                    "(versions compare without the leading 'v')",
                    "duplicate-plugin",
                )
            )
        if (entry.type, entry.name) in RESERVED_BUILTINS:
            problems.append(
                ReferenceProblem(
                    ("plugins", index, "name"),
                    f"{entry.name!r} is a reserved built-in of the server and cannot be overridden",
                    "reserved-plugin",
                )
            )
        if entry.present and entry.sha256 is None and state.plugin_directory is None:
            problems.append(
                ReferenceProblem(
                    ("plugins", index),
                    f"plugin {_entry_name(entry)}: sha256 is required unless plugin_directory "
                    "is set (then it is computed from the file)",
                    "sha256-required",
                )
            )
    return problems


def _entry_name(entry: PluginEntry) -> str:
    return f"{entry.type}/{entry.name}/{entry.version or '(unversioned)'}"


def _check_paths(section: str, kind: MountKind, mounts: list[Mount]) -> list[ReferenceProblem]:
    problems: list[ReferenceProblem] = []
    declared: dict[str, int] = {}
    for index, mount in enumerate(mounts):
        problems += _reserved(section, kind, index, "path", mount.path)
        first = declared.setdefault(mount.path, index)
        if first != index:
            problems.append(
                ReferenceProblem(
                    (section, index, "path"),
                    f"duplicate {section} path {mount.path!r}: {section}[{first}] declares it too",
                    "duplicate-path",
                )
            )
    for index, mount in enumerate(mounts):
        for other_path in _parents(mount.path):
            other = declared.get(other_path)
            if other is None:
                continue
            # Reported at whichever of the two comes later in the file.
            later, earlier = (index, other) if index > other else (other, index)
            problems.append(
                ReferenceProblem(
                    (section, later, "path"),
                    f"{section} path {mount.path!r} is nested inside {other_path!r} "
                    f"({section}[{earlier}] and [{later}]): the server refuses mounts inside "
                    "mounts",
                    "nested-path",
                )
            )
    moved: dict[str, int] = {}
    for index, mount in enumerate(mounts):
        if mount.moved_from is None:
            continue
        pointer: Pointer = (section, index, "moved_from")
        problems += _reserved(section, kind, index, "moved_from", mount.moved_from)
        if mount.moved_from == mount.path:
            problems.append(
                ReferenceProblem(pointer, "moved_from is the mount's own path", "moved-from")
            )
        elif mount.moved_from in declared:
            problems.append(
                ReferenceProblem(
                    pointer,
                    f"moved_from {mount.moved_from!r} is declared as a mount path "
                    f"({section}[{declared[mount.moved_from]}]): a path cannot be moved away "
                    "and kept",
                    "moved-from",
                )
            )
        first = moved.setdefault(mount.moved_from, index)
        if first != index:
            problems.append(
                ReferenceProblem(
                    pointer,
                    f"moved_from {mount.moved_from!r} is also the moved_from of "
                    f"{section}[{first}]: one mount can move to one place",
                    "moved-from",
                )
            )
    return problems


def _parents(path: str) -> Iterator[str]:
    """`a/b/c/` → `a/`, `a/b/`."""
    position = path.find("/")
    while 0 <= position < len(path) - 1:
        yield path[: position + 1]
        position = path.find("/", position + 1)


def _reserved(
    section: str, kind: MountKind, index: int, key: str, path: str
) -> list[ReferenceProblem]:
    for prefix in _PROTECTED_PREFIXES[kind]:
        if path.startswith(prefix):
            shown = f"auth/{path}" if kind == "auth" else path
            what = "reserved" if path == prefix else f"inside the reserved {prefix!r}"
            return [
                ReferenceProblem(
                    (section, index, key),
                    f"{section} path {shown!r} is {what}: the server owns it and refuses to "
                    "mount there",
                    "reserved-path",
                )
            ]
    return []


def _check_resolution(
    state: DesiredState,
    builtins: Collection[BuiltinKey],
    section: str,
    kind: MountKind,
    index: int,
    mount: Mount,
) -> list[ReferenceProblem]:
    """Version resolution (SPEC §1): pinned version, sole declared entry, or the built-in."""
    name = mount.plugin
    entries = [(i, e) for i, e in enumerate(state.plugins) if e.type == kind and e.name == name]
    present = [e for _, e in entries if e.present]
    is_builtin = (kind, name) in builtins
    at_plugin: Pointer = (section, index, "plugin")
    at_version: Pointer = (section, index, "version")
    noun = _KIND_NOUN[kind]

    if (kind, name) in RESERVED_BUILTINS:
        return [
            ReferenceProblem(
                at_plugin,
                f"{name!r} is mounted by the server itself and cannot be mounted again",
                "reserved-plugin",
            )
        ]
    if mount.version is not None:
        version = mount.version
        if is_builtin_version(version):
            if is_builtin:
                return []
            return [
                ReferenceProblem(
                    at_version,
                    f"version {version} pins a built-in, but {name!r} is not a built-in {noun}",
                    "unknown-version",
                )
            ]
        for number, entry in entries:
            if entry.version == version:
                if entry.present:
                    return []
                return [
                    ReferenceProblem(
                        at_version,
                        f"{kind}/{name}/{version} is declared with state: absent "
                        f"(plugins[{number}]): a mount cannot use an entry being removed",
                        "absent",
                    )
                ]
        declared = ", ".join(_shown(e.version) for _, e in entries)
        return [
            ReferenceProblem(
                at_version,
                f"no {kind} plugin {name!r} with version {_shown(version)} is declared"
                + (f" (declared: {declared})" if declared else ""),
                "unknown-version",
            )
        ]
    if len(present) > 1:
        versions = ", ".join(_shown(e.version) for e in present)
        return [
            ReferenceProblem(
                at_plugin,
                f"ambiguous: pin a version ({kind} plugin {name!r} is declared as {versions})",
                "ambiguous",
            )
        ]
    if present or is_builtin:
        return []
    if entries:
        number = entries[0][0]
        return [
            ReferenceProblem(
                at_plugin,
                f"{kind} plugin {name!r} is declared only with state: absent (plugins[{number}]) "
                "and is not a built-in",
                "absent",
            )
        ]
    hint = ""
    if (kind, name) in BUILTIN_ALIASES:
        hint = f" (the server stores it under another name: write {BUILTIN_ALIASES[kind, name]})"
    else:
        other = sorted({e.type for e in state.plugins if e.name == name})
        if other:
            hint = f" (plugins declares it with type: {', '.join(other)})"
    return [
        ReferenceProblem(
            at_plugin,
            f"plugin {name!r} is neither declared in plugins (type: {kind}) nor a built-in "
            f"{noun}{hint}",
            "undeclared",
        )
    ]


def _shown(version: str) -> str:
    return version or '""'


# --- plugin files ---------------------------------------------------------------


def _check_plugin_files(
    state: DesiredState, directory: Path
) -> tuple[list[PluginEntry], list[tuple[Pointer, str]]]:
    """Hash every present entry's binary; fill omitted sha256, report mismatches."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        return state.plugins, [(("plugin_directory",), f"plugin directory {directory} {what}")]
    problems: list[tuple[Pointer, str]] = []
    plugins: list[PluginEntry] = []
    digests: dict[str, tuple[str, str]] = {}
    for index, entry in enumerate(state.plugins):
        plugins.append(entry)
        if not entry.present:
            continue
        command = entry.effective_command
        pointer: Pointer = ("plugins", index, "command" if entry.command else "name")
        if command not in digests:
            digests[command] = _file_digest(directory / command)
        digest, failure = digests[command]
        if failure:
            problems.append(
                (
                    pointer,
                    f"plugin file {command!r} of {_entry_name(entry)} {failure} in {directory}",
                )
            )
        elif entry.sha256 is None:
            plugins[-1] = entry.model_copy(update={"sha256": digest})
        elif entry.sha256 != digest:
            problems.append(
                (
                    ("plugins", index, "sha256"),
                    f"sha256 mismatch for {directory / command}: the file hashes to {digest}, "
                    f"the entry says {entry.sha256}",
                )
            )
    return plugins, problems


def _file_digest(path: Path) -> tuple[str, str]:
    """(hex digest, "") or ("", why there is none)."""
    try:
        if not path.exists():
            return "", "is not found"
        if not path.is_file():
            return "", "is not a regular file"
        with path.open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest(), ""
    except OSError as error:
        return "", f"cannot be read ({error.strerror or error})"


# --- positions ------------------------------------------------------------------


def _locate_all(
    parsed: _Parsed, name: str, pending: list[_Pending], unlisted: int
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
