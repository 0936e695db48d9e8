"""plan/apply end to end with real external plugins: upgrades, drift, overrides, rollback."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from reconciler.demo.devserver import DevServer
from tests.helpers import RequestLog, api, mount_entry, run_cli, tampered_copy, write_desired

V1_TWO_MOUNTS_AND_AUTH = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
  - {{type: auth, name: demo-auth, version: v1.0.0, command: demo-auth-1.0.0}}
secrets:
  - {{path: demo/, plugin: demo-kv}}
  - {{path: apps/, plugin: demo-kv, config: {{default_lease_ttl: 1h}}}}
auth:
  - {{path: login/, plugin: demo-auth}}
"""

UPGRADED = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, state: absent}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}}
  - {{type: auth, name: demo-auth, version: v1.0.0, command: demo-auth-1.0.0}}
secrets:
  - {{path: demo/, plugin: demo-kv}}
  - {{path: apps/, plugin: demo-kv, config: {{default_lease_ttl: 1h}}}}
auth:
  - {{path: login/, plugin: demo-auth}}
"""


def info(server: DevServer, mount: str) -> dict[str, Any]:
    response = api(server).get(f"/v1/{mount}info")
    response.raise_for_status()
    return dict(response.json()["data"])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fresh_server_register_enable_write_read_then_noop(server, plugins, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, V1_TWO_MOUNTS_AND_AUTH.format(plugins=plugins))
    result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 0, result.output
    assert "2 to register, 3 to enable" in result.stdout

    http = api(server)
    http.put("/v1/demo/data/hello", json={"greeting": "hi"}).raise_for_status()
    assert http.get("/v1/demo/data/hello").json()["data"]["greeting"] == "hi"
    assert info(server, "apps/")["version"] == "v1.0.0"
    http.put("/v1/auth/login/config", json={"secret": "s3cret"}).raise_for_status()
    login = http.put("/v1/auth/login/login", json={"secret": "s3cret"}).json()
    assert login["auth"]["client_token"]

    with RequestLog(server) as requests:
        again = run_cli(server, "apply", str(desired), "--yes")
    assert again.exit_code == 0, again.output
    assert requests.writes() == []


def test_upgrade_registers_tunes_reloads_canary_then_rest_and_keeps_data(
    server, plugins, tmp_path: Path
) -> None:
    # `other/` stays on v1 across the upgrade: an unrelated mount must not be reloaded.
    other = "  - {path: other/, plugin: demo-kv, version: v1.0.0}\nauth:\n"
    first = write_desired(
        tmp_path, V1_TWO_MOUNTS_AND_AUTH.format(plugins=plugins).replace("auth:\n", other)
    )
    assert run_cli(server, "apply", str(first), "--yes").ok
    http = api(server)
    http.put("/v1/demo/data/kept", json={"value": "before upgrade"}).raise_for_status()
    before_other = info(server, "other/")
    before_demo = info(server, "demo/")

    upgraded = write_desired(
        tmp_path,
        f"""\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}}
  - {{type: auth, name: demo-auth, version: v1.0.0, command: demo-auth-1.0.0}}
secrets:
  - {{path: demo/, plugin: demo-kv, version: v2.0.0}}
  - {{path: apps/, plugin: demo-kv, version: v2.0.0, config: {{default_lease_ttl: 1h}}}}
  - {{path: other/, plugin: demo-kv, version: v1.0.0}}
auth:
  - {{path: login/, plugin: demo-auth}}
