"""The no-op check, three ways: our `plan`, a `bao` CLI script, and raw GETs.

The server holds N external catalog entries and N built-in mounts, and the
desired file is `export_desired` of that server, so every check finds nothing
to do. Measured for each size:

* ours: `load_desired` + `plan_for` (read the live state, plan) in-process,
  requests counted at the transport; plus `reconciler plan FILE` as a process;
* the CLI script: what people script today, one `bao` process per object
  (see `cli_check`);
* the floor: the fewest GETs that hold the same information (the reads of
  `read_live_state`: catalog, external entries, mount tables, identity, the
  root's namespace list, a probe per external-plugin mount), sent one after the other on one keep-alive httpx
  client, answers decoded and dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from benchmarks.common import (
    RequestCounter,
    reconciler_command,
    rounded,
    say,
    summary,
)
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.export import export_desired
from reconciler.loader import load_desired
from reconciler.plan import DesiredSource
from reconciler.planner import plan
from reconciler.reconcile import plan_for
from reconciler.state import read_live_state

# The server runs a binary at registration to ask for its version (~0.4 s for a
# Python plugin, and registrations are serialised). A script that exits at once
# fails that probe immediately, which the server tolerates: the entry is stored
# with the version given. Nothing ever mounts these entries.
_NOOP_PLUGIN = b"#!/bin/sh\n# catalog-only benchmark entry: never mounted\nexit 1\n"
_NOOP_COMMAND = "bench-noop"
_MOUNT_PLUGINS = ("kv", "transit")
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class Population:
    """How many benchmark catalog entries and mounts the server holds."""

    entries: int = 0
    mounts: int = 0


def entry_name(index: int) -> tuple[str, str]:
    """(type, name) of the index-th benchmark catalog entry: secret and auth alternate."""
    return ("secret" if index % 2 == 0 else "auth", f"bench-plugin-{index:04d}")


def populate(server: DevServer, population: Population, entries: int, mounts: int) -> float:
    """Add catalog entries and mounts until the server holds `entries` and `mounts`."""
    noop = server.plugin_directory / _NOOP_COMMAND
    if not noop.exists():
        noop.write_bytes(_NOOP_PLUGIN)
        noop.chmod(0o755)
    sha256 = hashlib.sha256(_NOOP_PLUGIN).hexdigest()
    started = time.perf_counter()
    with httpx.Client(
        base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=60
    ) as http:
        for index in range(population.entries, entries):
            plugin_type, name = entry_name(index)
            http.put(
                f"/v1/sys/plugins/catalog/{plugin_type}/{name}",
                json={"sha256": sha256, "command": _NOOP_COMMAND, "version": "v1.0.0"},
            ).raise_for_status()
        for index in range(population.mounts, mounts):
            body: dict[str, Any] = {
                "type": _MOUNT_PLUGINS[index % len(_MOUNT_PLUGINS)],
                "description": f"benchmark mount {index}",
            }
            if index % 2 == 0:
                body["config"] = {"default_lease_ttl": "1h", "max_lease_ttl": "24h"}
            http.post(f"/v1/sys/mounts/bench-{index:04d}", json=body).raise_for_status()
    population.entries, population.mounts = (
        max(population.entries, entries),
        max(population.mounts, mounts),
    )
    return time.perf_counter() - started


def write_export(server: DevServer, path: Path) -> Path:
    """The server's export as the desired file: every check against it is a no-op."""
    with Client(server.address, server.token) as client:
        path.write_text(export_desired(read_live_state(client)))
    return path


# --- ours -----------------------------------------------------------------------


def measure_ours(server: DevServer, desired: Path, runs: int) -> dict[str, Any]:
    """load + read + plan in-process, a fresh client per run; requests per run."""
    samples: list[float] = []
    requests: list[int] = []
    kinds: dict[str, int] = {}
    for _ in range(runs):
        counter = RequestCounter()
        started = time.perf_counter()
        with Client(server.address, server.token, event_hooks=counter.event_hooks) as client:
            loaded = load_desired(desired)
            the_plan = plan_for(client, loaded)
        samples.append(time.perf_counter() - started)
        if the_plan.actions or the_plan.errors:
            raise RuntimeError(
                f"the plan of an exported file is not empty: {len(the_plan.actions)} actions, "
                f"{len(the_plan.errors)} errors"
            )
        requests.append(len(counter))
        kinds = counter.by_kind()
    if len(set(requests)) != 1:
        raise RuntimeError(f"the request count varies between runs: {requests}")
    return {**summary(samples), "requests": requests[0], "requests_by_kind": kinds}


