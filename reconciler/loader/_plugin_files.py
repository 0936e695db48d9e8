"""Plugin binaries in the local plugin directory: present, and hashing to their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.loader._references import entry_name
from reconciler.loader._yaml import Pointer
from reconciler.model import DesiredState, PluginEntry

# --- plugin files ---------------------------------------------------------------


def hash_plugin_files(
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
        if not entry.present or entry.managed_by == "server":
            continue  # the server's configuration names and hashes its own binaries
        command = entry.effective_command
        pointer: Pointer = ("plugins", index, "command" if entry.command else "name")
        if command not in digests:
            digests[command] = file_digest(directory / command)
        digest, failure = digests[command]
        if failure:
            problems.append(
                (
                    pointer,
                    f"plugin file {command!r} of {entry_name(entry)} {failure} in {directory}",
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


def file_digest(path: Path) -> tuple[str, str]:
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
