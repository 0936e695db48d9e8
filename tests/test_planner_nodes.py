"""The planner on a cluster, from every node's own tables: one canary per new binary
for every namespace the file manages, per-node drift in each namespace, and a move a
standby's table did not follow.

A reload that fails on one node can restart that node's core, which mounts every
entry of every namespace again: a child namespace's mount already pinned to the new
version would die there too. So its pin waits for the canary, wherever that is.
"""

from __future__ import annotations

from reconciler.model import (
    CatalogEntry,
    DesiredState,
    LiveMount,
    LiveNode,
    LiveState,
    NodeRunning,
)
from reconciler.plan import ReloadAction, TuneAction
from reconciler.planner import plan
from reconciler.policy import write_needs

V1, V2 = "1" * 64, "2" * 64
CATALOG = [
    CatalogEntry(type="secret", name="kv-plus", version="v1.0.0", command="kv-plus", sha256=V1),
    CatalogEntry(type="secret", name="kv-plus", version="v2.0.0", command="kv-plus-2", sha256=V2),
]


def _desired(version: str) -> DesiredState:
    mount = {"path": "a/", "plugin": "kv-plus", "version": version}
    return DesiredState.model_validate(
        {
            "version": 1,
            "plugins": [
                {
                    "type": "secret",
                    "name": "kv-plus",
                    "version": "v1.0.0",
                    "sha256": V1,
                    "command": "kv-plus",
                },
                {
                    "type": "secret",
                    "name": "kv-plus",
                    "version": "v2.0.0",
                    "sha256": V2,
                    "command": "kv-plus-2",
                },
            ],
            "secrets": [mount],
            "namespaces": {"team/": {"secrets": [mount]}},
        }
    )


def _mount(namespace: str, version: str, sha: str) -> LiveMount:
    return LiveMount(
        kind="secret",
        path="a/",
        plugin="kv-plus",
        plugin_version=version,
        running_plugin_version=version,
        running_sha256=sha,
        backend_answers=True,
        namespace=namespace,
    )


def _node(address: str, *, active: bool, team_answers: bool = True) -> LiveNode:
    return LiveNode(
        address=address,
        active=active,
        mounts=[
            NodeRunning(
                kind="secret",
                path="a/",
                running_plugin_version="v1.0.0",
                running_sha256=V1,
                namespace=namespace,
                answers=team_answers if namespace else True,
            )
            for namespace in ("", "team/")
        ],
    )


def _live(*, team_answers_on_standby: bool = True) -> LiveState:
    return LiveState(
        catalog=CATALOG,
        mounts=[_mount("", "v1.0.0", V1)],
        namespaces=["team/"],
        elsewhere=[_mount("team/", "v1.0.0", V1)],
        nodes=[
            _node("http://node1:8200", active=True),
            _node("http://node2:8200", active=False, team_answers=team_answers_on_standby),
        ],
    )


def test_one_mount_per_namespace_onto_a_new_binary_still_gets_a_canary() -> None:
    the_plan = plan(_desired("v2.0.0"), _live())
    steps = [f"{a.kind} {a.target}" for a in the_plan.actions]
    assert steps == [
        "tune secrets/a/",
        "reload mounts a/",
        "tune secrets/a/ in namespace team/",
        "reload mounts a/ in namespace team/",
    ]
    canary, rest = (a for a in the_plan.actions if isinstance(a, ReloadAction))
    assert canary.canary and canary.namespace == ""
    assert "before a/ in namespace team/ move" in canary.reason
    assert not rest.canary and rest.params.namespace == "team/"
    assert "once the canary a/ works" in rest.reason


def test_the_child_namespace_pin_waits_for_the_root_canary() -> None:
    the_plan = plan(_desired("v2.0.0"), _live())
    order = {(type(a).__name__, a.namespace): index for index, a in enumerate(the_plan.actions)}
    assert order[("TuneAction", "team/")] > order[("ReloadAction", "")]
    tunes = [a for a in the_plan.actions if isinstance(a, TuneAction)]
    assert {t.namespace for t in tunes} == {"", "team/"}


