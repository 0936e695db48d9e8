"""`reconciler status` on the real 3-node cluster and on one dev server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from reconciler.demo.devserver import DevServer
from tests.cluster import Cluster
from tests.helpers import CliRun, run_cli, write_desired

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas/status.schema.json").read_text())


def desired_v1(cluster: Cluster, tmp_path: Path, *paths: str) -> Path:
    plugin = cluster.plugins[("demo-kv", "v1.0.0")]
    mounts = "".join(f"  - {{path: {p}/, plugin: demo-kv, version: v1.0.0}}\n" for p in paths)
    return write_desired(
        tmp_path,
        "version: 1\nsettings: {reload_scope: global}\nplugins:\n"
        f"  - {{type: secret, name: demo-kv, version: v1.0.0, command: {plugin.command}, "
        f"sha256: {plugin.sha256}}}\nsecrets:\n{mounts}",
    )


def cli_on(cluster: Cluster, *args: str) -> Any:
    env = {"BAO_ADDR": cluster.active().address, "BAO_TOKEN": cluster.root_token}
    return CliRun.invoke(args, env=env)


def test_status_json_names_every_node_and_validates(cluster: Cluster, tmp_path: Path) -> None:
    applied = cli_on(cluster, "apply", "--yes", str(desired_v1(cluster, tmp_path, "kv1")))
    assert applied.ok, applied.output
    cluster.wait_replicated()
    result = cli_on(cluster, "status", "--json")
    assert result.ok, result.output
    document = json.loads(result.stdout)
    Draft202012Validator(SCHEMA).validate(document)
    assert sorted(n["address"] for n in document["nodes"]) == sorted(
        n.address for n in cluster.nodes
    )
    assert document["nodes"][0]["address"] == cluster.active().address
    (mount,) = document["mounts"]
    assert (mount["path"], mount["version"]) == ("kv1/", "v1.0.0")
    sha = cluster.plugins[("demo-kv", "v1.0.0")].sha256
    for seen in mount["nodes"]:
        assert seen["catalog"]["sha256"] == sha
        assert (seen["running"]["version"], seen["running"]["sha256"]) == ("v1.0.0", sha)
        assert seen["answers"], seen


def test_status_on_one_server_is_one_node(server: DevServer, plugins: Path) -> None:
    result = run_cli(server, "status", "--json")
    assert result.ok, result.output
    document = json.loads(result.stdout)
    Draft202012Validator(SCHEMA).validate(document)
    assert document["nodes"] == [{"address": server.address, "active": True}]
    text = run_cli(server, "status")
    assert text.ok and "1 node(s)" in text.stdout
