"""The live-state reader tells entries the server's configuration owns from the others."""

from __future__ import annotations

from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.model import CatalogEntry, LiveState
from reconciler.state import read_live_state
from tests.declarative_server import DeclarativeServer


def read(server: DeclarativeServer) -> LiveState:
    with Client(server.address, server.token) as client:
        return read_live_state(client)


def externals(live: LiveState) -> dict[tuple[str, str, str], CatalogEntry]:
    return {entry.key: entry for entry in live.catalog if not entry.builtin}


def test_stanza_entries_are_read_as_declarative(declarative_server: DeclarativeServer) -> None:
    server = declarative_server
    kv = server.stanza("secret", "demo-kv", "v1.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")

    catalog = externals(read(server))

    assert catalog == {
        kv.key: CatalogEntry(
            type="secret",
            name="demo-kv",
            version="v1.0.0",
            sha256=kv.sha256,
            command=kv.command,
            declarative=True,
        ),
        auth.key: CatalogEntry(
            type="auth",
            name="demo-auth",
            version="v1.0.0",
            sha256=auth.sha256,
            command=auth.command,
            declarative=True,
        ),
    }
    assert not any(
        entry.declarative or entry.oci for entry in read(server).catalog if entry.builtin
    )


def test_an_api_register_over_a_stanza_is_read_as_not_declarative(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    with server.http() as http:
        for stanza in (v1, v2):
            http.put(
                f"/v1/sys/plugins/catalog/secret/{stanza.name}",
                json={
                    "version": stanza.version,
                    "command": stanza.command,
                    "sha256": stanza.sha256,
                },
            ).raise_for_status()

    catalog = externals(read(server))

    assert (catalog[v1.key].declarative, catalog[v2.key].declarative) == (False, False)
    assert catalog["auth", "demo-auth", "v1.0.0"].declarative is True


def test_the_oci_flag_is_read(declarative_server: DeclarativeServer) -> None:
    # No registry is at hand to pull an image from; the API takes the flag as it is.
    server = declarative_server
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    with server.http() as http:
        http.put(
            "/v1/sys/plugins/catalog/secret/demo-kv",
            json={"version": v2.version, "command": v2.command, "sha256": v2.sha256, "oci": True},
        ).raise_for_status()

    catalog = externals(read(server))

    assert (catalog[v2.key].oci, catalog[v2.key].declarative) == (True, False)
    assert catalog["secret", "demo-kv", "v1.0.0"].oci is False


def test_a_mount_pinned_to_a_removed_stanza_reads_as_pinned_to_a_missing_entry(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")
    with server.http() as http:
        http.post(
            "/v1/sys/mounts/apps", json={"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}}
        ).raise_for_status()

    server.reconfigure_and_wait([auth])
    live = read(server)

    assert v1.key not in externals(live)
    apps = next(mount for mount in live.mounts if mount.path == "apps/")
    # The mount table does not show that the pin is gone: only the catalog does.
    assert (apps.plugin, apps.plugin_version, apps.running_plugin_version) == (
        "demo-kv",
        "v1.0.0",
        "v1.0.0",
    )


def test_api_entries_on_a_plain_server_are_not_declarative(
    server: DevServer, client: Client
) -> None:
    plugin = next(p for p in build_plugins(server.plugin_directory) if p.name == "demo-kv")
    client.register_plugin(
        "secret", plugin.name, plugin.version, plugin.command, plugin.sha256, [], {}
    )

    (entry,) = externals(read_live_state(client)).values()

    assert (entry.declarative, entry.oci) == (False, False)


def test_a_database_stanza_is_read_as_declarative(declarative_server: DeclarativeServer) -> None:
    server = declarative_server
    kv = server.stanza("secret", "demo-kv", "v1.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")
    database = server.stanza("database", "demo-db", "v1.0.0")

    server.reconfigure_and_wait([kv, auth, database])

    entry = externals(read(server))[database.key]
    assert (entry.declarative, entry.oci, entry.sha256) == (True, False, database.sha256)
