"""The load pipeline: bytes → YAML → model → cross-references → plugin files."""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.defaults import MAX_FILE_SIZE
from reconciler.errors import DesiredStateError, Located
from reconciler.loader._plugin_files import hash_plugin_files
from reconciler.loader._references import (
    RESOLUTION_CODES,
    ReferenceProblem,
    check_references,
    dotted,
)
from reconciler.loader._yaml import (
    MAX_PROBLEMS,
    PendingProblem,
    Pointer,
    decode,
    locate_all,
    parse,
    too_big,
    yaml_type,
)
from reconciler.model import DesiredState, Mount, Namespace, PluginEntry
from reconciler.resolver import BuiltinVersions

DEFAULT_MAX_FILE_SIZE = MAX_FILE_SIZE


@dataclass(frozen=True)
class LoadedDesired:
    """A valid desired-state file, normalised, with what it was loaded from."""

    path: Path
    state: DesiredState
    sha256: str
    plugin_directory: Path | None


def load_desired(
    path: Path,
    *,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    check_plugin_files: bool = True,
    builtins: BuiltinVersions | None = None,
) -> LoadedDesired:
    """Load, validate and normalise a desired-state file; DesiredStateError lists every problem.

    With `check_plugin_files`, each present entry's binary must exist in the
    plugin directory and match its sha256; an omitted sha256 is filled in.
    `builtins` are the built-ins a mount may name (`validate` passes the shipped
    list); None leaves the problems that depend on them to the plan, which
    resolves against the live server's list.
    """
    name = str(path)
    try:
        size = path.stat().st_size
        if size > max_file_size:
            raise too_big(name, size, max_file_size)
        with path.open("rb") as stream:
            data = stream.read(max_file_size + 1)
    except OSError as error:
        raise DesiredStateError(
            [Located(name, 1, 1, f"cannot read the file: {error.strerror or error}")]
        ) from None
    if len(data) > max_file_size:
        raise too_big(name, len(data), max_file_size)
    return _load(data, name, path, path.parent, check_plugin_files, builtins)


def load_desired_text(
    text: str | bytes,
    name: str = "<text>",
    *,
    directory: Path | None = None,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    check_plugin_files: bool = True,
    builtins: BuiltinVersions | None = None,
) -> LoadedDesired:
    """Like `load_desired` for text already in memory; `plugin_directory` is relative to
    `directory` (default: the current directory)."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    if len(data) > max_file_size:
        raise too_big(name, len(data), max_file_size)
    return _load(data, name, Path(name), directory or Path.cwd(), check_plugin_files, builtins)


# --- pipeline ---------------------------------------------------------------


@dataclass
class _Salvage:
    """What could be validated of an invalid file, so the other rules still run."""

    state: DesiredState
    index: dict[str, list[int]]
    uncertain_names: set[str] = field(default_factory=set)
    names_unknown: bool = False
    directory_broken: bool = False


def _load(
    data: bytes,
    name: str,
    path: Path,
    base: Path,
    check_plugin_files: bool,
    builtins: BuiltinVersions | None,
) -> LoadedDesired:
    text = decode(data, name)
    parsed = parse(text, name)
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
                    f"found {yaml_type(raw)}",
                ),
            ]
        )

    pending: list[PendingProblem] = []
    unlisted = 0
    try:
        state = DesiredState.model_validate(raw)
        salvage = _Salvage(state, {})
    except ValidationError as error:
        details = error.errors(include_url=False)
        pending += [_from_pydantic(detail) for detail in details[:MAX_PROBLEMS]]
        unlisted = len(details) - len(pending)
        salvage = _salvaged(raw)

    for problem in check_references(salvage.state, builtins):
        if _trustworthy(problem, salvage):
            pending.append(
                PendingProblem(_original_pointer(problem.pointer, salvage), problem.message)
            )

    directory: Path | None = None
    if salvage.state.plugin_directory is not None:
        directory = (base / salvage.state.plugin_directory).resolve()
        if check_plugin_files:
            plugins, file_problems = hash_plugin_files(salvage.state, directory)
            pending += [PendingProblem(_original_pointer(p, salvage), m) for p, m in file_problems]
            salvage.state = salvage.state.model_copy(update={"plugins": plugins})

    if problems or pending:
        raise DesiredStateError(problems + locate_all(parsed, name, pending, unlisted))
    return LoadedDesired(
        path=path,
        state=salvage.state,
        sha256=hashlib.sha256(data).hexdigest(),
        plugin_directory=directory,
    )


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


def _from_pydantic(detail: ErrorDetails) -> PendingProblem:
    loc: Pointer = tuple(part for part in detail["loc"] if part != "[key]")
    error_type = detail["type"]
    where = dotted(loc)
    if error_type == "extra_forbidden":
        key = loc[-1]
        return PendingProblem(loc, f"unknown key {key!r}{_key_hint(loc)}", at_key=True)
    if error_type == "missing":
        container = dotted(loc[:-1]) or "the top level"
        return PendingProblem(loc[:-1], f"{container}: missing required key {loc[-1]!r}")
    if error_type in _TYPE_NAMES:
        found = yaml_type(detail.get("input"))
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
    return PendingProblem(loc, message, at_key="[key]" in detail["loc"])


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
    if problem.code not in RESOLUTION_CODES or len(problem.pointer) < 2:
        return True
    if salvage.names_unknown:
        return False
    # A namespaced mount's pointer starts with ("namespaces", NAME) once per level.
    holder: DesiredState | Namespace = salvage.state
    pointer = problem.pointer
    while len(pointer) >= 4 and pointer[0] == "namespaces":
        holder = holder.namespaces[str(pointer[1])]
        pointer = pointer[2:]
    section, index = pointer[0], pointer[1]
    mount: Mount = getattr(holder, str(section))[int(index)]
    plugin = mount.plugin
    if len(pointer) >= 4 and pointer[2] == "connections" and mount.connections:
        plugin = mount.connections[int(pointer[3])].plugin
    return plugin not in salvage.uncertain_names


def _original_pointer(pointer: Pointer, salvage: _Salvage) -> Pointer:
    if len(pointer) >= 2 and isinstance(pointer[1], int) and str(pointer[0]) in salvage.index:
        return (pointer[0], salvage.index[str(pointer[0])][pointer[1]], *pointer[2:])
    return pointer
