"""`export`: the live state as a desired-state file that validates, round-trips and plans empty."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.export import export_desired
from reconciler.loader import load_desired_text
from reconciler.model import (
    AUTH_ONLY_CONFIG_KEYS,
    CONFIG_DEFAULTS,
    DURATION_CONFIG_KEYS,
    CatalogEntry,
    DesiredState,
    LiveMount,
    LiveState,
    Mount,
    MountConfig,
    ServerIdentity,
)
from reconciler.planner import plan
from reconciler.state import read_live_state
from tests.helpers import CliRun, api, run_cli
from tests.test_state import enable_examples

BUILTIN = "v2.7.2+builtin.bao"
SHA = "ab" * 32


def parse(text: str) -> DesiredState:
    return DesiredState.model_validate(YAML(typ="safe").load(text))


def desired_mounts(desired: DesiredState) -> dict[tuple[str, str], Mount]:
    return {(kind, mount.path): mount for kind, mount in desired.mounts()}


def assert_equal_to_live(desired: DesiredState, live: LiveState) -> None:
    """Every external entry and unreserved mount, value by value; nothing else."""
    assert [
        (e.type, e.name, e.version, e.command, e.sha256, e.args or []) for e in desired.plugins
    ] == [
        (e.type, e.name, e.version, e.command, e.sha256, e.args)
        for e in live.catalog
        if not e.builtin
    ]
    assert all(e.env is None for e in desired.plugins)
    declared = desired_mounts(desired)
    unreserved = {(m.kind, m.path): m for m in live.mounts if not m.reserved}
    assert set(declared) == set(unreserved)
    for key, mount in unreserved.items():
        written = declared[key]
        assert written.plugin == mount.plugin
        assert (written.description or "") == mount.description
        assert (written.options or {}) == mount.options
        assert bool(written.local) == mount.local
        assert bool(written.seal_wrap) == mount.seal_wrap
        config = written.config.model_dump(exclude_none=True) if written.config else {}
        for name, value in config.items():
            assert mount.config[name] == value, (key, name)
        for name, value in mount.config.items():
            if name not in config:
                assert value in (0, False, "", [], "default-service"), (key, name, value)


def assert_plans_empty(text: str, live: LiveState) -> None:
    loaded = load_desired_text(text, "exported.yaml")
    result = plan(loaded.state, live)
    assert result.errors == []
    assert result.actions == []


# --- against the server -----------------------------------------------------------------


def test_export_validates_round_trips_and_plans_empty(server: DevServer, client: Client) -> None:
    enable_examples(server)
    plugin = next(p for p in build_plugins(server.plugin_directory) if p.name == "demo-kv")
    client.register_plugin(
        "secret", plugin.name, plugin.version, plugin.command, plugin.sha256, ["-x=1"], {}
    )
    live = read_live_state(client)
    text = export_desired(live)
    desired = parse(text)
    assert_equal_to_live(desired, live)
    assert_plans_empty(text, live)
    assert "`env`" in text.splitlines()[1]
    written = desired_mounts(desired)
    assert written["secret", "crypto/"].config is not None
    assert "default_lease_ttl: 1h" in text and "max_lease_ttl: 24h" in text
    assert written["auth", "robots/"].local is True
    assert "seal_wrap" not in text
    assert "sys/" not in {m.path for m in desired.secrets}


def test_a_builtin_mount_next_to_an_override_is_pinned_to_the_builtin(
    server: DevServer, client: Client
) -> None:
    api(server).post("/v1/sys/mounts/crypto", json={"type": "transit"}).raise_for_status()
    override = next(p for p in build_plugins(server.plugin_directory) if p.name == "transit")
    client.register_plugin(
        "secret", "transit", override.version, override.command, override.sha256, [], {}
    )
    live = read_live_state(client)
    text = export_desired(live)
    crypto = desired_mounts(parse(text))["secret", "crypto/"]
    assert crypto.version == live.builtin_version("secret", "transit")
    assert_plans_empty(text, live)


def test_cli_export_to_stdout_and_to_a_file(server: DevServer, tmp_path: Path) -> None:
    enable_examples(server)
    to_stdout = run_cli(server, "export")
    assert to_stdout.exit_code == 0, to_stdout.output
    assert parse(to_stdout.stdout).secrets
    out = tmp_path / "desired.yaml"
    to_file = run_cli(server, "export", "--out", str(out))
    assert to_file.exit_code == 0, to_file.output
    assert to_file.stdout == ""
    assert out.read_text() == to_stdout.stdout
    assert run_cli(server, "validate", str(out)).exit_code == 0


def test_cli_export_failure_is_one_line_with_the_fix(server: DevServer, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = CliRun.invoke(
        ["export"], env={"BAO_ADDR": f"http://127.0.0.1:{port}", "BAO_TOKEN": "t0ken-value"}
    )
    assert unreachable.exit_code == 1
    assert unreachable.stdout == ""
    assert len(unreachable.stderr.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in unreachable.stderr and "BAO_ADDR" in unreachable.stderr
    denied = CliRun.invoke(
        ["export"], env={"BAO_ADDR": server.address, "BAO_TOKEN": "not-a-real-token"}
    )
    assert denied.exit_code == 1
    assert "403" in denied.stderr and "not-a-real-token" not in denied.output
    assert "Traceback" not in unreachable.output + denied.output
    unwritable = run_cli(server, "export", "--out", str(tmp_path / "missing" / "x.yaml"))
    assert unwritable.exit_code == 1
    assert "cannot write" in unwritable.stderr


# --- without a server: the rules -------------------------------------------------------


def entry(name: str, version: str, **fields: Any) -> CatalogEntry:
    defaults: dict[str, Any] = {"command": f"{name}-bin", "sha256": SHA}
    return CatalogEntry(type="secret", name=name, version=version, **{**defaults, **fields})


def builtin(name: str) -> CatalogEntry:
    return CatalogEntry(type="secret", name=name, version=BUILTIN, builtin=True)


def mount(path: str, plugin: str, plugin_version: str = "", **fields: Any) -> LiveMount:
    """A live mount that runs what its pin says: the external entry or the built-in."""
    external = bool(plugin_version) and "+builtin" not in plugin_version
    running: dict[str, Any] = {
        "running_plugin_version": plugin_version if external else BUILTIN,
        "running_sha256": SHA if external else "",
    }
    return LiveMount(
        kind="secret",
        path=path,
        plugin=plugin,
        plugin_version=plugin_version,
        **{**running, **fields},
    )


def exported_versions(live: LiveState) -> dict[str, str | None]:
    return {m.path: m.version for m in parse(export_desired(live)).secrets}


def test_versions_are_written_only_where_resolution_needs_them() -> None:
    live = LiveState(
        server=ServerIdentity(address="https://bao.example:8200"),
        catalog=[
            builtin("transit"),
            builtin("pki"),
            builtin("kv"),
            entry("transit", "v1.0.0"),
            entry("solo", "v1.0.0"),
            entry("multi", "v1.0.0"),
            entry("multi", "v2.0.0"),
            entry("pki", ""),
            entry("pki", "v9.0.0"),
            entry("kv", "v9.0.0"),
        ],
        mounts=[
            mount("plain-transit/", "transit"),
            mount("pinned-transit/", "transit", "v1.0.0"),
            mount("builtin-pin/", "transit", BUILTIN),
            mount("solo/", "solo", "v1.0.0"),
            mount("multi/", "multi", "v2.0.0"),
            mount("shadowed/", "pki", running_plugin_version="", running_sha256=SHA),
            mount("kv/", "kv"),
            mount("cubbyhole/", "cubbyhole"),
        ],
    )
    assert exported_versions(live) == {
        "plain-transit/": BUILTIN,  # the file declares transit v1.0.0: say "the built-in"
        "pinned-transit/": "v1.0.0",  # pinned mounts stay pinned
        "builtin-pin/": BUILTIN,
        "solo/": "v1.0.0",
        "multi/": "v2.0.0",
        "shadowed/": "",  # unpinned next to an unversioned entry: it runs that entry
        "kv/": None,  # kv is hard-wired: its external entry is not declared
    }
    assert "secret/kv/v9.0.0: the built-in 'kv' is hard-wired" in export_desired(live)
    assert exported_versions(
        LiveState(catalog=[entry("solo", "v1.0.0")], mounts=[mount("solo/", "solo")])
    ) == {"solo/": None}  # unpinned next to the only versioned entry: impossible to mount
    assert_plans_empty(export_desired(live), live)


def test_values_at_their_defaults_are_left_out() -> None:
    live = LiveState(
        catalog=[builtin("kv"), builtin("transit")],
        mounts=[
            mount(
                "quiet/",
                "transit",
                config={"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
            ),
            mount(
                "loud/",
                "kv",
                description="tuned",
                config={
                    "default_lease_ttl": 5400,
                    "max_lease_ttl": 7200,
                    "force_no_cache": True,
                    "audit_non_hmac_request_keys": ["a"],
                },
                options={"version": "2"},
                local=True,
                seal_wrap=True,
            ),
        ],
    )
    text = export_desired(live)
    assert "- path: quiet/\n    plugin: transit\n" in text
    loud = desired_mounts(parse(text))["secret", "loud/"]
    assert loud.config is not None
    assert loud.config.model_dump(exclude_none=True) == {
        "default_lease_ttl": 5400,
        "max_lease_ttl": 7200,
        "force_no_cache": True,
        "audit_non_hmac_request_keys": ["a"],
    }
    assert "default_lease_ttl: 90m" in text and "max_lease_ttl: 2h" in text
    assert (loud.local, loud.seal_wrap, loud.options) == (True, True, {"version": "2"})
    assert_equal_to_live(parse(text), live)


def test_what_a_file_cannot_express_is_listed_in_the_header() -> None:
    live = LiveState(
        catalog=[entry("nested", "v1.0.0", command="sub/dir/nested"), entry("fine", "v1.0.0")],
        mounts=[mount("orphan/", "gone", "v3.0.0")],
    )
    text = export_desired(live)
    desired = parse(text)
    assert [p.name for p in desired.plugins] == ["fine"]
    assert desired.secrets == []
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("secret/nested/v1.0.0" in line and "command" in line for line in header)
    assert any("secrets/orphan/" in line and "not in the catalog" in line for line in header)


def test_an_empty_server_exports_a_minimal_valid_file() -> None:
    text = export_desired(LiveState(catalog=[builtin("kv")], mounts=[]))
    assert parse(text) == DesiredState(version=1)
    assert text.rstrip().endswith("version: 1")


# --- every config key the schema knows round-trips ---------------------------------------


def _live_values(key: str) -> st.SearchStrategy[Any]:
    """Values the server may report for config `key`, derived from the file's schema: a
    key of a shape this does not know fails the test rather than going unchecked."""
    schema = MountConfig.model_json_schema()["properties"][key]
    (shape,) = [branch for branch in schema["anyOf"] if branch.get("type") != "null"]
    if "enum" in shape:
        values: st.SearchStrategy[Any] = st.sampled_from(shape["enum"])
    elif key in DURATION_CONFIG_KEYS:
        values = st.integers(min_value=1, max_value=10 * 365 * 86400)  # seconds, as read
    elif shape.get("type") == "boolean":
        values = st.booleans()
    elif shape.get("type") == "array" and shape["items"] == {"type": "string"}:
        word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12)
        values = st.lists(word, min_size=1, max_size=3, unique=True)
    else:
        raise AssertionError(f"config key {key}: no strategy for its schema {shape}")
    return values.filter(lambda value: value != CONFIG_DEFAULTS[key])


def _mount_with(key: str, value: Any) -> LiveMount:
    if key in AUTH_ONLY_CONFIG_KEYS:
        return LiveMount(
            kind="auth",
            path="robots/",
            plugin="approle",
            running_plugin_version=BUILTIN,
            config={key: value},
        )
    return mount("app/", "kv", config={key: value})


@pytest.mark.parametrize("key", sorted(MountConfig.model_fields))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_config_key_round_trips_through_export(key: str, data: st.DataObject) -> None:
    value = data.draw(_live_values(key), label=key)
    live = LiveState(
        server=ServerIdentity(address="https://bao.example:8200"),
        catalog=[
            builtin("kv"),
            CatalogEntry(type="auth", name="approle", version=BUILTIN, builtin=True),
        ],
        mounts=[_mount_with(key, value)],
    )
    text = export_desired(live)
    (written,) = desired_mounts(parse(text)).values()
    assert written.config is not None, text
    assert written.config.model_dump(exclude_none=True) == {key: value}, text
    assert_plans_empty(text, live)
