"""The refusals of a plan: `max_destroy` bounds the whole plan, whatever the namespaces."""

from __future__ import annotations

from reconciler.plan import Action, Plan, ReasonCode, parse_action


def _disable(path: str, namespace: str | None) -> Action:
    params: dict[str, object] = {"kind": "secret", "path": path}
    if namespace is not None:
        params["namespace"] = namespace
    return parse_action(
        {
            "kind": "disable",
            "target": f"secrets/{path}",
            "reason": "not declared and prune_mounts is on",
            "reason_code": ReasonCode.UNMANAGED_MOUNT_PRUNED,
            "params": params,
        }
    )


def test_max_destroy_counts_every_namespace_together() -> None:
    # Two per namespace, three namespaces: six in all, above a limit of two.
    actions = [
        _disable(f"{where or 'root'}-{i}/", where)
        for where in (None, "team1/", "team2/")
        for i in range(2)
    ]
    the_plan = Plan.model_validate({"actions": actions, "max_destroy": 2})
    refusals = the_plan.refusals(allow_destroy=True)
    assert sorted(refusals) == list(range(6))
    assert all("6 destructive actions exceed max_destroy=2" in why for why in refusals.values())


def test_max_destroy_allows_up_to_the_limit_with_allow_destroy() -> None:
    actions = [_disable("a/", None), _disable("b/", "team1/")]
    the_plan = Plan.model_validate({"actions": actions, "max_destroy": 2})
    assert the_plan.refusals(allow_destroy=True) == {}
    assert set(the_plan.refusals(allow_destroy=False)) == {0, 1}
