"""What OpenBao does with declarative plugins (SPEC §13), checked on a real server.

These tests pin the server behaviour the product relies on: if a server
version changes it, they fail before the product misreads the catalog.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.declarative_server import DeclarativeServer

CONFLICT = "conflicts with existing non-declarative plugin"


def enable(server: DeclarativeServer, path: str, plugin: str, version: str) -> None:
    with server.http() as http:
        http.post(
            f"/v1/sys/mounts/{path.rstrip('/')}",
            json={"type": plugin, "config": {"plugin_version": version}},
        ).raise_for_status()


def mount_entry(server: DeclarativeServer, path: str) -> dict[str, Any]:
    with server.http() as http:
        answer = http.get("/v1/sys/mounts")
    answer.raise_for_status()
    return dict(answer.json()["data"][path])


def info(server: DeclarativeServer, path: str) -> httpx.Response:
    with server.http() as http:
        return http.get(f"/v1/{path}info")


def reload_mount(server: DeclarativeServer, path: str) -> httpx.Response:
    with server.http() as http:
        return http.post("/v1/sys/plugins/reload/backend", json={"mounts": [path]})


def register_through_api(server: DeclarativeServer, type_: str, name: str, version: str) -> None:
    stanza = server.stanza(type_, name, version)
    with server.http() as http:
        http.put(
            f"/v1/sys/plugins/catalog/{type_}/{name}",
            json={"version": version, "command": stanza.command, "sha256": stanza.sha256},
        ).raise_for_status()


def test_a_stanza_reads_back_as_a_declarative_entry(declarative_server: DeclarativeServer) -> None:
    server = declarative_server
    stanza = server.stanza("secret", "demo-kv", "v1.0.0")

    entry = server.catalog_entry("secret", "demo-kv", "v1.0.0")
    assert entry == {  # a read names no type: the path gave it
        "name": "demo-kv",
        "version": "v1.0.0",
        "builtin": False,
        "command": stanza.command,
        "sha256": stanza.sha256,
        "args": None,  # an API registration reads back []
        "declarative": True,
        "oci": False,
    }
    auth = server.catalog_entry("auth", "demo-auth", "v1.0.0")
    assert auth is not None
    assert (auth["declarative"], auth["oci"]) == (True, False)

    # The list carries neither flag: only a read per entry tells who owns it.
    listed = {(e["type"], e["name"], e["version"]): e for e in server.listed_external()}
    assert set(listed) == {("secret", "demo-kv", "v1.0.0"), ("auth", "demo-auth", "v1.0.0")}
    assert set(listed["secret", "demo-kv", "v1.0.0"]) == {
        "type",
        "name",
        "version",
        "builtin",
        "sha256",
    }


def test_a_new_stanza_and_sighup_register_it(declarative_server: DeclarativeServer) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")

    since = server.reconfigure_and_wait([v1, auth, v2])

    entry = server.catalog_entry(*v2.key)
    assert entry is not None
    assert (entry["declarative"], entry["sha256"], entry["command"]) == (
        True,
        v2.sha256,
        v2.command,
    )
    assert "registering new declarative plugin: name=demo-kv type=secret version=v2.0.0" in (
        server.log_since(since)
    )
    # The server's flow stops at the catalog: a mount pinned to v2 is the operator's business.
    enable(server, "apps/", "demo-kv", "v2.0.0")
    assert info(server, "apps/").json()["data"]["version"] == "v2.0.0"


def test_removing_a_stanza_deletes_the_version_under_a_pinned_mount(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")
    server.reconfigure_and_wait([v1, auth, v2])
    enable(server, "apps/", "demo-kv", "v1.0.0")
    with server.http() as http:
        http.post("/v1/apps/data/kept", json={"answer": 42}).raise_for_status()
    before = info(server, "apps/").json()["data"]

    since = server.reconfigure_and_wait([auth, v2])

    assert server.catalog_entry(*v1.key) is None
    assert (
        "removing plugin present in storage but no longer present in configuration: "
        "name=demo-kv type=secret version=v1.0.0"
    ) in server.log_since(since)
    # Nothing refuses the removal and nothing tells the mount: it keeps running v1.
    assert info(server, "apps/").json()["data"] == before
    mount = mount_entry(server, "apps/")
    assert (mount["plugin_version"], mount["running_plugin_version"]) == ("v1.0.0", "v1.0.0")

    # Its next reload fails, after stopping the running process: the mount is dead.
    reloaded = reload_mount(server, "apps/")
    assert reloaded.status_code == 400
    assert "plugin not found in the catalog: demo-kv, version=v1.0.0" in reloaded.text
    dead = info(server, "apps/")
    assert dead.status_code == 404
    assert "backend is nil" in dead.text
    # ...while the mount table still reports it running v1.
    mount = mount_entry(server, "apps/")
    assert (mount["running_plugin_version"], mount["running_sha256"]) == ("v1.0.0", v1.sha256)

    # A tune to a version still in the catalog and a reload bring it back, data kept.
    with server.http() as http:
        http.post("/v1/sys/mounts/apps/tune", json={"plugin_version": "v2.0.0"}).raise_for_status()
    assert reload_mount(server, "apps/").status_code == 200
    with server.http() as http:
        kept = http.get("/v1/apps/data/kept").json()["data"]
    assert kept == {"answer": 42, "engine": "demo-kv v2"}


def test_an_api_register_takes_the_entry_from_the_configuration(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")

    register_through_api(server, *v1.key)

    entry = server.catalog_entry(*v1.key)
    assert entry is not None
    assert (entry["declarative"], entry["sha256"]) == (False, v1.sha256)

    since = server.reconfigure([v1, auth])
    logged = server.wait_for_log("failed to set up plugins on reload", since)
    assert (
        "failed to set up declarative plugins: [plugin 0 (name: demo-kv / type: secret)]: "
        + CONFLICT
    ) in logged
    entry = server.catalog_entry(*v1.key)
    assert entry is not None
    assert entry["declarative"] is False

    # Every later SIGHUP logs it again, until the API entry is gone.
    since = server.sighup()
    assert CONFLICT in server.wait_for_log("failed to set up plugins on reload", since)


def test_a_conflict_stops_every_later_stanza_and_every_removal(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")
    register_through_api(server, *v1.key)

    # v2 is new and demo-auth's stanza is gone; the conflict on v1 comes first.
    since = server.reconfigure([v1, v2])
    server.wait_for_log("failed to set up plugins on reload", since)

    assert server.catalog_entry(*v2.key) is None
    removed = server.catalog_entry(*auth.key)
    assert removed is not None
    assert removed["declarative"] is True

    # Once the API entry is gone, the next SIGHUP does all of it.
    with server.http() as http:
        http.delete(
            "/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v1.0.0"}
        ).raise_for_status()
    since = server.reconfigure_and_wait([v1, v2])
    assert CONFLICT not in server.log_since(since)


def test_an_api_deregister_lasts_until_the_next_sighup(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")

    with server.http() as http:
        http.delete(
            "/v1/sys/plugins/catalog/secret/demo-kv", params={"version": "v1.0.0"}
        ).raise_for_status()
    assert server.catalog_entry(*v1.key) is None

    since = server.reconfigure_and_wait([v1, auth])
    entry = server.catalog_entry(*v1.key)
    assert entry is not None
    assert entry["declarative"] is True
    assert "registering new declarative plugin: name=demo-kv type=secret version=v1.0.0" in (
        server.log_since(since)
    )


def test_an_api_entry_of_another_version_lives_beside_the_stanzas(
    declarative_server: DeclarativeServer,
) -> None:
    server = declarative_server
    v1 = server.stanza("secret", "demo-kv", "v1.0.0")
    v2 = server.stanza("secret", "demo-kv", "v2.0.0")
    auth = server.stanza("auth", "demo-auth", "v1.0.0")
    transit = server.stanza("secret", "transit", "v1.0.0")
    register_through_api(server, *v2.key)

    # A new stanza after the others proves the whole pass ran without a conflict.
    since = server.reconfigure_and_wait([v1, auth, transit])

    assert CONFLICT not in server.log_since(since)
    api_entry = server.catalog_entry(*v2.key)
    assert api_entry is not None
    assert api_entry["declarative"] is False
    # The server leaves non-declarative entries alone when it removes what no stanza names.
    assert server.external_keys() == {v1.key, v2.key, auth.key, transit.key}
