"""Rollback to what ran (SPEC §12) on one server: mounts pinned ahead of the apply, and
an upgrade killed at each of its writes, then run again with its binary still broken."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.demo.devserver import DevServer
from reconciler.model import CatalogEntry, LiveMount, LiveNode, LiveState, NodeRunning
from reconciler.nodestate import NodeMount
from reconciler.rollback import Binary, Restore, restore_writes, what_ran
from tests.helpers import api, mount_entry, run_cli, tampered_copy, write_desired
from tests.test_apply_plugins import sha256_of
from tests.test_crash import _apply_killed_after

MOUNTS = ("a/", "b/", "c/")

DESIRED = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {v1}}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: {v2_command}, sha256: {v2}}}
secrets:
{mounts}
"""


@pytest.fixture
def broken(plugins: Path) -> Iterator[Path]:
    """v2's file with other bytes: the sha256 registered for v2 no longer matches it."""
    path = tampered_copy(plugins, "rollback-broken-kv-2.0.0")
    yield path
    path.unlink(missing_ok=True)


def _desired(tmp_path: Path, plugins: Path, version: str, v2_command: str) -> Path:
    text = DESIRED.format(
        v1=sha256_of(plugins / "demo-kv-1.0.0"),
        v2=sha256_of(plugins / "demo-kv-2.0.0"),
        v2_command=v2_command,
        mounts="".join(f"  - {{path: {m}, plugin: demo-kv, version: {version}}}\n" for m in MOUNTS),
    )
    return write_desired(tmp_path, text)


def _on_v1_with_data(server: DevServer, plugins: Path, tmp_path: Path, broken: Path) -> Path:
    """Every mount on v1 holding data; returns the upgrade file (v2 is `broken`)."""
    applied = run_cli(
        server, "apply", "--yes", str(_desired(tmp_path, plugins, "v1.0.0", broken.name))
    )
    assert applied.ok, applied.output
    for mount in MOUNTS:
        api(server).put(f"/v1/{mount}data/kept", json={"v": mount}).raise_for_status()
    return _desired(tmp_path, plugins, "v2.0.0", broken.name)


def _every_mount_runs_v1(server: DevServer, plugins: Path) -> None:
    """Pinned to v1, running v1's binary, answering from it, with its data."""
    v1_sha = sha256_of(plugins / "demo-kv-1.0.0")
    http = api(server)
    for mount in MOUNTS:
        entry = mount_entry(server, "secret", mount)
        assert (entry["plugin_version"], entry["running_sha256"]) == ("v1.0.0", v1_sha), mount
        # running_* can be stale after a failed reload: ask the code that answers.
        assert http.get(f"/v1/{mount}info").json()["data"]["version"] == "v1.0.0", mount
        assert http.get(f"/v1/{mount}data/kept").json()["data"]["v"] == mount


def test_mounts_pinned_ahead_by_hand_are_tuned_back_when_the_canary_dies(
    server: DevServer, plugins: Path, tmp_path: Path, broken: Path
) -> None:
    upgrade = _on_v1_with_data(server, plugins, tmp_path, broken)
    for mount in MOUNTS:
        api(server).post(
            f"/v1/sys/mounts/{mount}tune", json={"plugin_version": "v2.0.0"}
        ).raise_for_status()

    result = run_cli(server, "apply", "--yes", "--json", str(upgrade))

    assert result.exit_code == 1, result.output
    _every_mount_runs_v1(server, plugins)
    document = json.loads(result.stdout)
    states = {m["mount"]: m["state"] for m in document["rollback"]}
    assert states == {f"secrets/{m}": "rolled back" for m in MOUNTS}, document["rollback"]
    for mount in document["rollback"]:
        assert [(n["running"]["version"], n["answers"]) for n in mount["nodes"]] == [
            ("v1.0.0", True)
        ]