def test_a_child_namespace_mount_dead_on_one_node_is_reloaded_there_only() -> None:
    # Same path in both namespaces: only the child namespace's mount is dead, on node2.
    the_plan = plan(_desired("v1.0.0"), _live(team_answers_on_standby=False))
    (reload,) = the_plan.actions
    assert isinstance(reload, ReloadAction)
    assert reload.target == "mounts a/ on node http://node2:8200 in namespace team/"
    assert reload.params.node == "http://node2:8200"
    assert reload.params.namespace == "team/"
    assert reload.params.mounts == ["a/"]
    assert "does not answer there" in reload.reason


def test_a_settled_cluster_of_two_namespaces_plans_nothing() -> None:
    assert plan(_desired("v1.0.0"), _live()).actions == []


def test_a_move_a_standby_did_not_follow_is_an_error_naming_the_node_and_the_fix() -> None:
    # OpenBao 2.7: after sys/remount the standby's table keeps the old path (same accessor).
    moved = _mount("", "v1.0.0", V1).model_copy(update={"path": "b/", "accessor": "kv_1"})
    live = _live().model_copy(update={"mounts": [moved], "elsewhere": [], "namespaces": []})
    standby = live.nodes[1].model_copy(
        update={
            "mounts": [
                NodeRunning(
                    kind="secret",
                    path="a/",
                    running_plugin_version="v1.0.0",
                    running_sha256=V1,
                    accessor="kv_1",
                    answers=True,
                )
            ]
        }
    )
    active = live.nodes[0].model_copy(
        update={"mounts": [NodeRunning(kind="secret", path="b/", accessor="kv_1")]}
    )
    live = live.model_copy(update={"nodes": [active, standby]})
    desired = DesiredState.model_validate(
        {
            "version": 1,
            "plugins": _desired("v1.0.0").model_dump()["plugins"],
            "secrets": [{"path": "b/", "plugin": "kv-plus", "version": "v1.0.0"}],
        }
    )
    the_plan = plan(desired, live)
    (error,) = the_plan.errors
    assert error.target == "secrets/b/"
    assert "node http://node2:8200's mount table did not follow the move" in error.message
    assert "still has this mount at a/" in error.message
    assert "seal and unseal that node" in error.message
    # Undeclared, the same mount is a warning: it does not stop the file's apply.
    undeclared = desired.model_copy(update={"secrets": []})
    assert not plan(undeclared, live).errors
    assert any("did not follow the move" in w.message for w in plan(undeclared, live).warnings)


def test_a_move_planned_on_a_cluster_warns_that_standbys_need_unsealing() -> None:
    live = _live().model_copy(update={"elsewhere": [], "namespaces": []})
    desired = DesiredState.model_validate(
        {
            "version": 1,
            "plugins": _desired("v1.0.0").model_dump()["plugins"],
            "secrets": [
                {"path": "b/", "plugin": "kv-plus", "version": "v1.0.0", "moved_from": "a/"}
            ],
        }
    )
    the_plan = plan(desired, live)
    assert [f"{a.kind} {a.target}" for a in the_plan.actions] == ["move secrets/b/"]
    (warning,) = [w for w in the_plan.warnings if w.target == "secrets/b/"]
    assert "standbys keep the mount at a/" in warning.message
    assert "sealed and unsealed again or restarted" in warning.message
    # One server: nothing to warn about.
    single = plan(desired, live.model_copy(update={"nodes": []}))
    assert not [w for w in single.warnings if w.target == "secrets/b/"]


def test_a_node_reload_in_a_child_namespace_needs_reload_there() -> None:
    # The reload is sent to the node in the mount's namespace: the capability check asks
    # about that namespace's endpoint, as the generated policy grants it.
    the_plan = plan(_desired("v1.0.0"), _live(team_answers_on_standby=False))
    (need,) = write_needs(the_plan.actions, "")
    assert need.path == "team/sys/plugins/reload/backend"
