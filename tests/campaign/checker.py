"""The invariants, checked with plain HTTP reads of each node on its own.

Nothing here imports the reconciler's client, state or node-state code: each node
is read at its own API address with `X-Vault-No-Request-Forwarding: true`, so what
a node says is what that node runs. Every check returns the violations it found,
as sentences naming the invariant, the node and the mount.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.campaign.scenario import (
    CONNECTIONS,
    DB_MOUNT,
    DB_V1,
    KV_MOUNTS,
    MOVED_A,
    ROOT_A,
    ROOT_B,
    Mount,
    Scenario,
)
from tests.campaign.world import Before, catalog_in_file, kv_mounts_in_file
from tests.cluster import Cluster, ClusterNode

# Invariant names, as docs/safety.md states them.
ANSWERS = "every mount and connection answers on every node"
DATA = "data written before is readable on every node"
PINNED_AS_RUN = "every mount is pinned to what it runs, the same on every node"
CLAIMS = "every claim of the output matches per-node reads"
CONVERGES = "the re-run without faults converges"
EXIT_CODES = "exit codes follow the contract"
WATCH_HOLDS = "watch holds a failed upgrade"
INVARIANTS = (ANSWERS, DATA, PINNED_AS_RUN, CLAIMS, CONVERGES, EXIT_CODES, WATCH_HOLDS)

# A standby's tables lag the active by ~50 ms and it applies a global reload up to ~1 s
# later: a violation must still hold after this long to count.
SETTLE_SECONDS = 3.0


@dataclass
class ApplyRun:
    """One `apply --json` process and what it printed."""

    exit_code: int
    stdout: str
    stderr: str
    killed: bool = False
    document: dict[str, Any] | None = None
    faults: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        return bool(self.document and self.document.get("converged") is True)


@dataclass
class MountSeen:
    """One mount as one node sees it: its table entry and what its probe answered."""

    present: bool
    pinned: str = ""
    running: str = ""
    running_sha256: str = ""
    answers: bool = False
    serving: str = ""  # the version the process that answered reports
    kept: str | None = None  # the value at data/kept
    problem: str = ""


@dataclass
class Picture:
    """Everything the checker read, per node."""

    mounts: dict[str, dict[str, MountSeen]] = field(default_factory=dict)  # node → name → seen
    catalog: dict[str, dict[tuple[str, str, str], str]] = field(default_factory=dict)  # → sha
    pins: dict[str, dict[str, str | None]] = field(default_factory=dict)  # node → conn → pin
    creds: dict[str, str] = field(default_factory=dict)  # connection → "" or the problem


class NodeReader:
    """Plain reads of one node, never forwarded to another."""

    def __init__(self, node: ClusterNode, token: str) -> None:
        self.node = node
        self.http = httpx.Client(
            base_url=node.address,
            headers={"X-Vault-Token": token, "X-Vault-No-Request-Forwarding": "true"},
            timeout=10,
        )

    def get(self, path: str, namespace: str = "") -> httpx.Response:
        headers = {"X-Vault-Namespace": namespace} if namespace else {}
        return self.http.get(f"/v1/{path}", headers=headers)

    def close(self) -> None:
        self.http.close()


def mounts_to_look_at(scenario: Scenario) -> list[Mount]:
    """Every demo-kv mount named by the file or by the state before the first run."""
    return [*KV_MOUNTS, *(m for m in kv_mounts_in_file(scenario) if m not in KV_MOUNTS)]


def read_picture(cluster: Cluster, scenario: Scenario) -> Picture:
    picture = Picture()
    for node in cluster.nodes:
        if not node.running:
            continue
        reader = NodeReader(node, cluster.root_token)
        try:
            picture.mounts[node.node_id] = {
                m.name: _see_mount(reader, m) for m in mounts_to_look_at(scenario)
            }
            picture.catalog[node.node_id] = _catalog(reader)
            picture.pins[node.node_id] = {name: _pin(reader, name) for name in CONNECTIONS}
        except httpx.HTTPError as error:
            picture.mounts[node.node_id] = {}
            picture.catalog[node.node_id] = {}
            picture.pins[node.node_id] = {name: f"unreadable: {error}" for name in CONNECTIONS}
        finally:
            reader.close()
    # A connection runs on the active only: ask for credentials there (a lease is a write).
    with httpx.Client(
        base_url=cluster.active().address,
        headers={"X-Vault-Token": cluster.root_token},
        timeout=30,
    ) as http:
        for name in CONNECTIONS:
            try:
                answer = http.get(f"/v1/{DB_MOUNT}creds/{name}")
                picture.creds[name] = (
                    "" if answer.status_code == 200 else f"{answer.status_code} {answer.text[:200]}"
                )
            except httpx.HTTPError as error:
                picture.creds[name] = str(error)
    return picture


def _see_mount(reader: NodeReader, mount: Mount) -> MountSeen:
    table = reader.get("sys/mounts", mount.namespace)
    if table.status_code != 200:
        return MountSeen(present=False, problem=f"sys/mounts answered {table.status_code}")
    entry = table.json()["data"].get(mount.path)
    if entry is None:
        return MountSeen(present=False)
    seen = MountSeen(
        present=True,
        pinned=entry.get("plugin_version") or "",
        running=entry.get("running_plugin_version") or "",
        running_sha256=entry.get("running_sha256") or "",
    )
    probe = reader.get(f"{mount.path}info", mount.namespace)
    if probe.status_code == 200:
        seen.answers = True
        seen.serving = str(probe.json()["data"].get("version", ""))
        kept = reader.get(f"{mount.path}data/kept", mount.namespace)
        if kept.status_code == 200:
            seen.kept = str(kept.json()["data"].get("value"))
    else:
        seen.problem = f"{probe.status_code} {probe.text.strip()[:160]}"
    return seen


def _catalog(reader: NodeReader) -> dict[tuple[str, str, str], str]:
    answer = reader.get("sys/plugins/catalog")
    answer.raise_for_status()
    return {
        (e["type"], e["name"], e.get("version") or ""): e.get("sha256") or ""
        for e in answer.json()["data"].get("detailed") or []
        if not e.get("builtin")
    }


def _pin(reader: NodeReader, name: str) -> str | None:
    answer = reader.get(f"{DB_MOUNT}config/{name}")
    if answer.status_code != 200:
        return None
    return str(answer.json()["data"].get("plugin_version") or "")


# --- the invariants ---------------------------------------------------------------


def check_exit_code(run: ApplyRun) -> list[str]:
    """0 exactly when the JSON says converged; 1 otherwise; one JSON document on stdout."""
    if run.killed:
        return [] if run.exit_code == -9 else [f"{EXIT_CODES}: killed run exited {run.exit_code}"]
    if run.document is None:
        return [f"{EXIT_CODES}: stdout is not one JSON document: {run.stdout[:300]!r}"]
    if "error" in run.document:
        return [] if run.exit_code == 1 else [f"{EXIT_CODES}: error document, exit {run.exit_code}"]
    wanted = 0 if run.converged else 1
    if run.exit_code != wanted:
        return [
            f"{EXIT_CODES}: exit {run.exit_code} with converged={run.document.get('converged')}"
        ]
    return []


def check_answers_and_data(
    picture: Picture, scenario: Scenario, before: Before, removed_allowed: bool
) -> list[str]:
    """Every mount named by the file or the state before answers on every node, with its data.

    A mount the change removes (the prune's, the move's source) may be gone, on every
    node at once; the moved mount answers at one of its two paths.
    """
    problems: list[str] = []
    for node_id, mounts in picture.mounts.items():
        if not mounts:
            problems.append(f"{ANSWERS}: {node_id} could not be read")
            continue
        for mount in KV_MOUNTS:
            seen = mounts[mount.name]
            where, at = mount, seen
            if mount == ROOT_A and scenario.change == "move" and not seen.present:
                where, at = MOVED_A, mounts[MOVED_A.name]
            if not at.present:
                if scenario.change == "prune" and mount == ROOT_B and removed_allowed:
                    continue
                problems.append(f"{ANSWERS}: {mount.name} is gone from {node_id}'s mount table")
                continue
            if not at.answers:
                problems.append(
                    f"{ANSWERS}: {where.name} does not answer on {node_id}: {at.problem}"
                )
                continue
            if at.kept != before.data[mount.name]:
                problems.append(f"{DATA}: {where.name} on {node_id} reads {at.kept!r} at data/kept")
        if (
            scenario.change == "move"
            and mounts[ROOT_A.name].present
            and mounts[MOVED_A.name].present
        ):
            problems.append(f"{ANSWERS}: both {ROOT_A.name} and {MOVED_A.name} exist on {node_id}")
    for node_id, pins in picture.pins.items():
        for name, pin in pins.items():
            if pin is None:
                problems.append(f"{ANSWERS}: connection {name} cannot be read on {node_id}")
    for name, problem in picture.creds.items():
        if problem:
            problems.append(f"{ANSWERS}: connection {name} gives no credentials: {problem}")
    return problems


def check_pinned_as_run(picture: Picture) -> list[str]:
    """After a run that ended by itself, no mount is pinned ahead of what it runs (a pin
    on a version that did not start kills the mount at its next reload or restart), and
    every node runs the same version of it."""
    problems: list[str] = []
    serving: dict[str, set[str]] = {}
    for node_id, mounts in picture.mounts.items():
        for name, seen in mounts.items():
            if not seen.present or not seen.answers:
                continue
            serving.setdefault(name, set()).add(seen.serving)
            if seen.pinned != seen.serving:
                problems.append(
                    f"{PINNED_AS_RUN}: {name} on {node_id} is pinned to {seen.pinned!r} "
                    f"but runs {seen.serving!r}"
                )
    for name, versions in sorted(serving.items()):
        if len(versions) > 1:
            problems.append(f"{PINNED_AS_RUN}: {name} runs {sorted(versions)} across the nodes")
    return problems


def check_claims(
    run: ApplyRun, picture: Picture, cluster: Cluster, scenario: Scenario, before: Before
) -> list[str]:
    """What the output says (converged, rolled back, per-node state) against the reads."""
    document = run.document
    if not document or "error" in document:
        return []
    problems: list[str] = []
    if run.converged:
        problems += [
            f"{CLAIMS}: converged, yet {p}" for p in target_problems(picture, cluster, scenario)
        ]
    for claim in document.get("rolled_back") or []:
        problems += _rolled_back_problems(str(claim), picture, scenario, before)
    problems += _per_node_claim_problems(document, picture, scenario)
    return problems


def target_problems(picture: Picture, cluster: Cluster, scenario: Scenario) -> list[str]:
    """How the cluster differs from the file, node by node (empty: it is the file)."""
    problems: list[str] = []
    for node_id, mounts in picture.mounts.items():
        for mount in kv_mounts_in_file(scenario):
            seen = mounts.get(mount.name)
            source = ROOT_A if mount == MOVED_A else mount
            version = scenario.kv_target(source)
            sha = cluster.plugins[("demo-kv", version)].sha256
            if seen is None or not seen.present:
                problems.append(f"{mount.name} is missing on {node_id}")
                continue
            got = (seen.pinned, seen.running, seen.running_sha256, seen.answers, seen.serving)
            if got != (version, version, sha, True, version):
                problems.append(
                    f"{mount.name} on {node_id}: pinned {seen.pinned!r}, running "
                    f"{seen.running!r} sha256 {seen.running_sha256[:12]!r}, "
                    f"answers {seen.answers} as {seen.serving!r} ({seen.problem}); "
                    f"the file says {version}"
                )
        gone = [m for m in mounts_to_look_at(scenario) if m not in kv_mounts_in_file(scenario)]
        for mount in gone:
            if mounts.get(mount.name, MountSeen(present=False)).present:
                problems.append(f"{mount.name} is still mounted on {node_id}")
        for name, pin in picture.pins.get(node_id, {}).items():
            if pin != scenario.connection_target():
                problems.append(f"connection {name} on {node_id} is pinned to {pin!r}")
        catalog = picture.catalog.get(node_id, {})
        for key, present in catalog_in_file(scenario).items():
            if present and catalog.get(key) != cluster.plugins[key[1:]].sha256:
                problems.append(f"catalog entry {'/'.join(key)} on {node_id}: {catalog.get(key)!r}")
            if not present and key in catalog:
                problems.append(f"catalog entry {'/'.join(key)} is still there on {node_id}")
    return problems


def mounts_named(text: str, scenario: Scenario) -> list[Mount]:
    """The campaign's mounts a line or a field of the output names ("secrets/kv-a/",
    "secrets/kv-c/ in namespace team/", "secrets/team/kv-c/")."""
    named = []
    for mount in mounts_to_look_at(scenario):
        spellings = [rf"secrets/{re.escape(mount.name)}(?! in namespace)"]
        if mount.namespace:
            spellings.append(
                rf"secrets/{re.escape(mount.path)} in namespace {re.escape(mount.namespace)}"
            )
        if any(re.search(rf"(^|\s){spelling}", text) for spelling in spellings):
            named.append(mount)
    return named


def _rolled_back_problems(
    claim: str, picture: Picture, scenario: Scenario, before: Before
) -> list[str]:
    """A "rolled back" line names a mount or a connection that runs what it ran before;
    a line that says a mount was not restored claims nothing about it."""
    problems: list[str] = []
    if "not restored" in claim:
        return problems
    for mount in mounts_named(claim.split(" runs ", maxsplit=1)[0], scenario):
        for node_id, mounts in picture.mounts.items():
            seen = mounts[mount.name]
            if seen.present and (not seen.answers or seen.serving != before.kv_version):
                problems.append(
                    f"{CLAIMS}: {claim!r}, yet {mount.name} on {node_id} "
                    f"answers {seen.answers} as {seen.serving!r} ({seen.problem})"
                )
    for name in CONNECTIONS:
        if f"connections/{name}" in claim:
            for node_id, pins in picture.pins.items():
                if pins.get(name) != DB_V1:
                    problems.append(
                        f"{CLAIMS}: {claim!r}, yet connection {name} on {node_id} "
                        f"is pinned to {pins.get(name)!r}"
                    )
    return problems


def _per_node_claim_problems(
    document: dict[str, Any], picture: Picture, scenario: Scenario
) -> list[str]:
    """Per-node states the JSON reports for a mount match the reads.

    Any object in the document naming a `mount` (or `path`) with a list of `nodes`,
    each naming a node by its API address and saying whether the mount `answers`
    there and what it is `running`, is such a claim; with a `state` of "rolled back"
    it also claims that every node runs its `target`.
    """
    problems: list[str] = []
    for claim in _objects_with_nodes(document):
        name_text = str(claim.get("mount") or claim.get("path") or "")
        if claim.get("namespace"):
            name_text += f" in namespace {claim['namespace']}"
        for mount in mounts_named(name_text, scenario):
            problems += _node_claims(claim, mount, picture)
    return problems


def _node_claims(claim: dict[str, Any], mount: Mount, picture: Picture) -> list[str]:
    problems: list[str] = []
    said = f"the output says {mount.name}"
    target = claim.get("target")
    target_version = target.get("version") if isinstance(target, dict) else None
    if claim.get("state") == "rolled back" and isinstance(target_version, str):
        for node_id, mounts in picture.mounts.items():
            seen = mounts[mount.name]
            if not seen.answers or seen.serving != target_version:
                problems.append(
                    f"{CLAIMS}: {said} is rolled back to {target_version}, yet on {node_id} "
                    f"it answers {seen.answers} as {seen.serving!r} ({seen.problem})"
                )
    for node_claim in claim.get("nodes") or []:
        if not isinstance(node_claim, dict):
            continue
        address = str(node_claim.get("node") or node_claim.get("address") or "").rstrip("/")
        node_id = _ADDRESS_TO_NODE.get(address, "")
        on_node = picture.mounts.get(node_id, {}).get(mount.name)
        if on_node is None:
            continue
        seen = on_node
        answers = node_claim.get("answers")
        if isinstance(answers, bool) and answers != seen.answers:
            problems.append(
                f"{CLAIMS}: {said} answers={answers} on {node_id}, "
                f"the node says {seen.answers} ({seen.problem})"
            )
        running = node_claim.get("running")
        version = running.get("version") if isinstance(running, dict) else None
        if isinstance(version, str) and answers and seen.answers and version != seen.serving:
            problems.append(
                f"{CLAIMS}: {said} runs {version} on {node_id}, its process says {seen.serving}"
            )
    return problems


def _objects_with_nodes(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if isinstance(value.get("nodes"), list) and ("path" in value or "mount" in value):
            found.append(value)
        for item in value.values():
            found += _objects_with_nodes(item)
    elif isinstance(value, list):
        for item in value:
            found += _objects_with_nodes(item)
    return found


# Filled by `remember_addresses` for the cluster in use: api address → node id.
_ADDRESS_TO_NODE: dict[str, str] = {}


def remember_addresses(cluster: Cluster) -> None:
    _ADDRESS_TO_NODE.clear()
    _ADDRESS_TO_NODE.update({node.address: node.node_id for node in cluster.nodes})


def settled(check: Callable[[], list[str]], seconds: float = SETTLE_SECONDS) -> list[str]:
    """The violations `check` still finds once the nodes had `seconds` to catch up."""
    problems = check()
    deadline = time.monotonic() + seconds
    while problems and time.monotonic() < deadline:
        time.sleep(0.5)
        problems = check()
    return problems


def parse_document(stdout: str) -> dict[str, Any] | None:
    try:
        document = json.loads(stdout)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