def measure_phases(server: DevServer, desired: Path, runs: int) -> dict[str, float]:
    """Where the time of our no-op plan goes: median seconds per phase."""
    phases: dict[str, list[float]] = {"load": [], "read": [], "plan": []}
    for _ in range(runs):
        with Client(server.address, server.token) as client:
            started = time.perf_counter()
            loaded = load_desired(desired)
            loaded_at = time.perf_counter()
            live = read_live_state(client)
            read_at = time.perf_counter()
            plan(
                loaded.state,
                live,
                source=DesiredSource(path=str(loaded.path), sha256=loaded.sha256),
            )
            planned_at = time.perf_counter()
        phases["load"].append(loaded_at - started)
        phases["read"].append(read_at - loaded_at)
        phases["plan"].append(planned_at - read_at)
    return {f"{name}_s": rounded(sorted(v)[len(v) // 2]) for name, v in phases.items()}


def measure_cli_process(server: DevServer, desired: Path, runs: int) -> dict[str, Any]:
    """`reconciler plan FILE --detailed-exitcode` as a user runs it (exit 0: no changes)."""
    env = server_env(server)
    samples: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [*reconciler_command(), "plan", str(desired), "--detailed-exitcode"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        samples.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(
                f"reconciler plan exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
    return summary(samples)


# --- the floor ------------------------------------------------------------------------


def measure_floor(server: DevServer, runs: int) -> dict[str, Any]:
    """The fewest requests that read the same state, sequential on one client."""
    samples: list[float] = []
    count = 0
    for _ in range(runs):
        started = time.perf_counter()
        with httpx.Client(
            base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=60
        ) as http:
            catalog = http.get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
            external = [entry for entry in catalog if not entry.get("builtin")]
            for entry in external:
                params = {"version": entry["version"]} if entry.get("version") else None
                http.get(
                    f"/v1/sys/plugins/catalog/{entry['type']}/{entry['name']}", params=params
                ).json()
            tables = {
                "": http.get("/v1/sys/mounts").json()["data"],
                "auth/": http.get("/v1/sys/auth").json()["data"],
            }
            # The identity the plan's fingerprint names, as the live-state read gets it.
            http.get("/v1/sys/seal-status").json()
            # The namespace walk starts at the root: one list (404 when there is none).
            http.get("/v1/sys/namespaces", params={"list": "true"})
            # A mount of an external plugin is probed (does its backend answer?).
            names = {entry["name"] for entry in external}
            probes = [
                prefix + path.rstrip("/")
                for prefix, table in tables.items()
                for path, mount in table.items()
                if mount["type"] in names
            ]
            for path in probes:
                http.get(f"/v1/{path}", params={"help": "1"})
        samples.append(time.perf_counter() - started)
        count = len(external) + 5 + len(probes)
    return {**summary(samples), "requests": count}


# --- the bao CLI script -------------------------------------------------------------------


def cli_check(bao: str, server: DevServer, desired: Path, budget: float) -> dict[str, Any]:
    """The same check as a shell script does it today: one `bao` process per call.

        bao plugin list -format=json -detailed        # once: what is registered
        bao secrets list -format=json -detailed       # once: type and version of each mount
        bao auth list -format=json -detailed          # once
        bao plugin info -format=json -version=V TYPE NAME   # per entry: sha256, command, args
        bao read -format=json sys/mounts/PATH/tune    # per mount: the tuned config
                                   (sys/auth/PATH/tune for auth mounts)

    Run one after the other, as a script does, each answer compared with the
    desired file (sha256, command, args; plugin type and pinned version;
    description; declared TTLs). Each of these commands sends exactly one
    request (checked against the server's audit log). When `budget` seconds
    run out, the rest is extrapolated from the mean time per call so far.
    """
    document = YAML(typ="safe").load(desired.read_text())
    plugins = [p for p in document.get("plugins") or [] if p.get("state", "present") == "present"]
    mounts = [("secret", m) for m in document.get("secrets") or []] + [
        ("auth", m) for m in document.get("auth") or []
    ]
    tables: dict[str, dict[str, Any]] = {}
    differences: list[str] = []

    def check_plugin(entry: dict[str, Any]) -> Callable[[Any], None]:
        def compare(answer: Any) -> None:
            if (answer.get("sha256"), answer.get("command"), answer.get("args") or []) != (
                entry["sha256"],
                entry.get("command", entry["name"]),
                entry.get("args") or [],
            ):
                differences.append(f"plugin {entry['type']}/{entry['name']}")

        return compare

    def check_tune(kind: str, mount: dict[str, Any]) -> Callable[[Any], None]:
        def compare(answer: Any) -> None:
            path = mount["path"].rstrip("/") + "/"
            listed = tables[kind].get(path)
            data = answer.get("data") or {}
            if listed is None or listed.get("type") != mount["plugin"]:
                differences.append(f"mount {path}: plugin")
                return
            if mount.get("version") and listed.get("plugin_version") != mount["version"]:
                differences.append(f"mount {path}: version")
            if (listed.get("description") or "") != mount.get("description", ""):
                differences.append(f"mount {path}: description")
            for key, value in (mount.get("config") or {}).items():
                if key.endswith("_ttl") and data.get(key) != _seconds(value):
                    differences.append(f"mount {path}: {key}")

        return compare

    def keep_table(kind: str) -> Callable[[Any], None]:
        def keep(answer: Any) -> None:
            tables[kind] = answer

        return keep

    calls: list[tuple[list[str], Callable[[Any], None]]] = [
        (["plugin", "list", "-format=json", "-detailed"], lambda _answer: None),
        (["secrets", "list", "-format=json", "-detailed"], keep_table("secret")),
        (["auth", "list", "-format=json", "-detailed"], keep_table("auth")),
    ]
    for entry in plugins:
        version = [f"-version={entry['version']}"] if entry.get("version") else []
        calls.append(
            (
                ["plugin", "info", "-format=json", *version, entry["type"], entry["name"]],
                check_plugin(entry),
            )
        )
    for kind, mount in mounts:
        table = "sys/auth" if kind == "auth" else "sys/mounts"
        calls.append(
            (
                ["read", "-format=json", f"{table}/{mount['path'].rstrip('/')}/tune"],
                check_tune(kind, mount),
            )
        )

    say(f"  measuring the bao CLI script ({len(calls)} bao processes, one after the other)")
    env = server_env(server)
    started = time.perf_counter()
    done = 0
    for arguments, compare in calls:
        answer = subprocess.run(
            [bao, *arguments], env=env, capture_output=True, timeout=60, check=False
        )
        if answer.returncode != 0:
            raise RuntimeError(f"bao {' '.join(arguments)} failed: {answer.stderr.decode()}")
        compare(json.loads(answer.stdout))
        done += 1
        if time.perf_counter() - started > budget and done < len(calls):
            say(f"  bao CLI budget of {budget:.0f}s used after {done}/{len(calls)} calls")
            break
    elapsed = time.perf_counter() - started
    extrapolated = done < len(calls)
    if differences:
        raise RuntimeError(f"the CLI check found differences: {differences[:5]}")
    return {
        "seconds": rounded(elapsed * len(calls) / done),
        "measured_s": rounded(elapsed),
        "calls_made": done,
        "subprocesses": len(calls),
        "requests": len(calls),
        "per_call_ms": rounded(1000 * elapsed / done, 1),
        "extrapolated": extrapolated,
    }


def _seconds(value: Any) -> int:
    if isinstance(value, int):
        return value
    total = 0
    for number, unit in _DURATION.findall(str(value)):
        total += int(number) * _UNITS[unit]
    return total


def server_env(server: DevServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.update(BAO_ADDR=server.address, BAO_TOKEN=server.token)
    return env


# --- one size ---------------------------------------------------------------------------


def run_size(
    bao: str,
    server: DevServer,
    population: Population,
    size: int,
    workdir: Path,
    *,
    runs: int,
    cli_budget: float,
) -> dict[str, Any]:
    """Every measurement for N entries + N mounts."""
    say(f"no-op plan, {size} catalog entries + {size} mounts: populating the server")
    setup = populate(server, population, size, size)
    desired = write_export(server, workdir / f"desired-{size}.yaml")
    say(f"  measuring reconciler (in-process, {runs} runs)")
    ours = measure_ours(server, desired, runs)
    phases = measure_phases(server, desired, max(1, runs // 2))
    say(f"  measuring the raw-GET floor ({runs} runs)")
    floor = measure_floor(server, runs)
    say("  measuring `reconciler plan` as a process")
    process = measure_cli_process(server, desired, max(1, runs // 2))
    cli = cli_check(bao, server, desired, cli_budget)
    return {
        "catalog_entries": size,
        "mounts": size,
        "setup_s": rounded(setup),
        "ours": {**ours, "phases": phases},
        "ours_process": process,
        "floor": floor,
        "bao_cli": cli,
        "cli_over_ours": rounded(cli["seconds"] / ours["median_s"], 1),
        "cli_over_ours_process": rounded(cli["seconds"] / process["median_s"], 1),
        "ours_over_floor": rounded(ours["median_s"] / floor["median_s"], 2),
        "requests_not_for_entries": ours["requests"] - size,
    }
