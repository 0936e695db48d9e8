"""The one reconcile pass, driven directly against the real server, and its three callers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reconciler.reconcile as reconcile_module
from reconciler.client import Client
from reconciler.demo._run import _Demo, _Narrator
from reconciler.demo.devserver import DevServer
from reconciler.errors import PlanFileError
from reconciler.executor import ApplyOptions, ProgressEvent
from reconciler.loader import load_desired
from reconciler.plan import ActionKind, Plan
from reconciler.reconcile import PassHooks, PassInput, Verdict, load_target, run_pass
from reconciler.watch import Watcher, WatchOptions
from tests.helpers import RequestLog, api, mount_config, mount_entry, run_cli, write_desired

DESIRED = """\
version: 1
settings:
  prune_mounts: {prune}
secrets:
  - path: app/
    plugin: kv
    config: {{default_lease_ttl: {ttl}}}
"""


def desired(ttl: str = "1h", prune: bool = False) -> str:
    return DESIRED.format(ttl=ttl, prune=str(prune).lower())


@pytest.fixture
def client(server: DevServer) -> Iterator[Client]:
    with Client(server.address, server.token) as client:
        yield client


def target(tmp_path: Path, text: str) -> PassInput:
    return PassInput(load_desired(write_desired(tmp_path, text)))


def test_a_pass_applies_verifies_and_reports_typed_actions(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    seen_plans: list[Plan] = []
    events: list[ProgressEvent] = []
    hooks = PassHooks(on_plan=seen_plans.append, progress=events.append)

    result = run_pass(client, target(tmp_path, desired("1h")), hooks=hooks)

    assert result.verdict is Verdict.CONVERGED and result.converged
    assert [(a.kind, a.target) for a in result.applied] == [(ActionKind.ENABLE, "secrets/app/")]
    assert result.address == server.address and result.writes >= 1
    assert seen_plans == [result.plan]
    assert mount_config(server, "secret", "app/")["default_lease_ttl"] == 3600
    assert [e.status for e in events if e.action is not None] == ["start", "done"]
    assert any(e.action is None for e in events), "verification reported"

    with RequestLog(server) as requests:
        again = run_pass(client, target(tmp_path, desired("1h")))
    assert again.converged and again.applied == () and requests.writes() == []


def test_plan_errors_stop_the_pass_before_any_write(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    # Valid as a file, impossible on this server: a move cannot change the plugin.
    api(server).post("/v1/sys/mounts/old", json={"type": "kv"})
    text = desired() + "  - path: moved/\n    plugin: transit\n    moved_from: old/\n"
    never = PassHooks(confirm=lambda *_: pytest.fail("nothing to confirm"))
    with RequestLog(server) as requests:
        result = run_pass(client, target(tmp_path, text), hooks=never)
    assert result.verdict is Verdict.PLAN_ERRORS and not result.converged
    assert result.problems() and requests.writes() == []


def test_refusal_and_skipping_are_decided_by_the_pass(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    api(server).post("/v1/sys/mounts/stray", json={"type": "kv"})
    pruning = desired("1h", prune=True)

    with RequestLog(server) as requests:
        refused = run_pass(client, target(tmp_path, pruning))
    assert refused.verdict is Verdict.REFUSED and requests.writes() == []
    assert [str(r) for r in refused.refused] == [
        "disable secrets/stray/: destructive: needs --allow-destroy"
    ]

    skipping = run_pass(client, target(tmp_path, pruning), ApplyOptions(skip_refused=True))
    assert skipping.converged, skipping.problems()
    assert [a.target for a in skipping.applied] == ["secrets/app/"]
    assert mount_entry(server, "secret", "stray/")["type"] == "kv", "the refused one was skipped"

    allowed = run_pass(client, target(tmp_path, pruning), ApplyOptions(allow_destroy=True))
    assert allowed.converged and [a.kind for a in allowed.applied] == [ActionKind.DISABLE]
    with pytest.raises(KeyError):
        mount_entry(server, "secret", "stray/")


def test_a_declined_confirmation_changes_nothing(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    asked: list[str] = []

    def decline(_plan: Plan, address: str) -> bool:
        asked.append(address)
        return False

    with RequestLog(server) as requests:
        result = run_pass(client, target(tmp_path, desired()), hooks=PassHooks(confirm=decline))
    assert result.verdict is Verdict.DECLINED and asked == [server.address]
    assert requests.writes() == []


def test_a_saved_plan_is_remade_and_applied(
    server: DevServer, client: Client, tmp_path: Path
) -> None:
    path = write_desired(tmp_path, desired("2h"))
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(path), "--out", str(saved)).ok
    loaded = load_target(saved)
    assert loaded.saved is not None and loaded.loaded.path == path
    with pytest.raises(PlanFileError, match="--replace"):
        run_pass(client, loaded, ApplyOptions(replace=(("secret", "kv", ""),)))
    assert run_pass(client, loaded).converged
    assert mount_config(server, "secret", "app/")["default_lease_ttl"] == 7200


# --- apply, watch and demo all go through run_pass ------------------------------------------


@pytest.fixture
def pass_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = reconcile_module.run_pass

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls.append(result)
        return result

    monkeypatch.setattr(reconcile_module, "run_pass", spy)
    return calls


def test_apply_watch_and_demo_call_the_same_pass(
    server: DevServer, tmp_path: Path, pass_calls: list[Any]
) -> None:
    path = write_desired(tmp_path, desired("1h"))
    assert run_cli(server, "apply", str(path), "--yes").ok
    assert len(pass_calls) == 1 and pass_calls[-1].applied

    path.write_text(desired("2h"))
    watcher = Watcher(
        path, lambda: Client(server.address, server.token), WatchOptions(interval=60.0)
    )
    assert watcher.run_pass().ok
    assert len(pass_calls) == 2 and pass_calls[-1].applied

    lines: list[str] = []
    demo = _Demo(_Narrator(lines.append, colour=False), upgrade=False, colour=False, workdir=None)
    demo.server, demo.workdir = server, tmp_path
    (tmp_path / "demo.yaml").write_text(desired("3h"))
    try:
        demo._apply("demo.yaml")
    finally:
        demo._client().close()
    assert len(pass_calls) == 3 and pass_calls[-1].applied
    assert any("done" in line for line in lines)
    assert mount_config(server, "secret", "app/")["default_lease_ttl"] == 3 * 3600
