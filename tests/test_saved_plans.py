"""A saved plan travels with its desired file, and a refusal says what changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import api, run_cli, write_desired

ONE_MOUNT = "version: 1\nsecrets:\n  - {path: app/, plugin: kv}\n"


def test_a_saved_plan_applies_from_another_directory(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "plans").mkdir(parents=True)
    write_desired(repo, ONE_MOUNT, name="desired.yaml")
    monkeypatch.chdir(repo)
    made = run_cli(server, "plan", "desired.yaml", "--out", "plans/plan.json")
    assert made.ok, made.output
    assert json.loads((repo / "plans/plan.json").read_text())["desired"]["path"] == (
        "../desired.yaml"
    )
    # Another job, another checkout, another working directory.
    checkout = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(repo, checkout)
    monkeypatch.chdir(tmp_path)
    applied = run_cli(server, "apply", "elsewhere/checkout/plans/plan.json", "--yes")
    assert applied.ok, applied.output
    assert "app/" in api(server).get("/v1/sys/mounts").json()["data"]


def test_a_missing_desired_file_is_named_with_where_it_was_looked_for(
    server, tmp_path: Path
) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    desired.unlink()
    refused = run_cli(server, "apply", str(saved), "--yes")
    assert refused.exit_code == 1
    assert f"{desired}, does not exist" in refused.stderr
    assert "cannot read the file" not in refused.stderr


def test_a_changed_desired_file_is_refused_with_the_command_to_run(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    desired.write_text(ONE_MOUNT + "  - {path: other/, plugin: kv}\n")
    refused = run_cli(server, "apply", str(saved), "--yes")
    assert refused.exit_code == 1
    assert "changed since the plan was made (its content's sha256 was" in refused.stderr
    assert f"reconciler plan {desired} --out {saved}" in refused.stderr
    assert "app/" not in api(server).get("/v1/sys/mounts").json()["data"]


def test_a_changed_plugin_binary_is_named(server, plugins: Path, tmp_path: Path) -> None:
    own_plugins = tmp_path / "plugins"
    own_plugins.mkdir()
    shutil.copy2(plugins / "demo-kv-1.0.0", own_plugins / "demo-kv-1.0.0")
    desired = write_desired(
        tmp_path,
        f"version: 1\nplugin_directory: {own_plugins}\nplugins:\n"
        "  - {type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}\n",
    )
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    with (own_plugins / "demo-kv-1.0.0").open("ab") as binary:
        binary.write(b"\n# rebuilt\n")
    refused = run_cli(server, "apply", str(saved), "--yes")
    assert refused.exit_code == 1
    assert "sha256" in refused.stderr and "a plugin binary changed" in refused.stderr
    assert "register secret/demo-kv/v1.0.0" in refused.stderr, refused.stderr
    entry = api(server).get("/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v1.0.0"})
    assert entry.status_code == 404, entry.text  # nothing was registered


def test_a_plan_for_another_server_says_so(server, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, ONE_MOUNT)
    saved = tmp_path / "plan.json"
    assert run_cli(server, "plan", str(desired), "--out", str(saved)).ok
    document = json.loads(saved.read_text())
    document["server"]["cluster_id"] = "another-cluster"
    saved.write_text(json.dumps(document))
    refused = run_cli(server, "apply", str(saved), "--yes")
    assert refused.exit_code == 1
    assert "made against another server" in refused.stderr
    assert "another-cluster" in refused.stderr