""",
    )
    plan = run_cli(server, "plan", str(upgraded))
    # Two mounts onto v2.0.0: a canary reload, then the other.
    assert "1 to register, 2 to tune, 2 to reload" in plan.stdout, plan.output
    with RequestLog(server) as requests:
        result = run_cli(server, "apply", str(upgraded), "--yes")
    assert result.exit_code == 0, result.output
    assert len(requests.matching("PUT", "/sys/plugins/catalog/")) == 1
    assert len(requests.matching("POST", "/tune")) == 2
    assert len(requests.matching("POST", "/sys/plugins/reload/backend")) == 2

    v2_sha = sha256_of(plugins / "demo-kv-2.0.0")
    for path in ("demo/", "apps/"):
        entry = mount_entry(server, "secret", path)
        assert entry["running_plugin_version"] == "v2.0.0"
        assert entry["running_sha256"] == v2_sha
    assert http.get("/v1/demo/data/kept").json()["data"]["value"] == "before upgrade"
    assert info(server, "demo/")["engine"] == "demo-kv v2"
    assert info(server, "demo/")["pid"] != before_demo["pid"]
    assert info(server, "other/")["pid"] == before_other["pid"]
    assert info(server, "other/")["started_unix"] == before_other["started_unix"]


def test_upgrade_with_absent_old_version_deregisters_after_verification(
    server, plugins, tmp_path: Path
) -> None:
    assert run_cli(
        server,
        "apply",
        str(write_desired(tmp_path, V1_TWO_MOUNTS_AND_AUTH.format(plugins=plugins))),
        "--yes",
    ).ok
    with RequestLog(server) as requests:
        result = run_cli(
            server, "apply", str(write_desired(tmp_path, UPGRADED.format(plugins=plugins))), "--yes"
        )
    assert result.exit_code == 0, result.output
    # After the last reload, the mounts are read back (verification) before the old
    # version is deregistered.
    sent = requests.requests
    last_reload = max(
        i for i, r in enumerate(sent) if r == ("POST", "/v1/sys/plugins/reload/backend")
    )
    deregistration = sent.index(("DELETE", "/v1/sys/plugins/catalog/secret/demo-kv"))
    assert ("GET", "/v1/sys/mounts") in sent[last_reload:deregistration], sent
    catalog = api(server).get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    versions = sorted(e["version"] for e in catalog if e["name"] == "demo-kv")
    assert versions == ["v2.0.0"]
    assert mount_entry(server, "secret", "demo/")["running_plugin_version"] == "v2.0.0"


def test_out_of_band_reregister_shows_a_reload(server, plugins, tmp_path: Path) -> None:
    own_plugins = tmp_path / "plugins"
    own_plugins.mkdir()
    desired_text = (
        "version: 1\nplugin_directory: {dir}\nplugins:\n"
        "  - {{type: secret, name: demo-kv, version: v1.0.0, command: drifting-kv}}\n"
        "secrets:\n  - {{path: drift/, plugin: demo-kv}}\n"
    )
    shutil.copy2(plugins / "demo-kv-1.0.0", plugins / "drifting-kv")
    shutil.copy2(plugins / "drifting-kv", own_plugins / "drifting-kv")
    assert run_cli(
        server, "apply", str(write_desired(tmp_path, desired_text.format(dir=own_plugins))), "--yes"
    ).ok
    # Someone rebuilds the binary and re-registers it by hand, without a reload.
    with (plugins / "drifting-kv").open("a") as binary:
        binary.write("\n# rebuilt\n")
    shutil.copy2(plugins / "drifting-kv", own_plugins / "drifting-kv")
    new_sha = sha256_of(plugins / "drifting-kv")
    api(server).put(
        "/v1/sys/plugins/catalog/secret/demo-kv",
        json={"sha256": new_sha, "command": "drifting-kv", "version": "v1.0.0"},
    ).raise_for_status()

    plan = run_cli(
        server,
        "plan",
        str(write_desired(tmp_path, desired_text.format(dir=own_plugins))),
        "--detailed-exitcode",
    )
    assert plan.exit_code == 2, plan.output
    assert "↻ reload mounts drift/" in plan.stdout
    assert "+ register" not in plan.stdout and "~ update" not in plan.stdout
    applied = run_cli(
        server, "apply", str(write_desired(tmp_path, desired_text.format(dir=own_plugins))), "--yes"
    )
    assert applied.exit_code == 0, applied.output
    assert mount_entry(server, "secret", "drift/")["running_sha256"] == new_sha


OVERRIDE = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: transit, version: v1.0.0, command: transit-1.0.0{state}}}
secrets:
  - {{path: crypto/, plugin: transit{version}}}
"""


def test_override_a_builtin_and_revert_keeps_the_builtins_data(
    server, plugins, tmp_path: Path
) -> None:
    http = api(server)
    http.post("/v1/sys/mounts/crypto", json={"type": "transit"}).raise_for_status()
    http.post("/v1/crypto/keys/orders").raise_for_status()

    override = write_desired(tmp_path, OVERRIDE.format(plugins=plugins, state="", version=""))
    plan = run_cli(server, "plan", str(override))
    assert "overrides the built-in secret plugin 'transit'" in plan.stdout, plan.output
    result = run_cli(server, "apply", str(override), "--yes")
    assert result.exit_code == 0, result.output
    assert info(server, "crypto/")["engine"] == "external transit"

    revert = write_desired(
        tmp_path, OVERRIDE.format(plugins=plugins, state=", state: absent", version="")
    )
    plan = run_cli(server, "plan", str(revert))
    assert "~ tune secrets/crypto/" in plan.stdout, plan.output
    assert "- deregister secret/transit/v1.0.0" in plan.stdout
    result = run_cli(server, "apply", str(revert), "--yes")
    assert result.exit_code == 0, result.output
    entry = mount_entry(server, "secret", "crypto/")
    assert entry["running_sha256"] == ""
    assert "+builtin" in entry["running_plugin_version"]
    assert http.get("/v1/crypto/keys/orders").json()["data"]["name"] == "orders"
    catalog = http.get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    assert [e for e in catalog if e["name"] == "transit"] == [
        e for e in catalog if e["name"] == "transit" and e["builtin"]
    ]


