"""The command line's contract: exit codes and `--json` documents, whatever happens.

Every `--json` output below (and in the whole suite) is also checked against its committed
schema by `tests.helpers.check_json_output`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.documents import apply_schema_text, error_schema_text, status_schema_text
from tests.helpers import SCHEMAS_DIR, CliRun, api, run_cli, write_desired

ONE_MOUNT = "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("apply.schema.json", apply_schema_text),
        ("error.schema.json", error_schema_text),
        ("status.schema.json", status_schema_text),
    ],
)
def test_committed_document_schemas_are_up_to_date(name: str, text: object) -> None:
    assert callable(text)
    assert (SCHEMAS_DIR / name).read_text() == text(), (
        f"schemas/{name} is stale: regenerate it with `make schema`"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--detailed-exitcode", "missing.yaml"),
        ("plan", "--detailed-exitcode", "--adress", "http://x", "FILE"),
        ("plan", "--detailed-exitcode"),
        ("plan", "--detailed-exitcode", "--max-file-size", "many", "FILE"),
        ("no-such-command",),
        (),
    ],
)
def test_usage_errors_exit_1_never_2(args: tuple[str, ...], tmp_path: Path) -> None:
    # 2 is what `plan --detailed-exitcode` answers for "there are changes": a CI job
    # must never read a typo as a diff.
    desired = write_desired(tmp_path, ONE_MOUNT)
    argv = [str(desired) if arg == "FILE" else arg for arg in args]
    result = CliRun.invoke(argv)
    assert result.exit_code == 1, result.output


def test_usage_error_with_json_prints_an_error_document(tmp_path: Path) -> None:
    result = CliRun.invoke(["plan", "--json", "--adress", "http://x", "missing.yaml"])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "usage"
    assert "--address" in document["error"]  # the suggestion survives


def test_plan_json_on_a_file_that_fails_to_load_prints_an_error_document(
    tmp_path: Path,
) -> None:
    desired = write_desired(tmp_path, "version: 1\nsecrets:\n  - {path: app/}\n")
    result = CliRun.invoke(["plan", "--json", str(desired)])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "desired-state"
    assert [(p["line"], p["column"]) for p in document["problems"]] == [(3, 5)]
    assert "plugin" in document["problems"][0]["message"]


def test_plan_json_without_a_server_prints_an_error_document(tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    result = CliRun.invoke(["plan", "--json", str(desired)])  # no address anywhere
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["kind"] in {"server", "other"}


def test_apply_json_with_nothing_to_do_has_every_key(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    assert run_cli(server, "apply", str(desired), "--yes").ok
    result = run_cli(server, "apply", str(desired), "--yes", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["verdict"] == "converged" and document["converged"] is True
    assert document["plan"]["actions"] == [] and document["applied"] == []
    assert document["writes"] == 0


def test_apply_json_prints_plan_and_result(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    result = run_cli(server, "apply", str(desired), "--yes", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [a["kind"] for a in document["plan"]["actions"]] == ["enable"]
    assert document["applied"] == [{"kind": "enable", "target": "secrets/app/"}]
    assert api(server).get("/v1/sys/mounts").json()["data"]["app/"]["type"] == "kv"


def test_apply_json_refused_prints_the_same_document(server, tmp_path: Path) -> None:
    api(server).post("/v1/sys/mounts/extra", json={"type": "kv"}).raise_for_status()
    desired = write_desired(tmp_path, "version: 1\nsettings: {prune_mounts: true}\nsecrets: []\n")
    result = run_cli(server, "apply", str(desired), "--yes", "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["verdict"] == "refused" and document["writes"] == 0
    assert document["skipped"] == [{"kind": "disable", "target": "secrets/extra/"}]
    assert "extra/" in api(server).get("/v1/sys/mounts").json()["data"]


def test_apply_json_plan_errors_print_the_same_document(server, tmp_path: Path) -> None:
    desired = write_desired(
        tmp_path,
        f"version: 1\nplugins:\n  - {{type: secret, name: kv, version: v9.0.0, "
        f"sha256: {'a' * 64}}}\n"
        "secrets:\n  - {path: app/, plugin: kv, version: v9.0.0}\n",
    )
    result = run_cli(server, "apply", str(desired), "--yes", "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["verdict"] == "plan-errors" and document["plan"]["errors"]