TWO_NAMESPACES = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {v1}}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: {v2_command}, sha256: {v2}}}
secrets:
  - {{path: a/, plugin: demo-kv, version: {version}}}
namespaces:
  team/:
    secrets:
      - {{path: a/, plugin: demo-kv, version: {version}}}
"""


def test_a_child_namespace_mount_pinned_ahead_is_tuned_back_in_its_namespace(
    server: DevServer, plugins: Path, tmp_path: Path, broken: Path
) -> None:
    # The same path at the root and in team/: two mounts, each restored where it lives.
    def desired(version: str) -> Path:
        return write_desired(
            tmp_path,
            TWO_NAMESPACES.format(
                v1=sha256_of(plugins / "demo-kv-1.0.0"),
                v2=sha256_of(plugins / "demo-kv-2.0.0"),
                v2_command=broken.name,
                version=version,
            ),
        )

    applied = run_cli(server, "apply", "--yes", str(desired("v1.0.0")))
    assert applied.ok, applied.output
    places = {"": api(server), "team/": api(server)}
    places["team/"].headers["X-Vault-Namespace"] = "team"
    for namespace, http in places.items():
        http.put("/v1/a/data/kept", json={"v": namespace}).raise_for_status()
        http.post("/v1/sys/mounts/a/tune", json={"plugin_version": "v2.0.0"}).raise_for_status()

    result = run_cli(server, "apply", "--yes", "--json", str(desired("v2.0.0")))

    assert result.exit_code == 1, result.output
    states = {m["mount"]: m["state"] for m in json.loads(result.stdout)["rollback"]}
    assert states == {
        "secrets/a/": "rolled back",
        "secrets/a/ in namespace team/": "rolled back",
    }, result.output
    v1_sha = sha256_of(plugins / "demo-kv-1.0.0")
    for namespace, http in places.items():
        entry = http.get("/v1/sys/mounts").json()["data"]["a/"]
        assert (entry["plugin_version"], entry["running_sha256"]) == ("v1.0.0", v1_sha), namespace
        assert http.get("/v1/a/info").json()["data"]["version"] == "v1.0.0", namespace
        assert http.get("/v1/a/data/kept").json()["data"]["v"] == namespace


@pytest.mark.parametrize("k", range(1, 4))
def test_an_upgrade_killed_at_write_k_and_run_again_still_broken_ends_on_what_ran(
    server: DevServer, plugins: Path, tmp_path: Path, broken: Path, k: int
) -> None:
    # The broken run writes the canary's tune (1), then the rollback's tune (2) and
    # reload (3); the server refuses the canary's reload (400: checksums did not match),
    # which leaves the canary without a backend and counts as no write.
    upgrade = _on_v1_with_data(server, plugins, tmp_path, broken)
    killed = _apply_killed_after(server, upgrade, k)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    again = run_cli(server, "apply", "--yes", str(upgrade))
    assert again.exit_code == 1, again.output
    assert "rolled back: secrets/a/" in again.stderr, again.output
    _every_mount_runs_v1(server, plugins)

    broken.write_bytes((plugins / "demo-kv-2.0.0").read_bytes())
    fixed = run_cli(server, "apply", "--yes", str(upgrade))
    assert fixed.exit_code == 0, fixed.output
    for mount in MOUNTS:
        assert api(server).get(f"/v1/{mount}info").json()["data"]["version"] == "v2.0.0"
    assert run_cli(server, "plan", "--detailed-exitcode", str(upgrade)).exit_code == 0


# --- what ran and the writes that restore it (pure: no server) -------------------------

V1 = Binary("v1.0.0", "1" * 64)
V2 = Binary("v2.0.0", "2" * 64)
FAILED = [("secret", "demo-kv", V2.version, V2.sha256)]


def _live(mounts: dict[str, tuple[str, Binary]], nodes: dict[str, dict[str, Binary]]) -> LiveState:
    """mounts: path → (pin, what the active's table says runs); nodes: address → path → ran."""
    return LiveState(
        catalog=[
            CatalogEntry(type="secret", name="demo-kv", version=b.version, sha256=b.sha256)
            for b in (V1, V2)
        ],
        mounts=[
            LiveMount(
                kind="secret",
                path=path,
                plugin="demo-kv",
                plugin_version=pin,
                running_plugin_version=ran.version,
                running_sha256=ran.sha256,
            )
            for path, (pin, ran) in mounts.items()
        ],
        nodes=[
            LiveNode(
                address=address,
                mounts=[
                    NodeRunning(
                        kind="secret",
                        path=path,
                        running_plugin_version=ran.version,
                        running_sha256=ran.sha256,
                    )
                    for path, ran in ran_by_path.items()
                ],
            )
            for address, ran_by_path in nodes.items()
        ],
    )


def test_a_mount_whose_table_names_the_failed_binary_goes_back_to_what_another_node_ran() -> None:
    live = _live({"a/": ("v2.0.0", V2)}, {"n1": {"a/": V2}, "n2": {"a/": V1}})
    assert [(r.path, r.target, r.why_not) for r in what_ran(live, FAILED, {""})] == [("a/", V1, "")]


def test_a_mount_that_ran_the_failed_binary_everywhere_goes_back_to_what_its_siblings_ran() -> None:
    live = _live({"a/": ("v2.0.0", V2), "b/": ("v1.0.0", V1), "c/": ("v2.0.0", V1)}, {})
    assert {r.path: r.target for r in what_ran(live, FAILED, {""})} == {
        "a/": V1,
        "b/": V1,
        "c/": V1,
    }


def test_mounts_of_namespaces_the_file_does_not_manage_are_left_alone() -> None:
    live = _live({"a/": ("v2.0.0", V1)}, {})
    theirs = live.mounts[0].model_copy(update={"namespace": "other/", "running_sha256": V2.sha256})
    live = live.model_copy(update={"elsewhere": [theirs], "namespaces": ["other/"]})
    assert [(r.namespace, r.path) for r in what_ran(live, FAILED, {""})] == [("", "a/")]
    managed = what_ran(live, FAILED, {"", "other/"})
    assert [(r.namespace, r.path) for r in managed] == [("", "a/"), ("other/", "a/")]


def test_a_version_gone_from_the_catalog_cannot_be_restored_and_says_why() -> None:
    live = _live({"a/": ("v2.0.0", V1)}, {})
    live = live.model_copy(update={"catalog": [e for e in live.catalog if e.version != "v1.0.0"]})
    (restore,) = what_ran(live, FAILED, {""})
    assert restore.why_not and "gone from the catalog" in restore.why_not


def _seen(ran: Binary, answers: bool = True) -> NodeMount:
    return NodeMount("n", False, "", "", "", ran.version, ran.sha256, answers, "")


def test_only_what_is_not_in_place_is_written() -> None:
    restores = [Restore("", "secret", p, "demo-kv", V1) for p in ("a/", "b/", "c/")]
    pins = {
        ("", "secret", "a/"): "v1.0.0",
        ("", "secret", "b/"): "v2.0.0",
        ("", "secret", "c/"): "v1.0.0",
    }
    seen = {
        "n1": {("", "secret", p): _seen(V1) for p in ("a/", "b/", "c/")},
        "n2": {
            ("", "secret", "a/"): _seen(V1),
            ("", "secret", "b/"): _seen(V1),
            ("", "secret", "c/"): _seen(V1, answers=False),
        },
    }
    writes = restore_writes(restores, pins, seen)
    # a/ is in place; b/ is pinned ahead but runs v1 everywhere: its pin only; c/ is dead
    # on one node: a reload, and no tune.
    assert [(r.path, v) for r, v in writes.tunes] == [("b/", "v1.0.0")]
    assert [r.path for r in writes.reloads] == ["c/"]
