"""The file observer: directory events that may change what the desired file reads."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("reconciler.watch")

# The name Kubernetes swaps atomically when a ConfigMap volume is updated.
CONFIGMAP_DATA_LINK = "..data"
# Event types that never change content; the watcher's own reads cause them.
_READ_ONLY_EVENTS = frozenset({"opened", "closed_no_write"})


def concerns_file(path: Path, event_path: str) -> bool:
    """Whether a change at `event_path` may change what the file at `path` reads."""
    base = os.path.basename(event_path.rstrip("/"))
    if base in (path.name, CONFIGMAP_DATA_LINK):
        return True
    with contextlib.suppress(OSError):
        return Path(event_path).resolve() == path.resolve()
    return False


def start_observer(path: Path, on_change: Callable[[], None]) -> Any:
    """Watch the file's directory (not the file: editors and ConfigMaps replace it).

    Returns the running observer (stop and join it), or None when the directory cannot
    be watched: the resync timer still reconciles, only the reaction to edits is lost.
    """
    directory = path.parent.resolve()
    observer = Observer()
    try:
        observer.schedule(_EventHandler(path, on_change), str(directory), recursive=False)
        observer.start()
    except OSError as error:
        log.warning(
            "cannot watch %s (%s): changes are picked up at the next resync only",
            directory,
            error.strerror or error,
        )
        return None
    return observer


class _EventHandler(FileSystemEventHandler):
    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        super().__init__()
        self._path = path
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READ_ONLY_EVENTS:
            return
        paths = [os.fsdecode(event.src_path), os.fsdecode(event.dest_path or "")]
        if any(concerns_file(self._path, p) for p in paths if p):
            self._on_change()
