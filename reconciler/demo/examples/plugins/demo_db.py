"""`demo-db`: an external database plugin whose "database" is a JSON file.

Connection details (written to `<mount>/config/<name>`):
- `connection_url`: `demo-db:///ABSOLUTE/PATH.json`, the file that holds the
  database. The database is reachable when the file's directory exists; the
  file is created on first write.
- `username`, `password` (optional): the root credentials. When the file
  names a root user (`create_database`), they must match it.

With `verify_connection` (the server's default) Initialize connects at once:
an unreachable database or wrong root credentials fail the write.

Every process appends to the file's `sessions` what it did (`initialize`,
`close`) with its version, pid and start time, so a test sees which binary
serves a connection and when it restarted. Users created through it carry
the version that created them, in their record and in their name
(`<role>-<version>-<random>`, `unversioned` for the unversioned build).
Passwords are kept only as SHA-256.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reconciler.demo.examples.plugins.database_runtime import DatabaseError, NewUser
from reconciler.demo.examples.plugins.framework import PROCESS_STARTED

NAME = "demo-db"
TYPE_NAME = "demo-db"
# "" is the unversioned build: it reports no version, so the catalog keeps
# the entry unversioned.
VERSIONS = ("v1.0.0", "v2.0.0", "")
URL_SCHEME = "demo-db"


def connection_url(path: Path) -> str:
    """The `connection_url` for a database kept in the file `path`."""
    return f"{URL_SCHEME}://{Path(path).resolve()}"


def create_database(path: Path, root_username: str = "", root_password: str = "") -> None:
    """Create an empty database file, with root credentials a connection must present."""
    content: dict[str, Any] = {"users": {}, "sessions": []}
    if root_username:
        content["root"] = {"username": root_username, "password_sha256": _sha256(root_password)}
    _write(Path(path), content)


def read_database(path: Path) -> dict[str, Any]:
    """The database file's content: `users`, `sessions` and maybe `root`."""
    content = json.loads(Path(path).read_text())
    assert isinstance(content, dict)
    return content


class DemoDatabase:
    """One connection of demo-db, as one plugin process serves it."""

    def __init__(self, version: str) -> None:
        if version not in VERSIONS:
            known = ", ".join(v or '"" (unversioned)' for v in VERSIONS)
            raise ValueError(f"{NAME} has no version {version!r}; known: {known}")
        self.name = NAME
        self.version = version
        self._path: Path | None = None
        self._root: tuple[str, str] = ("", "")

    # -- the Database protocol ----------------------------------------------

    def type_name(self) -> str:
        return TYPE_NAME

    def initialize(self, config: dict[str, Any], verify_connection: bool) -> dict[str, Any]:
        url = config.get("connection_url")
        if not isinstance(url, str) or not url:
            raise DatabaseError("connection_url is required")
        parts = urlsplit(url)
        if parts.scheme != URL_SCHEME or parts.netloc or not parts.path.startswith("/"):
            raise DatabaseError(
                f"connection_url must look like {URL_SCHEME}:///ABSOLUTE/PATH.json "
                "(a file the database lives in)"
            )
        self._path = Path(parts.path)
        self._root = (str(config.get("username", "")), str(config.get("password", "")))
        if verify_connection:
            with self._database() as content:
                content["sessions"].append(self._event("initialize", verified=True))
        else:
            self._record_if_reachable(self._event("initialize", verified=False))
        return config

    def new_user(self, request: NewUser) -> str:
        label = self.version or "unversioned"
        username = f"{request.role_name or 'user'}-{label}-{secrets.token_hex(4)}"
        with self._database() as content:
            content["users"][username] = {
                "role": request.role_name,
                "display_name": request.display_name,
                "password_sha256": _sha256(request.password),
                "expiration": _iso(request.expiration),
                "statements": request.statements,
                "created_by": {"version": self.version, "pid": os.getpid()},
            }
        return username

    def update_user(
        self, username: str, new_password: str | None, new_expiration: datetime | None
    ) -> None:
        with self._database() as content:
            user = content["users"].get(username)
            if user is None:
                raise DatabaseError("no such user")
            if new_password is not None:
                user["password_sha256"] = _sha256(new_password)
            if new_expiration is not None:
                user["expiration"] = _iso(new_expiration)
            user["updated_by"] = {"version": self.version, "pid": os.getpid()}

    def delete_user(self, username: str) -> None:
        with self._database() as content:
            content["users"].pop(username, None)

    def close(self) -> None:
        if self._path is not None:
            self._record_if_reachable(self._event("close"))

    # -- the "database" -------------------------------------------------------

    def _event(self, event: str, **extra: Any) -> dict[str, Any]:
        return {
            "event": event,
            "version": self.version,
            "pid": os.getpid(),
            "started_unix": PROCESS_STARTED,
            "at": datetime.now(UTC).isoformat(),
            **extra,
        }

    def _record_if_reachable(self, event: dict[str, Any]) -> None:
        try:
            with self._database() as content:
                content["sessions"].append(event)
        except DatabaseError:
            pass  # nothing to record into: the database is not there

    @contextmanager
    def _database(self) -> Iterator[dict[str, Any]]:
        """The database's content, locked; written back when the block ends without error."""
        if self._path is None:
            raise DatabaseError("not initialized: write the connection's configuration first")
        path = self._path
        if not path.parent.is_dir():
            # No path in the message: connection details stay out of errors.
            raise DatabaseError("cannot reach the database named by connection_url")
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            content: dict[str, Any] = (
                json.loads(path.read_text()) if path.exists() else {"users": {}, "sessions": []}
            )
            root = content.get("root")
            if root is not None and (
                self._root[0] != root["username"]
                or _sha256(self._root[1]) != root["password_sha256"]
            ):
                raise DatabaseError("authentication failed: wrong root username or password")
            yield content
            _write(path, content)


def database(version: str) -> DemoDatabase:
    """The demo-db plugin as it behaves in `version` ("" for the unversioned build)."""
    return DemoDatabase(version)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _write(path: Path, content: dict[str, Any]) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(content, handle, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
