"""One writer per server: an exclusive flock keyed by the server's identity.

The key is the cluster id the server reports, plus the namespace: two spellings of
one address (`127.0.0.1` and `localhost`), two nodes of one raft cluster, or an
operator and a daemon running as different Unix users all meet the same lock. The
kernel drops a flock when its holder dies, so there is never a stale lock to clear.

The lock files live in `/run/lock` (shared by every user and outside the private
`/tmp` a systemd unit may have), or in `$RECONCILER_LOCK_DIR` when it is set;
without either, in the temp directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from reconciler.errors import LockBusy
from reconciler.model import ServerIdentity

LOCK_DIR_VARIABLE = "RECONCILER_LOCK_DIR"
SHARED_LOCK_DIR = Path("/run/lock")
_POLL_SECONDS = 0.1


def lock_directory() -> Path:
    """Where lock files live: $RECONCILER_LOCK_DIR, else /run/lock, else the temp dir."""
    configured = os.environ.get(LOCK_DIR_VARIABLE)
    if configured:
        return Path(configured)
    if SHARED_LOCK_DIR.is_dir() and os.access(SHARED_LOCK_DIR, os.W_OK | os.X_OK):
        return SHARED_LOCK_DIR
    return Path(tempfile.gettempdir())


def lock_path(server: ServerIdentity) -> Path:
    """The lock file of one server (cluster id, or the address when it has none) and namespace."""
    key = server.cluster_id or server.address
    digest = hashlib.sha256(f"{key}|{server.namespace}".encode()).hexdigest()[:16]
    return lock_directory() / f"reconciler-{digest}.lock"


@contextlib.contextmanager
def server_lock(server: ServerIdentity, timeout: float = 0.0) -> Iterator[None]:
    """Hold the server's lock, waiting up to `timeout` seconds; LockBusy if it stays held."""
    path = lock_path(server)
    descriptor = _open_shared(path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(_busy_message(server, path)) from None
                time.sleep(_POLL_SECONDS)
        yield
    finally:
        os.close(descriptor)


def _open_shared(path: Path) -> int:
    """Open the lock file, creating it readable by all so that other users can lock it too.

    flock needs only a read descriptor. The file is opened without O_CREAT when it
    exists: with fs.protected_regular, O_CREAT on another user's file in a sticky
    directory such as /run/lock is refused even when the file exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.EEXIST:
                continue  # another process created it between the two opens
            raise
        os.fchmod(descriptor, 0o644)  # whatever the umask: every user must be able to open it
        return descriptor


def _busy_message(server: ServerIdentity, path: Path) -> str:
    namespace = f", namespace {server.namespace}" if server.namespace else ""
    cluster = f"cluster {server.cluster_id}" if server.cluster_id else "no cluster id"
    return (
        f"another apply holds the lock for {server.address} ({cluster}{namespace}): "
        f"lock {path} is held; retry later or pass --lock-timeout"
    )
