"""A no-op plan of a server with many namespaces: what the namespace walk costs.

The server holds `namespaces` namespaces (half of them nested one level below
another) with `mounts` built-in mounts each, and the desired file is the root
export of the whole server, so the plan finds nothing to do. Measured twice,
with few and with all mounts per namespace: the request count must be the same
(catalog reads + 1 walk request and 2 mount tables per namespace), and the time
shows what reading 20 namespaces × 50 mounts costs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import RequestCounter, rounded, say, summary
from benchmarks.noop_plan import write_export
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.loader import load_desired
from reconciler.reconcile import plan_for


def namespace_paths(count: int) -> list[str]:
    """`ns-00`, `ns-00/child-01`, `ns-02`, …: every other namespace nested in the previous."""
    paths: list[str] = []
    for index in range(count):
        if index % 2 == 1:
            paths.append(f"ns-{index - 1:02d}/child-{index:02d}")
        else:
            paths.append(f"ns-{index:02d}")
    return paths


def populate(server: DevServer, paths: list[str], start: int, stop: int) -> None:
    """Create the namespaces (once) and built-in mounts `start`..`stop` in each."""
    with httpx.Client(
        base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=60
    ) as http:
        for path in paths:
            parent, _, name = path.rpartition("/")
            if start == 0:
                http.post(
                    f"/v1/sys/namespaces/{name}", headers={"X-Vault-Namespace": parent}
                ).raise_for_status()
            for index in range(start, stop):
                kind, plugin = ("auth", "approle") if index % 5 == 4 else ("mounts", "kv")
                http.post(
                    f"/v1/sys/{kind}/bench-{index:03d}",
                    json={"type": plugin},
                    headers={"X-Vault-Namespace": path},
                ).raise_for_status()


def measure(server: DevServer, desired: Path, runs: int) -> dict[str, Any]:
    samples: list[float] = []
    requests: list[int] = []
    for _ in range(runs):
        counter = RequestCounter()
        started = time.perf_counter()
        with Client(server.address, server.token, event_hooks=counter.event_hooks) as client:
            the_plan = plan_for(client, load_desired(desired))
        samples.append(time.perf_counter() - started)
        if the_plan.actions or the_plan.errors:
            raise RuntimeError(f"the plan of an exported server is not empty: {the_plan}")
        requests.append(len(counter))
    if len(set(requests)) != 1:
        raise RuntimeError(f"the request count varies between runs: {requests}")
    return {**summary(samples), "requests": requests[0]}


def measure_floor(server: DevServer, runs: int) -> dict[str, Any]:
    """The same reads as the live-state read, sequential on one keep-alive client: the
    catalog (list, each external entry), the identity, and from the root down, per
    namespace, its children and its two mount tables; a probe per external-plugin mount."""
    samples: list[float] = []
    count = 0
    for _ in range(runs):
        requests = 0
        started = time.perf_counter()
        with httpx.Client(
            base_url=server.address, headers={"X-Vault-Token": server.token}, timeout=60
        ) as http:

            def get(path: str, namespace: str = "", **params: str) -> Any:
                nonlocal requests
                requests += 1
                return http.get(
                    f"/v1/{path}", params=params, headers={"X-Vault-Namespace": namespace}
                )

            catalog = get("sys/plugins/catalog").json()["data"]["detailed"]
            external = [entry for entry in catalog if not entry.get("builtin")]
            for entry in external:
                get(
                    f"sys/plugins/catalog/{entry['type']}/{entry['name']}",
                    version=entry.get("version", ""),
                ).json()
            get("sys/seal-status").json()
            names = {entry["name"] for entry in external}
            walk = [""]
            while walk:
                namespace = walk.pop()
                children = get("sys/namespaces", namespace, list="true")
                if children.status_code == 200:
                    walk.extend(
                        f"{namespace}{key.strip('/')}/" for key in children.json()["data"]["keys"]
                    )
                for prefix, table in (("", "sys/mounts"), ("auth/", "sys/auth")):
                    for path, mount in get(table, namespace).json()["data"].items():
                        if mount["type"] in names:
                            get(prefix + path.rstrip("/"), namespace, help="1")
        samples.append(time.perf_counter() - started)
        count = requests
    return {**summary(samples), "requests": count}


def run_namespaces(
    server: DevServer, workdir: Path, namespaces: int, mounts: int, runs: int
) -> dict[str, Any]:
    """A no-op plan with `namespaces` namespaces of 5, then of `mounts`, mounts each."""
    paths = namespace_paths(namespaces)
    few = min(5, mounts)
    say(f"namespaces: {namespaces} namespaces × {few} mounts")
    started = time.perf_counter()
    populate(server, paths, 0, few)
    small = measure(server, write_export(server, workdir / "namespaces-few.yaml"), runs)
    say(f"namespaces: {namespaces} namespaces × {mounts} mounts")
    populate(server, paths, few, mounts)
    setup = time.perf_counter() - started
    large = measure(server, write_export(server, workdir / "namespaces-many.yaml"), runs)
    floor = measure_floor(server, runs)
    if small["requests"] != large["requests"]:
        raise RuntimeError(
            f"requests grew with the mounts: {small['requests']} → {large['requests']}"
        )
    return {
        "namespaces": namespaces,
        "mounts_per_namespace": mounts,
        "setup_s": rounded(setup),
        "few_mounts": {"mounts_per_namespace": few, **small},
        "many_mounts": large,
        "floor": floor,
        "ours_over_floor": rounded(large["median_s"] / floor["median_s"], 2),
        # Per namespace: one LIST sys/namespaces and the two mount tables.
        "requests_per_namespace": 3,
    }
