"""`--target NAME`: the address comes from a small targets file (real dev server)."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.demo.devserver import DevServer
from tests.helpers import CliRun, write_desired


def test_status_and_plan_reach_the_server_the_target_names(
    server: DevServer, tmp_path: Path
) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  dev:\n    address: {server.address}\n")
    env = {"BAO_TOKEN": server.token, "BAO_ADDR": "http://127.0.0.1:1"}
    status = CliRun.invoke(["status", "--json", "--target", "dev", "--targets", str(targets)], env)
    assert status.ok, status.output
    assert json.loads(status.stdout)["server"] == server.address
    file = write_desired(tmp_path, "version: 1\n")
    plan = CliRun.invoke(["plan", "--target", "dev", "--targets", str(targets), str(file)], env)
    assert plan.ok, plan.output


def test_an_unknown_target_names_the_known_ones(server: DevServer, tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  dev:\n    address: {server.address}\n")
    result = CliRun.invoke(
        ["status", "--target", "prod", "--targets", str(targets)], {"BAO_TOKEN": server.token}
    )
    assert result.exit_code == 1
    assert "no target 'prod'" in result.stderr and "dev" in result.stderr


def test_apply_takes_its_server_from_the_target(server: DevServer, tmp_path: Path) -> None:
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"targets:\n  dev:\n    address: {server.address}\n")
    file = write_desired(tmp_path, "version: 1\n")
    env = {"BAO_TOKEN": server.token}
    result = CliRun.invoke(
        ["apply", "--yes", "--target", "dev", "--targets", str(targets), str(file)], env
    )
    assert result.ok, result.output
