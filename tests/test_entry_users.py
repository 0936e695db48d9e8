"""Every user of an entry (SPEC §12): an entry updated in place (same version, new
binary) reloads every managed mount on it and names, or with `reload_unmanaged`
reloads, the undeclared ones."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from tests.helpers import mount_entry, run_cli, write_desired
from tests.test_apply_plugins import sha256_of

ON_ENTRY = """\
version: 1
settings: {{reload_unmanaged: {reload_unmanaged}}}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: {command}, sha256: {sha256}}}
secrets:
  - {{path: managed/, plugin: demo-kv, version: v1.0.0}}
"""


def _reregistered(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path, reload_unmanaged: bool
) -> Path:
    """managed/ (declared) and loose/ (not) on v1.0.0, then v1.0.0 re-registered out of band."""
    old = ON_ENTRY.format(
        reload_unmanaged="false",
        command="demo-kv-1.0.0",
        sha256=sha256_of(plugins / "demo-kv-1.0.0"),
    )
    client.register_plugin(
        "secret", "demo-kv", "v1.0.0", "demo-kv-1.0.0", sha256_of(plugins / "demo-kv-1.0.0"), [], {}
    )
    client.enable_mount(
        "secret", "loose/", {"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}}
    )
    assert run_cli(server, "apply", str(write_desired(tmp_path, old, name="old.yaml")), "--yes").ok
    # The same version rebuilt: another binary, another sha256.
    rebuilt = plugins / "demo-kv-1.0.0-rebuilt"
    rebuilt.write_text((plugins / "demo-kv-1.0.0").read_text() + "\n# rebuilt\n")
    rebuilt.chmod(0o755)
    new_sha = sha256_of(rebuilt)
    client.register_plugin("secret", "demo-kv", "v1.0.0", rebuilt.name, new_sha, [], {})
    return write_desired(
        tmp_path,
        ON_ENTRY.format(
            reload_unmanaged=str(reload_unmanaged).lower(), command=rebuilt.name, sha256=new_sha
        ),
        name="new.yaml",
    )


def _reloaded(server: DevServer, desired: Path, *flags: str) -> tuple[list[str], str]:
    planned = run_cli(server, "plan", str(desired), "--json", *flags)
    document = json.loads(planned.stdout)
    mounts = sorted(
        path
        for action in document["actions"]
        if action["kind"] == "reload"
        for path in action["params"]["mounts"]
    )
    return mounts, " ".join(w["target"] + " " + w["message"] for w in document["warnings"])


def test_reregister_reloads_the_managed_mount_and_names_the_unmanaged_one(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    desired = _reregistered(server, client, plugins, tmp_path, reload_unmanaged=False)
    mounts, warnings = _reloaded(server, desired)
    assert mounts == ["managed/"]
    assert "secrets/loose/" in warnings and "old binary" in warnings, warnings
    assert "reload_unmanaged" in warnings


def test_reload_unmanaged_reloads_both_and_export_then_plans_empty(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    desired = _reregistered(server, client, plugins, tmp_path, reload_unmanaged=True)
    mounts, _ = _reloaded(server, desired)
    assert mounts == ["loose/", "managed/"]
    applied = run_cli(server, "apply", str(desired), "--yes")
    assert applied.exit_code == 0, applied.output
    new_sha = sha256_of(plugins / "demo-kv-1.0.0-rebuilt")
    for path in ("managed/", "loose/"):
        assert mount_entry(server, "secret", path)["running_sha256"] == new_sha

    exported = tmp_path / "exported.yaml"
    assert run_cli(server, "export", "--out", str(exported)).ok
    again = run_cli(server, "plan", str(exported), "--detailed-exitcode")
    assert again.exit_code == 0, again.output


def test_the_reload_unmanaged_flag_does_what_the_setting_does(
    server: DevServer, client: Client, plugins: Path, tmp_path: Path
) -> None:
    desired = _reregistered(server, client, plugins, tmp_path, reload_unmanaged=False)
    mounts, warnings = _reloaded(server, desired, "--reload-unmanaged")
    assert mounts == ["loose/", "managed/"]
    assert "old binary" not in warnings
    applied = run_cli(server, "apply", str(desired), "--yes", "--reload-unmanaged")
    assert applied.exit_code == 0, applied.output
    assert _reloaded(server, desired)[0] == []