def test_new_builtin_mount_gets_the_builtin_even_with_an_override_registered(
    server, plugins, tmp_path: Path
) -> None:
    api(server).put(
        "/v1/sys/plugins/catalog/secret/transit",
        json={
            "sha256": sha256_of(plugins / "transit-1.0.0"),
            "command": "transit-1.0.0",
            "version": "v1.0.0",
        },
    ).raise_for_status()
    desired = write_desired(tmp_path, "version: 1\nsecrets:\n  - {path: plain/, plugin: transit}\n")
    result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 0, result.output
    assert "plugin_version: v2" in result.stdout
    entry = mount_entry(server, "secret", "plain/")
    assert entry["running_sha256"] == ""
    assert "+builtin" in entry["running_plugin_version"]


def test_deregistering_an_entry_in_use_is_refused(server, plugins, tmp_path: Path) -> None:
    http = api(server)
    http.put(
        "/v1/sys/plugins/catalog/secret/demo-kv",
        json={
            "sha256": sha256_of(plugins / "demo-kv-1.0.0"),
            "command": "demo-kv-1.0.0",
            "version": "v1.0.0",
        },
    ).raise_for_status()
    http.post(
        "/v1/sys/mounts/busy", json={"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}}
    ).raise_for_status()
    desired = write_desired(
        tmp_path,
        "version: 1\nplugins:\n  - {type: secret, name: demo-kv, version: v1.0.0, state: absent}\n",
    )
    result = run_cli(server, "apply", str(desired), "--yes")
    assert result.exit_code == 1
    assert "cannot deregister: still used by secrets/busy/" in result.stdout
    catalog = http.get("/v1/sys/plugins/catalog").json()["data"]["detailed"]
    assert [e["version"] for e in catalog if e["name"] == "demo-kv"] == ["v1.0.0"]


BROKEN_UPGRADE = """\
version: 1
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, sha256: {v1}}}
  - {{type: secret, name: demo-kv, version: v2.0.0, command: broken-kv-2.0.0, sha256: {v2}}}
secrets:
  - {{path: fragile/, plugin: demo-kv, version: {version}}}
"""


def _broken_upgrade(server: DevServer, plugins: Path, tmp_path: Path) -> Path:
    v1 = sha256_of(plugins / "demo-kv-1.0.0")
    v2 = sha256_of(plugins / "demo-kv-2.0.0")
    # The binary on the server's disk does not match the sha256 the file declares.
    tampered_copy(plugins, "broken-kv-2.0.0")
    assert run_cli(
        server,
        "apply",
        str(write_desired(tmp_path, BROKEN_UPGRADE.format(v1=v1, v2=v2, version="v1.0.0"))),
        "--yes",
    ).ok
    api(server).put("/v1/fragile/data/precious", json={"v": 1}).raise_for_status()
    return write_desired(tmp_path, BROKEN_UPGRADE.format(v1=v1, v2=v2, version="v2.0.0"))


def test_broken_binary_fails_naming_the_mount(server, plugins, tmp_path: Path) -> None:
    upgrade = _broken_upgrade(server, plugins, tmp_path)
    result = run_cli(server, "apply", str(upgrade), "--yes", "--no-rollback")
    assert result.exit_code == 1
    assert "fragile/" in result.stderr
    assert "did not converge" in result.stderr


def test_broken_binary_rolls_back_by_default(server, plugins, tmp_path: Path) -> None:
    upgrade = _broken_upgrade(server, plugins, tmp_path)
    result = run_cli(server, "apply", str(upgrade), "--yes")
    assert result.exit_code == 1
    assert "rolled back: secrets/fragile/" in result.stderr, result.output
    entry = mount_entry(server, "secret", "fragile/")
    assert entry["running_plugin_version"] == "v1.0.0"
    assert entry["running_sha256"] == sha256_of(plugins / "demo-kv-1.0.0")
    assert api(server).get("/v1/fragile/data/precious").json()["data"]["v"] == 1


def test_export_of_external_plugins_plans_empty(server, plugins, tmp_path: Path) -> None:
    desired = write_desired(tmp_path, V1_TWO_MOUNTS_AND_AUTH.format(plugins=plugins))
    assert run_cli(server, "apply", str(desired), "--yes").ok
    http = api(server)
    http.post(
        "/v1/sys/mounts/kv2",
        json={"type": "kv", "options": {"version": "2"}, "config": {"max_lease_ttl": "48h"}},
    ).raise_for_status()
    http.post("/v1/sys/auth/robots", json={"type": "approle", "description": "ci"})
    exported = tmp_path / "exported.yaml"
    assert run_cli(server, "export", "--out", str(exported)).ok
    text = exported.read_text()
    assert (
        "demo-kv" in text and "demo-auth" in text and sha256_of(plugins / "demo-kv-1.0.0") in text
    )
    plan = run_cli(server, "plan", str(exported), "--detailed-exitcode")
    assert plan.exit_code == 0, plan.output
