"""One writer per namespace tree: flocks keyed by the server's identity and namespace.

An apply in namespace N writes N and the namespaces below it (a root apply writes
the catalog, which every namespace's mounts run). It holds N's lock exclusively and
each ancestor's lock shared: a root apply excludes every other apply on the server,
an apply in `team1` excludes one in `team1/sub` (and the reverse), and `team1` and
`team2` run side by side.

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


def lock_path(server: ServerIdentity, namespace: str | None = None) -> Path:
    """The lock file of one server (cluster id, or the address when it has none) and
    namespace (the server's own unless given)."""
    key = server.cluster_id or server.address
    where = (server.namespace if namespace is None else namespace).strip("/")
    digest = hashlib.sha256(f"{key}|{where}".encode()).hexdigest()[:16]
    return lock_directory() / f"reconciler-{digest}.lock"


def _ancestors(namespace: str) -> list[str]:
    """`team1/sub` → ["", "team1"]: the namespaces whose trees contain it."""
    segments = [s for s in namespace.strip("/").split("/") if s]
    return ["/".join(segments[:depth]) for depth in range(len(segments))]


@contextlib.contextmanager
def server_lock(server: ServerIdentity, timeout: float = 0.0) -> Iterator[None]:
    """Hold the lock of the server's namespace tree, waiting up to `timeout` seconds;
    LockBusy if it stays held."""
    deadline = time.monotonic() + timeout
    # Root first, always in the same order: two appliers never wait on each other crosswise.
    wanted = [(name, fcntl.LOCK_SH) for name in _ancestors(server.namespace)]
    wanted.append((server.namespace.strip("/"), fcntl.LOCK_EX))
    descriptors: list[int] = []
    try:
        for namespace, mode in wanted:
            path = lock_path(server, namespace)
            descriptor = _open_shared(path)
            descriptors.append(descriptor)
            while True:
                try:
                    fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockBusy(_busy_message(server, path, namespace)) from None
                    time.sleep(_POLL_SECONDS)
        yield
    finally:
        for descriptor in reversed(descriptors):
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


def _busy_message(server: ServerIdentity, path: Path, holder: str) -> str:
    namespace = f", namespace {server.namespace}" if server.namespace else ""
    cluster = f"cluster {server.cluster_id}" if server.cluster_id else "no cluster id"
    if holder != server.namespace.strip("/"):
        # An apply of an enclosing tree (the root's writes every namespace) holds it.
        where = f"namespace {holder}" if holder else "the root namespace"
        namespace += f"; an apply in {where} writes this namespace too"
    return (
        f"another apply holds the lock for {server.address} ({cluster}{namespace}): "
        f"lock {path} is held; retry later or pass --lock-timeout"
    )
